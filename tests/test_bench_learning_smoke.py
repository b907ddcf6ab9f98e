"""The learning benchmark's own logic (bench/learning_run.py), without models: config split, data filtering, the
answer-prior reference, the before/after table and the matplotlib charts. The full run (SFT + GRPO + two evaluations) takes
minutes and is the benchmark itself, not a unit test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image


from bench import learning_run as bench
from embodied_data.records import Record


def _record(rid: str, split: str, question: str, choices: tuple[str, ...], answer: str | float, category: str = "Action Generation") -> Record:
    return Record(id=rid, video=f"{rid}.mp4", question=question, choices=choices, answer=answer, category=category,
                  scene=rid, split=split, source="synthetic")


def test_option_pattern_drops_the_words_of_the_question():
    question = "At the initial position, you are asked to navigate to the black tv. What is the direction to the black tv?"
    assert bench.option_pattern("The black tv is on my left.", question) == "on my left"
    other = "At the initial position, you are asked to navigate to the red chair. What is the direction to the red chair?"
    assert bench.option_pattern("The red chair is on my left.", other) == bench.option_pattern("The black tv is on my left.", question)


def test_answer_prior_baseline_counts_training_answers_and_splits_ties():
    q = "Where to go next?"
    options = ("I turn left.", "I turn right.", "I rise.")
    records = [
        _record("t1", "train", q, options, "A"),
        _record("t2", "train", q, ("I rise.", "I turn left.", "I turn right."), "B"),  # 'I turn left.' again, other letter
        _record("t3", "train", q, options, "B"),
        _record("x1", "test", q, ("I rise.", "I turn right.", "I turn left."), "C"),  # the prior's pick: right
        _record("x2", "test", q, options, "B"),  # the prior picks 'I turn left.' (A): wrong
        _record("d1", "test", "Which?", ("left", "right"), "A", category="object_rel_direction_easy"),  # no training data
    ]
    prior = bench.answer_prior_baseline(records, "test")
    assert prior["Action Generation"] == pytest.approx(0.5)
    assert prior["object_rel_direction_easy"] == pytest.approx(0.5)  # a two-way tie: the expected score of a guess


def test_moving_average_skips_missing_values():
    assert bench.moving_average([1.0, None, 3.0, 5.0], 2) == [1.0, 1.0, 2.0, 4.0]
    assert bench.moving_average([None, float("nan")], 3) == [None, None]


def _eval_report(accuracies: dict[str, float], overall: float, fmt: float) -> dict:
    return {
        "categories": [{"category": c, "kind": "multiple_choice", "questions": 10, "accuracy": a, "format_rate": fmt}
                       for c, a in accuracies.items()],
        "overall": {"questions": 10 * len(accuracies), "accuracy": overall, "format_rate": fmt},
        "macro_accuracy": sum(accuracies.values()) / len(accuracies),
    }


def test_compare_gives_deltas_in_points_and_the_table_lists_every_category():
    before = _eval_report({"Counterfactual": 0.2, "route_planning": 0.5}, 0.35, 0.5)
    after = _eval_report({"Counterfactual": 0.45, "route_planning": 0.4}, 0.425, 1.0)
    rows = bench.compare(before, after, {"Counterfactual": 0.47})
    by_name = {r["category"]: r for r in rows}
    assert by_name["Counterfactual"]["delta_points"] == pytest.approx(25.0)
    assert by_name["route_planning"]["delta_points"] == pytest.approx(-10.0)
    assert by_name["overall"]["delta_points"] == pytest.approx(7.5)
    assert by_name["macro (mean of categories)"]["before"] == pytest.approx(0.35)
    assert by_name["Counterfactual"]["answer_prior"] == 0.47 and by_name["route_planning"]["answer_prior"] is None
    text = bench.format_comparison(rows)
    assert "+25.0" in text and "-10.0" in text and "+7.5" in text
    assert [line.split()[0] for line in text.splitlines()[2:4]] == ["Counterfactual", "route_planning"]


def test_reward_curves_and_bars_are_drawn(tmp_path):
    rows = [{"step": s, "reward/total": s / 40, "reward/accuracy": s / 50, "reward/format": min(1.0, s / 20)} for s in range(1, 31)]
    rows[5]["reward/accuracy"] = None  # a step whose metric is missing must not break the curve
    curves = bench.draw_reward_curves(rows, tmp_path / "curves.png", "test curves", window=5)
    with Image.open(curves) as image:
        assert image.size == (900, 480)
        colours = {colour for _, colour in image.convert("RGB").getcolors(maxcolors=1 << 16)}
    assert (66, 118, 180) in colours and (230, 140, 50) in colours  # the accuracy and format curves are drawn

    table = bench.compare(_eval_report({"A": 0.1, "B": 0.6}, 0.35, 1.0), _eval_report({"A": 0.3, "B": 0.6}, 0.45, 1.0), {"A": 0.5})
    bars = bench.draw_before_after(table, tmp_path / "bars.png", "test bars")
    with Image.open(bars) as image:
        assert image.size[1] > 44 * len(table)
    assert not list(tmp_path.glob(".*"))  # written atomically: no temp files left


def test_bench_section_is_split_from_the_train_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("trainer:\n  steps: 3\nbench:\n  categories: [Counterfactual]\n  eval_workers: 1\n")
    base, settings, overrides = bench.load_bench_config(config, ["bench.eval_workers=2", "trainer.steps=5"], tmp_path / "run")
    assert settings.categories == ["Counterfactual"] and settings.eval_workers == 2
    assert overrides == [f"run_dir={tmp_path / 'run'}", "trainer.steps=5"]
    assert "bench" not in Path(base).read_text()

    from cluster.config import load_config

    cfg = load_config(base, overrides)  # what remains is a valid TrainConfig
    assert cfg.trainer.steps == 5 and cfg.run_dir == str(tmp_path / "run")
    with pytest.raises(Exception, match="nonsense"):
        bench.load_bench_config(config, ["bench.nonsense=1"], tmp_path / "run")


def test_shipped_config_loads(tmp_path):
    base, settings, overrides = bench.load_bench_config(bench.DEFAULT_CONFIG, [], tmp_path / "run")
    from cluster.config import load_config

    cfg = load_config(base, overrides)
    assert cfg.perception.source == "ground_truth" and settings.categories
    assert cfg.sampling.num_samples >= 2


def test_prepare_manifest_keeps_only_the_chosen_categories(tmp_path):
    from cluster.config import load_config
    from embodied_data.manifest import read_gt_captions, read_manifest

    cfg = load_config(None, [f"run_dir={tmp_path}", "data.synthetic.scenes=3", "data.synthetic.frames=8",
                             "data.synthetic.size=48", "data.synthetic.questions_per_scene=14"])
    manifest, counts = bench.prepare_manifest(cfg, ["Counterfactual", "Action Generation"], tmp_path)
    records, skipped = read_manifest(manifest)
    assert not len(skipped) and records
    assert {r.category for r in records} <= {"Counterfactual", "Action Generation"}
    assert set(counts) == {r.category for r in records}
    assert sum(sum(v.values()) for v in counts.values()) == len(records)
    captions = read_gt_captions(manifest)
    assert all(captions[r.video].startswith("Frame 0:") for r in records)
    with pytest.raises(ValueError, match="not a category"):
        bench.prepare_manifest(cfg, ["not a category"], tmp_path)
    json.dumps(counts)  # the counts go into learning.json


def test_answer_prior_baseline_for_numeric_questions_uses_the_median_of_the_same_question():
    size_q = "What is the length of the longest dimension (length, width, or height) of the {}, measured in centimeters?"
    records = [
        _record("s1", "train", size_q.format("sofa"), (), 200.0, category="object_size_estimation"),
        _record("s2", "train", size_q.format("sofa"), (), 190.0, category="object_size_estimation"),
        _record("s3", "train", size_q.format("stool"), (), 50.0, category="object_size_estimation"),
        _record("x1", "test", size_q.format("sofa"), (), 195.0, category="object_size_estimation"),  # median 195: exact
        _record("x2", "test", size_q.format("lamp"), (), 190.0, category="object_size_estimation"),  # unseen: category median 190
    ]
    prior = bench.answer_prior_baseline(records, "test")
    assert prior["object_size_estimation"] == pytest.approx(1.0)


def test_distinct_answers_counts_what_the_policy_answered_per_category(tmp_path):
    samples = [
        {"category": "object_size_estimation", "text": "<think> a </think>\n<answer> 111 </answer>"},
        {"category": "object_size_estimation", "text": "<think> b </think>\n<answer>111</answer>"},
        {"category": "object_size_estimation", "text": "<think> c </think>\n<answer> 56 </answer>"},
        {"category": "Action Generation", "text": "<think> d </think>\n<answer> A </answer>"},
    ]
    (tmp_path / "eval_samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    assert bench.distinct_answers(tmp_path) == {"Action Generation": 1, "object_size_estimation": 2}


def test_curve_summary_covers_each_categorys_training_accuracy():
    rows = [
        {"reward/total": 0.1 * step, "reward/accuracy": 0.5, "reward/format": 1.0, f"reward/accuracy/{name}": value}
        for step, (name, value) in enumerate([("size", 0.2), ("count", 0.9), ("size", 0.4), ("size", 0.6)])
    ]
    summary = bench.curve_summary(rows, window=2)
    assert summary["reward/accuracy/size"] == {"first_2_mean": pytest.approx(0.3), "last_2_mean": pytest.approx(0.5)}
    assert summary["reward/accuracy/count"] == {"first_1_mean": 0.9, "last_1_mean": 0.9}
    assert summary["reward/total"]["last_2_mean"] == pytest.approx(0.25)


def test_best_constant_answer_is_the_best_single_answer_for_every_question():
    q = "Where to go next?"
    options = ("I turn left.", "I turn right.", "I rise.")
    size_q = "How long is the {}, in centimeters?"
    records = [
        _record("t1", "train", q, options, "C"),  # training answers do not count: the split's own questions do
        _record("x1", "test", q, options, "B"),
        _record("x2", "test", q, options, "B"),
        _record("x3", "test", q, options, "A"),
        _record("y1", "test", "Which?", ("left", "right"), "A", category="tie"),
        _record("y2", "test", "Which?", ("left", "right"), "B", category="tie"),
        _record("n1", "test", size_q.format("sofa"), (), 200.0, category="size"),
        _record("n2", "test", size_q.format("bed"), (), 190.0, category="size"),
        _record("n3", "test", size_q.format("cup"), (), 10.0, category="size"),
    ]
    best = bench.best_constant_answer(records, "test")
    assert best["Action Generation"] == {"answer": "B", "accuracy": pytest.approx(2 / 3), "n": 3}
    assert best["tie"]["answer"] == "A" and best["tie"]["accuracy"] == pytest.approx(0.5)  # ties: the first letter
    # MRA: 190 scores 1.0 against 200 (5% off) and 190, 0 against the cup; 200 scores 0.9 against 190 (5.3% off).
    assert best["size"] == {"answer": "190", "accuracy": pytest.approx(2 / 3), "n": 3}
    # Only the questions evaluated count (bench.eval_max_records may take a subset).
    assert bench.best_constant_answer(records, "test", {"x3"})["Action Generation"] == {"answer": "A", "accuracy": 1.0, "n": 1}


def test_summary_names_the_fields_outside_checks_read_and_the_target():
    table = [
        {"category": c, "questions": 10, "before": 0.3, "after": rl, "distinct_answers_after": d}
        for c, rl, d in (("a", 0.6, 3), ("b", 0.5, 2), ("c", 0.7, 4), ("d", 0.4, 2))
    ] + [{"category": "overall"}, {"category": "macro (mean of categories)"}]
    constant = {c: {"answer": "A", "accuracy": 0.35} for c in "abcd"}
    summary = bench.summary_by_category(table, constant)
    assert set(summary["categories"]["a"]) >= {"n", "sft_accuracy", "rl_accuracy", "constant_accuracy", "distinct_answers"}
    assert summary["macro"]["rl_over_constant_points"] == pytest.approx(100 * (0.55 - 0.35))
    assert summary["target"]["met"] and summary["target"]["categories"] == 4
    table[0]["distinct_answers_after"] = 1  # one category answered the same whatever the question: not reasoning
    assert not bench.summary_by_category(table, constant)["target"]["met"]
    assert not bench.summary_by_category(table[:3], constant)["target"]["met"]  # fewer than 4 categories


def test_summary_compares_rl_with_sft_at_equal_compute_and_reports_consistency():
    table = [{"category": c, "questions": 10, "before": 0.3, "after": 0.6, "distinct_answers_after": 3,
              "distinct_answers_before": 1} for c in "ab"] + [{"category": "overall"}, {"category": "macro (mean of categories)"}]
    constant = {c: {"answer": "A", "accuracy": 0.25} for c in "ab"}
    evals = {
        "start": {"categories": [{"category": c, "accuracy": 0.3, "consistency_rate": 0.5} for c in "ab"]},
        "rl": {"categories": [{"category": c, "accuracy": 0.6, "consistency_rate": 0.9} for c in "ab"]},
        "sft": {"categories": [{"category": "a", "accuracy": 0.45, "consistency_rate": None},
                               {"category": "b", "accuracy": 0.55, "consistency_rate": 0.8}]},
    }
    summary = bench.summary_by_category(table, constant, evals, {"sft": {"a": 4, "b": 2}})
    a, b = summary["categories"]["a"], summary["categories"]["b"]
    assert (a["start_accuracy"], a["sft_accuracy"], a["rl_accuracy"]) == (0.3, 0.45, 0.6)
    assert a["rl_consistency_rate"] == 0.9 and "sft_consistency_rate" not in a and b["sft_consistency_rate"] == 0.8
    assert a["sft_distinct_answers"] == 4
    assert summary["macro"]["sft_accuracy"] == pytest.approx(0.5)
    assert summary["macro"]["sft_over_constant_points"] == pytest.approx(25.0)
    assert summary["sft_arm"].startswith("equal compute")
    # Without the SFT arm, sft_accuracy is the start's.
    assert bench.summary_by_category(table, constant)["categories"]["a"]["sft_accuracy"] == 0.3


def test_equal_compute_sft_steps_fill_grpo_wall_time_at_the_median_step_time(tmp_path):
    metrics = tmp_path / "sft_metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": i, "time/step": t}) + "\n" for i, t in enumerate([5.0, 0.5, 0.5, 0.6], 1)))
    assert bench.equal_compute_sft_steps(metrics, 100.0) == 182  # 100 s / median 0.55 s (the first step's warm-up ignored)
    metrics.write_text("")
    with pytest.raises(ValueError, match="no SFT steps"):
        bench.equal_compute_sft_steps(metrics, 10.0)


def test_reuse_start_copies_a_finished_sft_start_and_refuses_an_unfinished_one(tmp_path):
    earlier = tmp_path / "earlier" / "sft"
    (earlier / "policy").mkdir(parents=True)
    (earlier / "policy" / "config.json").write_text("{}")
    (earlier / "sft_metrics.jsonl").write_text(json.dumps({"step": 1, "time/step": 0.5}) + "\n")
    with pytest.raises(FileNotFoundError, match="sft_state.json"):
        bench.reuse_start(earlier / "policy", tmp_path / "now" / "sft")
    (earlier / "sft_state.json").write_text(json.dumps({"steps": 1}))
    policy = bench.reuse_start(earlier / "policy", tmp_path / "now" / "sft")
    assert policy == tmp_path / "now" / "sft" / "policy" and (policy / "config.json").is_file()
    assert bench.equal_compute_sft_steps(policy.parent / "sft_metrics.jsonl", 5.0) == 10
