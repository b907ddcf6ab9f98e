"""bench/ood_eval.py end to end: real VSI-Bench layouts rendered, two tiny random-weight policies evaluated on every
split through run_eval (Ray rollout workers), and ood.json checked against the eval outputs and a by-hand best
constant answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


torch.set_num_threads(1)

SCENES, MAX_RECORDS = 3, 12  # seed 0: the first 12 questions of these 3 scenes cover a train and a test scene


def _by_hand_constant(records) -> dict[str, float]:
    """Per category the best score of one answer given to every question: multiple choice, the share of the most
    frequent correct letter; numeric, the best mean MRA (thresholds .50:.05:.95) of one of the gold values."""
    thresholds = np.linspace(0.5, 0.95, 10)
    by_category: dict[str, list] = {}
    for r in records:
        by_category.setdefault(r.category, []).append(r)
    best = {}
    for category, rows in by_category.items():
        if rows[0].is_numeric:
            # the gold values as an answer would write them (best_constant_answer formats them with :g)
            golds = [float(f"{float(r.answer):g}") for r in rows]
            best[category] = max(
                np.mean([np.mean(abs(c - float(r.answer)) / abs(float(r.answer)) <= 1 - thresholds) for r in rows])
                for c in golds)
        else:
            letters = [r.answer for r in rows]
            best[category] = max(letters.count(letter) for letter in set(letters)) / len(rows)
    return best


@pytest.fixture(scope="module")
def ood(realdata, tmp_path_factory):
    pytest.importorskip("ray")
    from bench.ood_eval import real_layout_manifest
    from cluster.config import load_config
    from cluster.tiny_models import build_tiny_causal_lm, train_tokenizer
    from embodied_data.manifest import read_gt_captions, read_manifest

    work = tmp_path_factory.mktemp("ood")
    out = work / "out"
    # Rendered first for the tokenizer's text; ood_eval then reuses the same dataset.
    manifest = real_layout_manifest(out, SCENES, seed=0, realdata_dir=realdata, progress=False)
    records, _ = read_manifest(manifest)
    captions = read_gt_captions(manifest)
    tokenizer = train_tokenizer([r.question + " " + " ".join(r.choices) for r in records] + list(captions.values()),
                                work / "tok", vocab_size=1024)
    checkpoints = {"sft": build_tiny_causal_lm(tokenizer, work / "a", seed=0),
                   "rl": build_tiny_causal_lm(tokenizer, work / "b", seed=1)}
    cfg = load_config(None, [f"run_dir={work / 'run'}", "sampling.max_new_tokens=12", "rollout.num_cpus_per_replica=0.5",
                             "ray.num_cpus=2", "trainer.progress=false"])
    from bench.ood_eval import ood_eval

    result = ood_eval(cfg, checkpoints, out, SCENES, seed=0, workers=1, max_records=MAX_RECORDS)
    return result, out, records


@pytest.mark.slow
def test_ood_json_has_every_category_of_the_evaluated_questions(ood):
    result, out, records = ood
    saved = json.loads((out / "ood.json").read_text())
    assert saved["categories"] == result["categories"] and saved["split"] == "all"
    evaluated = {json.loads(line)["record_id"] for line in (out / "eval_rl" / "eval_samples.jsonl").read_text().splitlines()}
    chosen = [r for r in records if r.id in evaluated]
    assert len(evaluated) == MAX_RECORDS == saved["questions"]
    assert len({r.split for r in chosen}) > 1  # every split is evaluated, not only the test scenes
    assert set(saved["categories"]) == {r.category for r in chosen}
    for name in ("sft", "rl"):
        eval_json = json.loads((out / f"eval_{name}" / "eval.json").read_text())
        assert eval_json["split"] == "all" and eval_json["perception"] == "ground_truth"
        for row in eval_json["categories"]:
            mine = saved["categories"][row["category"]]
            assert mine[f"{name}_accuracy"] == pytest.approx(row["accuracy"])
            assert mine["n"] == row["questions"]
            assert 1 <= mine[f"{name}_distinct_answers"] <= row["questions"]
    assert set(saved["macro"]) >= {"sft_accuracy", "rl_accuracy", "constant_accuracy", "rl_over_constant_points"}


@pytest.mark.slow
def test_constant_answer_matches_a_by_hand_count(ood):
    result, out, records = ood
    evaluated = {json.loads(line)["record_id"] for line in (out / "eval_sft" / "eval_samples.jsonl").read_text().splitlines()}
    by_hand = _by_hand_constant([r for r in records if r.id in evaluated])
    assert {c: row["constant_accuracy"] for c, row in result["categories"].items()} == pytest.approx(by_hand)
    for category, row in result["categories"].items():
        assert 0.0 < row["constant_accuracy"] <= 1.0 and row["constant_answer"]


def test_checkpoint_names_must_be_folder_names(tmp_path):
    from bench.ood_eval import ood_eval, parse_checkpoint

    with pytest.raises(ValueError, match="checkpoint names"):
        ood_eval(None, {"a/b": "x"}, tmp_path, 1)
    assert parse_checkpoint("rl=runs/x/checkpoints/step_000060") == ("rl", "runs/x/checkpoints/step_000060")
