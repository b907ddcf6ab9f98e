"""Combining the rewards: weighted totals, consistency only on correct answers, and a failed judgement excluded from
its group's advantage (counted, never scored 0)."""

from __future__ import annotations

import numpy as np
import pytest

from embodied_data.records import Record
from rewards.combine import RewardScorer, accuracy_by_category, score_group_batch
from rewards.config import RewardConfig, RewardStage

WEIGHTS = RewardStage(start=0, format=0.1, accuracy=0.7, consistency=0.2)


def _mc(record_id: str = "m1", answer: str = "B") -> Record:
    return Record(id=record_id, video="v.mp4", question="Is the lamp left, right or behind me?",
                  choices=("left", "right", "behind"), answer=answer, category="rel_direction", scene="s", source="test")


def _numeric(record_id: str = "n1", answer: float = 2.0) -> Record:
    return Record(id=record_id, video="v.mp4", question="How far is the lamp (m)?", choices=(), answer=answer,
                  category="abs_distance", scene="s", source="test")


def _completion(answer: str, think: str = "The lamp stayed on my right.", well_formed: bool = True) -> str:
    text = f"<think>{think}</think>\n<answer>{answer}</answer>"
    return text if well_formed else "Sure. " + text


def _advantages(values, group_size: int) -> np.ndarray:
    rewards = np.asarray(values, dtype=float).reshape(-1, group_size)
    centred = rewards - rewards.mean(axis=1, keepdims=True)
    return (centred / (rewards.std(axis=1, keepdims=True) + 1e-6)).reshape(-1)


def test_totals_and_consistency_only_on_correct_answers():
    completions = [_completion("B"), _completion("B"), _completion("A"), _completion("B", well_formed=False)]
    judge = ["B", "C", "A", "B"]  # sample 2 is wrong: its judge letter must be ignored
    batch = score_group_batch(completions, [_mc()] * 4, 4, WEIGHTS, judge)
    assert batch.format == [1.0, 1.0, 1.0, 0.0]
    assert batch.accuracy == [1.0, 1.0, 0.0, 1.0]
    assert batch.consistency == [1.0, 0.0, 0.0, 1.0]
    assert batch.judged == 3 and batch.judge_failures == 0
    expected = [0.1 * f + 0.7 * a + 0.2 * c for f, a, c in zip(batch.format, batch.accuracy, batch.consistency)]
    assert batch.total == pytest.approx(expected)


def test_correct_answer_without_reasoning_gets_no_consistency_and_no_judge_call():
    completions = ["<answer>B</answer>", _completion("B", think="  ")]
    batch = score_group_batch(completions, [_mc()] * 2, 2, WEIGHTS, [None, None])
    assert batch.accuracy == [1.0, 1.0]
    assert batch.consistency == [0.0, 0.0]
    assert batch.judge_failures == 0 and batch.judged == 0


def test_failed_judgement_is_excluded_from_the_group_advantage():
    group = 6
    completions = [
        _completion("B"),  # correct, judge agrees
        _completion("B"),  # correct, judge disagrees
        _completion("B"),  # correct, judgement FAILED
        _completion("A"),  # wrong
        _completion("B", well_formed=False),  # correct, bad format, judge agrees
        _completion("C"),  # wrong
    ]
    judge = ["B", "A", None, "A", "B", "C"]
    records = [_mc()] * group + [_mc("m2")] * group
    # A second group, identical but for sample 2's judgement succeeding: failures are handled per group.
    batch = score_group_batch(completions * 2, records, group, WEIGHTS, judge + ["B", "A", "B", "A", "B", "C"])
    assert batch.judge_failures == 1 and batch.judge_failed[2] and not any(batch.judge_failed[group:])
    assert batch.judged == 3 + 4
    assert batch.consistency[2] is None  # counted as failed, never 0

    # Reference: the consistency term centred over the samples whose consistency is known only, zero deviation for
    # the failed one; format and accuracy centred over the whole group.
    f = np.array(batch.format[:group])
    a = np.array(batch.accuracy[:group])
    known = [i for i in range(group) if i != 2]
    c = np.array([0.0 if v is None else v for v in batch.consistency[:group]])
    c_dev = np.where(np.arange(group) == 2, 0.0, c - c[known].mean())
    centred = WEIGHTS.format * (f - f.mean()) + WEIGHTS.accuracy * (a - a.mean()) + WEIGHTS.consistency * c_dev
    reference = centred / (np.sqrt((centred**2).mean()) + 1e-6)
    got = _advantages(batch.total, group)
    assert got[:group] == pytest.approx(reference, abs=1e-9)

    # Scoring the failure as 0 would have moved every other sample's advantage.
    as_zero = list(batch.total[:group])
    as_zero[2] -= WEIGHTS.consistency * batch.consistency_used[2]
    assert batch.consistency_used[2] == pytest.approx(c[known].mean()) and batch.consistency_used[2] > 0
    assert not np.allclose(_advantages(as_zero, group)[known], reference[known], atol=1e-3)

    # The second group had no failure: plain weighted sums.
    second = [0.1 * fm + 0.7 * ac + 0.2 * co for fm, ac, co in
              zip(batch.format[group:], batch.accuracy[group:], batch.consistency[group:])]
    assert batch.total[group:] == pytest.approx(second)


def test_group_with_every_judgement_failed_gets_no_consistency_deviation():
    completions = [_completion("B", think=f"step {i}") for i in range(3)] + [_completion("B", well_formed=False)]
    batch = score_group_batch(completions, [_mc()] * 4, 4, WEIGHTS, [None] * 4)
    assert batch.judge_failures == 4 and batch.judged == 0
    assert batch.consistency == [None] * 4
    assert len(set(batch.consistency_used)) == 1  # one constant for the group
    without_consistency = score_group_batch(completions, [_mc()] * 4, 4,
                                            RewardStage(0, WEIGHTS.format, WEIGHTS.accuracy, 0.0), None)
    assert _advantages(batch.total, 4) == pytest.approx(_advantages(without_consistency.total, 4), abs=1e-9)


def test_numeric_questions_have_no_consistency_term():
    completions = [_completion("2"), _completion("2.46 m"), _completion("far"), "<answer>2</answer>"]
    batch = score_group_batch(completions, [_numeric()] * 4, 4, WEIGHTS, None)  # no judge needed, none run
    assert batch.consistency == [None] * 4 and batch.judge_failures == 0
    assert batch.accuracy == pytest.approx([1.0, 0.6, 0.0, 1.0])
    assert batch.total == pytest.approx([0.1 * f + 0.7 * a for f, a in zip(batch.format, batch.accuracy)])


def test_zero_consistency_weight_needs_no_judge():
    stage = RewardStage(0, 0.7, 0.3, 0.0)
    completions = [_completion("B"), _completion("A")]
    batch = score_group_batch(completions, [_mc()] * 2, 2, stage, None)
    assert batch.consistency == [None, None] and batch.judged == 0
    assert batch.total == pytest.approx([1.0, 0.7])
    scored = RewardScorer(RewardConfig(stages=[stage]), pool=None).score(completions, [_mc()] * 2, 2, stage)
    assert scored.total == pytest.approx(batch.total)


def test_bad_batches_fail_clearly():
    with pytest.raises(ValueError, match="mixes records"):
        score_group_batch([_completion("B")] * 2, [_mc("a"), _mc("b")], 2, WEIGHTS, [None, None])
    with pytest.raises(ValueError, match="groups of 2"):
        score_group_batch([_completion("B")] * 3, [_mc()] * 3, 2, WEIGHTS, [None] * 3)
    with pytest.raises(ValueError, match="3 completions but 2 records"):
        score_group_batch([_completion("B")] * 3, [_mc()] * 2, 1, WEIGHTS, None)
    with pytest.raises(ValueError, match="1 judge letters"):
        score_group_batch([_completion("B")] * 2, [_mc()] * 2, 2, WEIGHTS, ["B"])
    with pytest.raises(ValueError, match="record m1: consistency weight"):
        score_group_batch([_completion("B")] * 2, [_mc()] * 2, 2, WEIGHTS, None)
    with pytest.raises(ValueError, match="no judge pool"):
        RewardScorer(RewardConfig(), pool=None).score([_completion("B")], [_mc()], 1, WEIGHTS)


def test_metrics():
    batch = score_group_batch([_completion("B"), _completion("B")], [_mc()] * 2, 2, WEIGHTS, ["B", None])
    metrics = batch.metrics()
    assert metrics["reward/judge_failures"] == 1.0 and metrics["reward/judged"] == 1.0
    assert metrics["reward/judge_failure_rate"] == 0.5
    assert metrics["reward/consistency"] == 1.0  # the mean of known values only


def test_accuracy_by_category():
    metrics = accuracy_by_category([1.0, 0.0, 0.5, 0.25], ["counting", "counting", "a/b", "route"])
    assert metrics == {"reward/accuracy/a_b": 0.5, "reward/accuracy/counting": 0.5, "reward/accuracy/route": 0.25}
    with pytest.raises(ValueError, match="3 accuracies but 2 categories"):
        accuracy_by_category([1.0, 0.0, 1.0], ["x", "y"])
