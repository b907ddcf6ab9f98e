"""Accuracy reward: letters against the ground truth, and VSI-Bench's mean relative accuracy against hand counts."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from embodied_data.records import Record
from rewards.accuracy import accuracy_reward, mean_relative_accuracy, mra_thresholds


def _numeric(answer: float) -> Record:
    return Record(id="n", video="v.mp4", question="How far?", choices=(), answer=answer, category="abs_distance",
                  scene="s", source="test")


def _choice(answer: str) -> Record:
    return Record(id="m", video="v.mp4", question="Where?", choices=("left", "right", "back"), answer=answer,
                  category="rel_direction", scene="s", source="test")


def test_thresholds_are_the_ten_vsi_bench_values():
    assert np.allclose(mra_thresholds(), [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])


# Hand counts: relative error e passes threshold theta when e <= 1 - theta, 1 - theta in {.50, .45, ..., .05}.
@pytest.mark.parametrize(
    "pred, gt, passing",
    [
        (1.0, 1.0, 10),
        (3.9, 4.0, 10),  # e = .025
        (1.23, 1.0, 6),  # e = .23: passes .50 .45 .40 .35 .30 .25
        (2.76, 3.0, 9),  # e = .08: passes every 1 - theta >= .10, all but the last
        (3.3, 2.0, 0),  # e = .65
        (2.0, 4.0, 1),  # e = .50 exactly: the VSI-Bench scorer's "<=" counts theta = .50
        (-1.12, -1.0, 8),  # e = .12: passes .50 .. .15; the denominator is |gt|
        (0.0, 0.0, 10),  # gt == 0: 0/0 is relative error 0
        (0.1, 0.0, 0),  # gt == 0, pred != 0: relative error infinite
    ],
)
def test_mra_matches_hand_count(pred, gt, passing):
    assert mean_relative_accuracy(pred, gt) == pytest.approx(passing / 10)


def test_mra_rejects_non_finite():
    assert mean_relative_accuracy(math.nan, 2.0) == 0.0
    assert mean_relative_accuracy(math.inf, 2.0) == 0.0
    with pytest.raises(ValueError, match="ground truth"):
        mean_relative_accuracy(1.0, math.nan)


def test_mra_on_real_vsi_bench_ground_truths(realdata):
    """Every numeric VSI-Bench ground truth, predictions off by known relative errors, against the hand count."""
    table = pq.read_table(realdata / "vsi_bench" / "test-00000-of-00001.parquet", columns=["options", "ground_truth"])
    truths = [float(row["ground_truth"]) for row in table.to_pylist() if not row["options"]]
    assert len(truths) == 2640
    for factor, expected in [(1.03, 1.0), (1.23, 0.6), (0.62, 0.3), (1.6, 0.0)]:
        scores = [mean_relative_accuracy(gt * factor, gt) for gt in truths]
        assert scores == pytest.approx([expected] * len(truths))


def test_numeric_accuracy_reads_the_number_inside_answer():
    record = _numeric(2.0)
    assert accuracy_reward("<think>it is 9 m away</think><answer>2.46 meters</answer>", record) == pytest.approx(0.6)
    assert accuracy_reward("<think>it is 9 m away</think><answer>about 2.46 meters</answer>", record) == 0.0
    assert accuracy_reward("<think>it is 2 m away</think><answer>far</answer>", record) == 0.0
    assert accuracy_reward("<think>2</think>", record) == 0.0


def test_choice_accuracy():
    completion = "<think>The door was behind me.</think><answer>C</answer>"
    assert accuracy_reward(completion, _choice("C")) == 1.0
    assert accuracy_reward(completion, _choice("A")) == 0.0
    assert accuracy_reward("<think>x</think><answer>back</answer>", _choice("C")) == 1.0
    assert accuracy_reward("<think>x</think><answer>C. left</answer>", _choice("C")) == 0.0  # contradicts itself
