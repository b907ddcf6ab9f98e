"""Logical-consistency reward: for a correct multiple-choice answer, 1.0 iff the frozen judge, reading only the
question, the choices and the policy's `<think>` text, names the same letter; 0.0 for an incorrect answer.

Cases, in order:
- numeric question: not applicable (None); the term is left out of the total.
- incorrect answer: 0.0 by definition (the paper rewards consistency only on correct answers); no judge call.
- correct answer without `<think>` text: 0.0, no judge call (there is no reasoning the answer could follow from).
- correct answer with reasoning: 1.0 if the judge's letter equals the policy's, else 0.0;
  no judgement (timeout, failed batch) is None, a failure that the caller counts and excludes, never 0
  (rewards/combine.py defines the exclusion: the rate measured on the group's judged correct answers stands in).
"""

from __future__ import annotations

from embodied_data.records import Record
from rewards.judge import JudgeRequest


def needs_judgement(record: Record, accuracy: float, think: str | None) -> bool:
    """Whether this sample's consistency depends on a judge call."""
    return not record.is_numeric and accuracy == 1.0 and bool(think)


def judge_request(record: Record, think: str) -> JudgeRequest:
    return JudgeRequest(question=record.question, choices=tuple(record.choices), think=think)


def consistency_reward(
    record: Record, accuracy: float, policy_letter: str | None, think: str | None, judge_letter: str | None
) -> float | None:
    """The consistency term, or None when it does not apply (numeric) or the needed judgement is missing (failed)."""
    if record.is_numeric:
        return None
    if not needs_judgement(record, accuracy, think):
        return 0.0
    if judge_letter is None:
        return None
    return 1.0 if judge_letter == policy_letter else 0.0
