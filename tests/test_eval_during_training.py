"""Held-out evaluation during training (trainer.eval_every): the questions chosen, the eval/* metrics computed from the
workers' greedy answers with `embodied-r eval`'s scoring, and (slow) a real run whose rows, TensorBoard events and PNG
plots carry them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cluster.config import load_config
from cluster.evaluate import TrainingEval, held_out_records
from embodied_data.records import Record


def _record(rid: str, category: str, answer="B", choices=("left", "right")) -> Record:
    return Record(rid, "v.mp4", "Is the lamp left or right of the bed?", choices, answer, category, "s", "synthetic", split="test")


def test_held_out_questions_are_taken_round_robin_over_categories():
    records = [_record("a1", "a"), _record("a2", "a"), _record("a3", "a"), _record("b1", "b"), _record("c1", "c")]
    assert [r.id for r in held_out_records(records, 4)] == ["a1", "b1", "c1", "a2"]
    assert [r.id for r in held_out_records(records, 0)] == ["a1", "b1", "c1", "a2", "a3"]


class GreedyPool:
    """The rollout pool as TrainingEval uses it: records the sampling settings, answers with fixed texts."""

    def __init__(self, texts: list[str]):
        self.texts, self.calls = texts, []

    def generate(self, prompts, sampling, seed):
        self.calls.append(sampling)
        return [[SimpleNamespace(text=t, token_ids=[0] * (i + 1))] for i, t in enumerate(self.texts[: len(prompts)])]


def test_eval_metrics_are_greedy_and_scored_per_category():
    cfg = load_config(None, ["trainer.eval_every=2", "trainer.steps=5", "sampling.max_new_tokens=32"])
    prompts = [SimpleNamespace(record=_record("x", "rel/dir"), token_ids=[1]), SimpleNamespace(record=_record("y", "rel/dir"), token_ids=[2]),
               SimpleNamespace(record=_record("z", "count", answer=2.0, choices=()), token_ids=[3])]
    evaluation = TrainingEval(cfg, prompts)
    assert [s for s in range(1, 6) if evaluation.due(s)] == [2, 4, 5]  # every 2 steps, and after the last
    pool = GreedyPool(["<think> r </think><answer> B </answer>", "<answer> A </answer>", "<think> n </think><answer> 2 </answer>"])
    metrics = evaluation.metrics(pool, policy_version=4)
    sampling = pool.calls[0]
    assert (sampling.num_samples, sampling.temperature, sampling.max_new_tokens) == (1, 0.0, 32)
    assert metrics["eval/accuracy/rel_dir"] == pytest.approx(0.5) and metrics["eval/accuracy/count"] == pytest.approx(1.0)
    assert metrics["eval/accuracy"] == pytest.approx(2 / 3) and metrics["eval/accuracy_macro"] == pytest.approx(0.75)
    assert metrics["eval/format"] == pytest.approx(2 / 3) and metrics["eval/response_length"] == pytest.approx(2.0)
    assert metrics["eval/questions"] == 3 and metrics["eval/policy_version"] == 4 and metrics["time/eval"] >= 0


def test_eval_options_are_checked_at_load():
    with pytest.raises(ValueError, match="trainer.eval_max_questions must be >= 0"):
        load_config(None, ["trainer.eval_max_questions=-1"])
    with pytest.raises(ValueError, match="trainer.eval_split"):
        load_config(None, ["trainer.eval_every=3", "trainer.eval_split=train"])


@pytest.mark.slow
def test_training_writes_eval_metrics_tensorboard_events_and_plots(two_step_tiny_run):
    """The session's shared tiny run (tests/conftest.py: trainer.eval_every=2, 4 questions): the held-out evaluation
    runs at step 2 and not at step 1, and its metrics reach the rows, TensorBoard and the plots."""
    from tensorboard.backend.event_processing import event_accumulator

    from cluster.metrics import read_metrics
    from embodied_data.manifest import read_manifest

    run_dir = two_step_tiny_run
    records, _ = read_manifest(run_dir / "data" / "manifest.parquet")
    test_categories = {r.category.replace("/", "_") for r in records if r.split == "test"}
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert not any(key.startswith("eval/") for key in rows[0])  # not due at step 1
    evaluated = [r for r in rows if "eval/accuracy" in r]
    assert [r["step"] for r in evaluated] == [2]
    for row in evaluated:
        assert {f"eval/accuracy/{c}" for c in test_categories} <= set(row), sorted(row)
        assert 0 <= row["eval/accuracy"] <= 1 and 0 <= row["eval/format"] <= 1
        assert row["eval/questions"] == min(4, sum(r.split == "test" for r in records))
        assert row["eval/policy_version"] == row["step"]  # scored with the weights of that step

    accumulator = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in accumulator.Scalars("eval/accuracy")] == \
        [(r["step"], r["eval/accuracy"]) for r in evaluated]
    assert set(accumulator.Tags()["scalars"]) == {k for r in rows for k, v in r.items() if k != "step" and v is not None}

    plots = {p.name for p in (run_dir / "plots").glob("*.png")}
    assert {"rewards.png", "accuracy_by_category.png", "response_length.png", "kl.png", "time.png", "eval.png"} <= plots
