"""Accuracy reward: 1.0 iff the one option letter the final `<answer>` names equals the ground truth (multiple choice),
or VSI-Bench's mean relative accuracy of the number the final `<answer>` is (numeric questions).

What counts as the final answer, as one letter and as one number is rewards/answer.py's: an answer that names more than
one option, or is not a number by its grammar ("3,5", "1e309", "about 3"), scores 0.

The MRA matches the VSI-Bench scorer (vision-x-nyu/thinking-in-space, lmms_eval/tasks/vsibench/utils.py):
thresholds = np.linspace(.5, .95, int((.95 - .5) / .05 + 2)) (ten values, .50 .. .95) and a threshold counts when
|pred - gt| / gt <= 1 - theta. The paper writes the indicator with "<"; the released scorer, which produced the
published numbers, uses "<=", and so do we (they differ only when the relative error lands exactly on a threshold).
Two cases the scorer leaves undefined are defined here: gt == 0 (the scorer divides by zero; no VSI-Bench ground truth
is 0, but synthetic counting questions can be) gives relative error 0 when pred == 0 and infinity otherwise, as later
VSI-Bench tooling defines it; and the denominator is |gt|, identical for the benchmark's positive ground truths.
An answer with no parsable number scores 0, as the scorer's WORST_CASE does.
"""

from __future__ import annotations

import math

import numpy as np

from embodied_data.records import Record
from rewards.answer import extract_answer, parse_choice_letter, parse_number

MRA_START, MRA_END, MRA_INTERVAL = 0.5, 0.95, 0.05


def mra_thresholds(start: float = MRA_START, end: float = MRA_END, interval: float = MRA_INTERVAL) -> np.ndarray:
    """The confidence thresholds theta, computed exactly as the VSI-Bench scorer does (float rounding included)."""
    return np.linspace(start, end, int((end - start) / interval + 2))


def mean_relative_accuracy(pred: float, gt: float) -> float:
    """Mean over theta in .50:.05:.95 of 1[|pred - gt| / |gt| <= 1 - theta]; 0.0 for a non-finite prediction."""
    if not math.isfinite(pred):
        return 0.0
    if not math.isfinite(gt):
        raise ValueError(f"ground truth must be finite, got {gt!r}")
    if gt == 0:
        relative_error = 0.0 if pred == 0 else math.inf
    else:
        relative_error = abs(pred - gt) / abs(gt)
    return float(np.mean(relative_error <= 1 - mra_thresholds()))


def policy_letter(completion: str, record: Record) -> str | None:
    """The option letter the completion's final `<answer>` names (None: no final answer, no option, or several)."""
    return parse_choice_letter(extract_answer(completion), record.letters, record.choices)


def accuracy_reward(completion: str, record: Record) -> float:
    """1/0 for the letter (multiple choice) or the MRA of the number (numeric) in the completion's final answer."""
    if record.is_numeric:
        pred = parse_number(extract_answer(completion))
        return 0.0 if pred is None else mean_relative_accuracy(pred, float(record.answer))
    return 1.0 if policy_letter(completion, record) == record.answer else 0.0
