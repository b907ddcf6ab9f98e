"""`embodied-r eval`: the scoring of completions (accuracy per category, MRA, format, consistency, length) on its own,
the matplotlib chart, and a real evaluation of a tiny policy (Ray rollout worker and judge actors) writing json/csv/png."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from cluster.evaluate import (
    OVERALL,
    EvalOptions,
    consistency_request,
    csv_text,
    draw_accuracy_chart,
    format_table,
    run_eval,
    score_samples,
    summarize,
)
from embodied_data.records import Record
from embodied_data.synthetic.traces import reasoning_trace

torch.set_num_threads(1)


def _mc(record_id: str, answer: str = "B", category: str = "object_rel_direction_easy") -> Record:
    return Record(record_id, "v.mp4", "Is the lamp to the left or the right of the bed?", ("left", "right"), answer, category, "s", "synthetic")


def _numeric(record_id: str, answer: float = 2.0) -> Record:
    return Record(record_id, "v.mp4", "How many chair(s) are in this room?", (), answer, "object_counting", "s", "synthetic")


def _row(rows, category):
    return next(r for r in rows if r["category"] == category)


# ---- scoring, no models ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from embodied_data.manifest import read_gt_captions
    from embodied_data.synthetic.dataset import generate_dataset

    out = tmp_path_factory.mktemp("data")
    records = generate_dataset(str(out), num_scenes=2, seed=1, questions_per_scene=6, progress=False)
    return out / "manifest.parquet", records, read_gt_captions(out / "manifest.parquet")


def test_a_policy_that_always_answers_correctly_scores_one(synthetic):
    _, records, captions = synthetic
    texts = [reasoning_trace(r, captions[r.video]) for r in records]
    agreeing_judge = [None if r.is_numeric else r.answer for r in records]
    rows = summarize(score_samples(records, texts, [len(t.split()) for t in texts], agreeing_judge), consistency_measured=True)
    assert {r["category"] for r in rows} == {r.category for r in records} | {OVERALL}
    for row in rows:
        assert row["accuracy"] == 1.0 and row["format_rate"] == 1.0, row
        assert row["consistency_rate"] == (None if row["kind"] == "numeric" else 1.0), row
    assert _row(rows, OVERALL)["samples"] == len(records)


def test_wrong_partial_and_malformed_answers():
    records = [_mc("a"), _mc("b"), _mc("c"), _numeric("n1"), _numeric("n2")]
    texts = [
        "<think> The lamp is right of the bed. </think>\n<answer> B </answer>",  # correct
        "<think> The lamp is left. </think>\n<answer> A </answer>",  # wrong
        "the answer is B",  # no tags: no format, no answer, even though it says B
        "<think> Two chairs and a bit. </think>\n<answer> 2.3 </answer>",  # |2.3-2|/2 = .15: thresholds .50-.85 hold
        "<think> none </think>\n<answer> many </answer>",  # no number
    ]
    rows = summarize(score_samples(records, texts, [10, 20, 30, 40, 50], None), consistency_measured=False)
    mc, numeric, overall = _row(rows, "object_rel_direction_easy"), _row(rows, "object_counting"), _row(rows, OVERALL)
    assert mc["accuracy"] == pytest.approx(1 / 3) and mc["format_rate"] == pytest.approx(2 / 3)
    assert numeric["kind"] == "numeric" and numeric["accuracy"] == pytest.approx(0.8 / 2)
    assert overall["accuracy"] == pytest.approx((1 + 0 + 0 + 0.8 + 0) / 5)
    assert overall["mean_response_tokens"] == pytest.approx(30.0) and mc["questions"] == 3
    # No judge: consistency is not measured anywhere, and says so; it is never reported as 0.
    assert all(r["consistency_rate"] is None and r["consistency_samples"] == 0 for r in rows)
    assert "not measured" in format_table(rows, False)
    assert "not measured" in csv_text(rows, False)


def test_consistency_counts_agreement_excludes_failures_and_needs_reasoning():
    records = [_mc("a"), _mc("b"), _mc("c"), _mc("d"), _mc("e"), _numeric("n")]
    texts = [
        "<think> right of the bed </think><answer> B </answer>",  # judge agrees
        "<think> left of the bed </think><answer> A </answer>",  # wrong answer, judge agrees with it: consistent
        "<think> left of the bed </think><answer> B </answer>",  # judge reads A: inconsistent
        "<think> hmm </think><answer> B </answer>",  # the judgement failed: excluded, counted
        "<answer> B </answer>",  # no reasoning: inconsistent without a judge call
        "<think> 2 </think><answer> 2 </answer>",  # numeric: not applicable
    ]
    assert consistency_request(records[4], texts[4]) is None and consistency_request(records[5], texts[5]) is None
    assert consistency_request(records[0], texts[0]).think == "right of the bed"
    scores = score_samples(records, texts, [1] * 6, ["B", "A", "A", None, None, None])
    assert [s.consistency for s in scores] == [1.0, 1.0, 0.0, None, 0.0, None]
    assert [s.judge_failed for s in scores] == [False, False, False, True, False, False]
    rows = summarize(scores, consistency_measured=True)
    mc = _row(rows, "object_rel_direction_easy")
    assert mc["consistency_rate"] == pytest.approx(2 / 4) and mc["consistency_samples"] == 4 and mc["judge_failures"] == 1
    assert _row(rows, "object_counting")["consistency_rate"] is None


def test_chart_bars_are_proportional_to_accuracy(tmp_path):
    import numpy as np
    from PIL import Image

    def bar_pixels(accuracy: float) -> int:
        path = draw_accuracy_chart(
            [{"category": "relative_direction", "kind": "multiple_choice", "accuracy": accuracy}], tmp_path / f"{accuracy}.png", "t"
        )
        pixels = np.asarray(Image.open(path).convert("RGB"))
        return int((pixels == (66, 118, 180)).all(axis=-1).sum())

    full, quarter = bar_pixels(1.0), bar_pixels(0.25)
    assert full > 0 and quarter / full == pytest.approx(0.25, abs=0.02)


def test_eval_is_registered_on_the_cli():
    from cluster.cli import build_parser

    args = build_parser().parse_args(["eval", "--checkpoint", "c", "--data", "m", "--out", "o", "--judge", "j", "perception.source=ground_truth"])
    assert (args.command, args.split, args.samples, args.judge, args.overrides) == ("eval", "test", 1, "j", ["perception.source=ground_truth"])


def test_a_split_without_records_is_refused_before_ray_starts(synthetic, tmp_path, monkeypatch):
    import cluster.runtime
    from cluster.config import load_config
    from cluster.evaluate import load_split
    from omegaconf import OmegaConf

    manifest, records, _ = synthetic
    assert len(load_split(manifest, "all", 0).records) == len(records)

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a split the manifest does not have")

    monkeypatch.setattr(cluster.runtime, "start_ray", no_ray)
    cfg = OmegaConf.to_object(load_config(None, [f"run_dir={tmp_path}", "perception.source=ground_truth"]))
    options = EvalOptions(checkpoint=str(_checkpoint(tmp_path)), manifest=str(manifest), out_dir=str(tmp_path / "out"), split="nosuch")
    with pytest.raises(ValueError, match=r"no usable records in split 'nosuch' \(usable records by split: .*--split all"):
        run_eval(cfg, options, progress=False)


def _checkpoint(folder):
    """A folder that passes for an HF checkpoint (config.json), for the checks that come before any model loads."""
    (folder / "policy").mkdir(exist_ok=True)
    (folder / "policy" / "config.json").write_text("{}")
    return folder


# ---- a real evaluation ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def evaluated(ray_local, synthetic, tmp_path_factory):
    from omegaconf import OmegaConf

    from cluster.config import load_config
    from cluster.tiny_models import build_tiny_causal_lm, train_tokenizer

    manifest, records, captions = synthetic
    work = tmp_path_factory.mktemp("eval")
    tokenizer = train_tokenizer([r.question + " " + " ".join(r.choices) for r in records] + list(captions.values()), work / "tok")
    policy = build_tiny_causal_lm(tokenizer, work / "policy", seed=0)
    judge = build_tiny_causal_lm(tokenizer, work / "judge", seed=1)
    cfg = OmegaConf.to_object(load_config(None, [
        f"run_dir={work}", "perception.source=ground_truth", "sampling.max_new_tokens=16",
        "rollout.num_cpus_per_replica=0.5", "rewards.judge.num_cpus_per_replica=0.5",
    ]))
    report = run_eval(cfg, EvalOptions(checkpoint=policy, manifest=str(manifest), out_dir=str(work / "out"), judge=judge), progress=False)
    return report, work / "out", [r for r in records if r.split == "test"]


@pytest.mark.slow
def test_eval_writes_json_csv_png_with_the_manifests_categories(evaluated):
    from PIL import Image

    report, out, test_records = evaluated
    categories = {r.category for r in test_records}
    saved = json.loads((out / "eval.json").read_text())
    assert {r["category"] for r in saved["categories"]} == categories
    assert saved["questions"] == len(test_records) and saved["overall"]["samples"] == len(test_records)
    for row in saved["categories"] + [saved["overall"]]:
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["format_rate"] <= 1.0
        assert row["mean_response_tokens"] > 0
    assert saved["consistency"] == "measured" and saved["temperature"] == 0.0

    with open(out / "eval.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["category"] for r in rows] == sorted(categories) + [OVERALL]
    assert float(rows[-1]["accuracy"]) == pytest.approx(saved["overall"]["accuracy"], abs=1e-4)
    image = Image.open(out / "eval.png")
    assert image.format == "PNG" and image.height > 30 * (len(categories) + 1)
    samples = [json.loads(line) for line in (out / "eval_samples.jsonl").read_text().splitlines()]
    assert sorted(s["record_id"] for s in samples) == sorted(r.id for r in test_records)
    assert all(s["tokens"] <= 16 for s in samples)
    assert "overall" in report["table"]


@pytest.mark.slow
def test_eval_writes_a_viewer_per_category_with_wrong_answers_first(evaluated):
    report, out, test_records = evaluated
    assert report["viewer"] == str(out / "view" / "index.html") and (out / "view" / "index.html").is_file()
    pages = [json.loads(path.read_text()) for path in sorted((out / "samples" / "pages").glob("*.json"))]
    assert sorted(p["label"] for p in pages) == sorted(f"eval: {c}" for c in {r.category for r in test_records})
    assert sorted(g["record_id"] for p in pages for g in p["groups"]) == sorted(r.id for r in test_records)
    for page in pages:
        solved = [any(c["correct"] for c in g["completions"]) for g in page["groups"]]
        assert solved == sorted(solved)  # the unsolved questions first
        for group in page["groups"]:
            assert group["frames"] and all(f["caption"] for f in group["frames"])
            assert all((out / "samples" / f["thumb"]).is_file() for f in group["frames"])
    assert len(list((out / "view" / "data").glob("*.js"))) == len(pages)
