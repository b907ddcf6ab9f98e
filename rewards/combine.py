"""Combines format, accuracy and consistency into each sample's total reward, w_f*format + w_a*accuracy +
w_c*consistency, for a batch of GRPO groups (G consecutive completions of one prompt), excluding failed judgements.

A failed judgement -- the judge gave no letter (timeout, failed batch) for a correct multiple-choice answer with
reasoning -- is never scored 0. While consistency is weighted, the sample is *excluded* (`excluded`): the driver
leaves it out of its group's advantage statistics and out of the learner's batch, so the group's other samples get
exactly the advantages they would have had if it had never been sampled, and an outage neither raises nor lowers
them (learner.algo.grpo.group_advantages with `valid`). An imputed reward would enter the group's mean and std and
shift every other advantage. Its `total` below is an estimate for the reported reward/total only, so that an outage
does not drag that curve down either: the sample's consistency is unknown, and only what the judge did measure stands
in for it. The incorrect answers' 0s and those of correct answers without reasoning are 0 by definition, not measurements, so
they never enter the estimate. Precisely, for a failed sample i of group g:
- if some correct answers of g were judged, i's consistency is their mean: the consistency rate measured on the
  group's correct answers. The group's rate over all its correct answers is then the measured one, exactly as if the
  failed judgements had been removed, so an outage neither lowers nor raises reward/total relative to that; and when
  the lost judgements are like the judged ones (as many agree as the measured rate says), nothing changes at all;
- if none were (every judgement of the group's correct answers failed), nothing about g's consistency was measured:
  i's total is computed with the consistency term removed and its weight renormalised onto the others,
  (w_f*format + w_a*accuracy) * (w_f + w_a + w_c) / (w_f + w_a). (A stage that weights consistency alone has no other
  term: the total is then (w_f + w_a + w_c) * accuracy.)
Judged samples' totals never depend on another sample's judgement failing. Failed samples are counted
(`judge_failures`, `judge_failed`) and keep consistency None in `consistency`; `consistency_used` holds the value that
makes total = w_f*format + w_a*accuracy + w_c*consistency_used hold for every sample (for a renormalised one,
(w_f*format + w_a*accuracy) / (w_f + w_a)).

Numeric questions have no consistency term (None, left out of the total); with a consistency weight of 0 the judge is
not consulted (the paper's first two stages) and consistency is None unless letters are passed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from embodied_data.records import Record
from rewards.accuracy import accuracy_reward, policy_letter
from rewards.answer import extract_think
from rewards.config import RewardConfig, RewardStage
from rewards.consistency import consistency_reward, judge_request, needs_judgement
from rewards.format import format_reward
from rewards.judge_pool import JudgePool, JudgeTicket


@dataclass
class RewardBatch:
    format: list[float]
    accuracy: list[float]
    consistency: list[float | None]  # None: not applicable (numeric, not judged) or judgement failed
    total: list[float]
    consistency_used: list[float]  # what entered the total: the value, the failed ones' estimate, 0.0 if not applicable
    judge_failed: list[bool]  # a correct multiple-choice answer whose judgement is missing
    judge_failures: int
    judged: int  # samples with a successful judgement
    group_size: int
    weights: RewardStage
    judge_latency_s: float = 0.0
    score_s: float = 0.0  # scoring time, judge included, from submit to the end of collect
    judge_errors: list[str] = field(default_factory=list)
    judge_letters: list[str | None] = field(default_factory=list)  # the judge's letter per sample (None: not asked or failed)

    def __len__(self) -> int:
        return len(self.total)

    @property
    def excluded(self) -> list[bool]:
        """Samples left out of the advantages and of the learner's batch: a failed judgement while consistency is
        weighted (their `total` is the reported estimate, never a reward the policy learns from)."""
        return [failed and self.weights.consistency > 0 for failed in self.judge_failed]

    def metrics(self, prefix: str = "reward/") -> dict[str, float]:
        def mean(values: Sequence[float]) -> float:
            return sum(values) / len(values) if values else 0.0

        known = [value for value in self.consistency if value is not None]
        needed = self.judged + self.judge_failures
        return {
            f"{prefix}total": mean(self.total),
            f"{prefix}format": mean(self.format),
            f"{prefix}accuracy": mean(self.accuracy),
            f"{prefix}consistency": mean(known),
            f"{prefix}judged": float(self.judged),
            f"{prefix}judge_failures": float(self.judge_failures),
            f"{prefix}excluded": float(sum(self.excluded)),
            f"{prefix}judge_failure_rate": self.judge_failures / needed if needed else 0.0,
            f"{prefix}judge_latency_s": self.judge_latency_s,
            f"{prefix}score_s": self.score_s,
        }


def accuracy_by_category(accuracy: Sequence[float], categories: Sequence[str], prefix: str = "reward/accuracy/") -> dict[str, float]:
    """Mean accuracy of the samples of each question category in the batch (metric names: prefix + category, with
    "/" in a category name replaced so that it stays one name)."""
    if len(accuracy) != len(categories):
        raise ValueError(f"{len(accuracy)} accuracies but {len(categories)} categories")
    by_category: dict[str, list[float]] = {}
    for value, category in zip(accuracy, categories):
        by_category.setdefault(category, []).append(value)
    return {f"{prefix}{name.replace('/', '_')}": sum(v) / len(v) for name, v in sorted(by_category.items())}


def _check_groups(num_samples: int, records: Sequence[Record], group_size: int) -> None:
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if len(records) != num_samples:
        raise ValueError(f"{num_samples} completions but {len(records)} records")
    if num_samples % group_size:
        raise ValueError(f"{num_samples} completions do not split into groups of {group_size}")
    for begin in range(0, num_samples, group_size):
        ids = {records[i].id for i in range(begin, begin + group_size)}
        if len(ids) != 1:
            raise ValueError(f"group at samples {begin}..{begin + group_size - 1} mixes records {sorted(ids)}")


def score_group_batch(
    completions_text: Sequence[str],
    records: Sequence[Record],
    group_size: int,
    weights: RewardStage,
    judge_letters: Sequence[str | None] | None,
) -> RewardBatch:
    """Scores `len(completions_text)` samples, G = group_size consecutive ones per prompt.

    `judge_letters[i]` is the judge's letter for sample i (read only where consistency.needs_judgement holds; None
    there means the judgement failed). Pass None when the judge was not run: allowed only if the consistency weight is
    0 or no sample needs a judgement.
    """
    started = time.perf_counter()
    num_samples = len(completions_text)
    _check_groups(num_samples, records, group_size)
    if judge_letters is not None and len(judge_letters) != num_samples:
        raise ValueError(f"{len(judge_letters)} judge letters for {num_samples} completions")

    format_scores = [format_reward(text) for text in completions_text]
    accuracy_scores = [accuracy_reward(text, record) for text, record in zip(completions_text, records)]
    consistency: list[float | None] = [None] * num_samples
    judge_failed = [False] * num_samples
    judged_mask = [False] * num_samples  # a correct answer whose consistency the judge measured
    for i, (text, record) in enumerate(zip(completions_text, records)):
        if record.is_numeric:
            continue
        think = extract_think(text)
        if judge_letters is None:
            if needs_judgement(record, accuracy_scores[i], think) and weights.consistency > 0:
                raise ValueError(
                    f"record {record.id}: consistency weight is {weights.consistency} but no judge letters were given"
                )
            if weights.consistency > 0:
                consistency[i] = consistency_reward(record, accuracy_scores[i], None, think, None)
            continue
        letter = policy_letter(text, record)
        consistency[i] = consistency_reward(record, accuracy_scores[i], letter, think, judge_letters[i])
        if needs_judgement(record, accuracy_scores[i], think):
            judge_failed[i] = judge_letters[i] is None
            judged_mask[i] = not judge_failed[i]

    consistency_used = _exclude_failed(consistency, judged_mask, judge_failed, format_scores, accuracy_scores,
                                       weights, group_size)
    total = [
        weights.format * f + weights.accuracy * a + weights.consistency * c
        for f, a, c in zip(format_scores, accuracy_scores, consistency_used)
    ]
    return RewardBatch(
        format=format_scores,
        accuracy=accuracy_scores,
        consistency=consistency,
        total=total,
        consistency_used=consistency_used,
        judge_failed=judge_failed,
        judge_failures=sum(judge_failed),
        judged=sum(judged_mask),
        group_size=group_size,
        weights=weights,
        score_s=time.perf_counter() - started,
        judge_letters=list(judge_letters) if judge_letters is not None else [None] * num_samples,
    )


def _exclude_failed(
    consistency: Sequence[float | None],
    judged: Sequence[bool],
    failed: Sequence[bool],
    format_scores: Sequence[float],
    accuracy_scores: Sequence[float],
    weights: RewardStage,
    group_size: int,
) -> list[float]:
    """Consistency as it enters the total: known values as they are, 0.0 where not applicable, and for a failed
    judgement the mean over the judged correct answers of its group, or, with none, the value that renormalises the
    consistency weight away (module docstring)."""
    used = [0.0 if c is None else c for c in consistency]
    other_weight = weights.format + weights.accuracy
    for begin in range(0, len(consistency), group_size):
        group = range(begin, begin + group_size)
        measured = [used[i] for i in group if judged[i]]
        for i in (i for i in group if failed[i]):
            if measured:
                used[i] = sum(measured) / len(measured)
            elif other_weight > 0:
                # w_f*f + w_a*a + w_c*x == (w_f*f + w_a*a) * W / (w_f + w_a)  <=>  x = (w_f*f + w_a*a) / (w_f + w_a)
                used[i] = (weights.format * format_scores[i] + weights.accuracy * accuracy_scores[i]) / other_weight
            else:
                used[i] = accuracy_scores[i]  # consistency is the only weighted term: W * accuracy
    return used


@dataclass
class PendingRewards:
    completions_text: list[str]
    records: list[Record]
    group_size: int
    weights: RewardStage
    targets: list[int]  # samples sent to the judge, in request order
    ticket: JudgeTicket | None
    started: float


class RewardScorer:
    """The whole reward flow: accuracy first, the judge only for correct multiple-choice answers with reasoning (and
    only while the consistency weight is > 0), then the combination. `submit` returns at once so the driver can do
    other work while the judge runs; `collect` waits (at most the judge timeout) and scores."""

    def __init__(self, cfg: RewardConfig, pool: JudgePool | None) -> None:
        self.cfg = cfg
        self.pool = pool if cfg.judge.enabled else None

    def submit(
        self, completions_text: Sequence[str], records: Sequence[Record], group_size: int, weights: RewardStage
    ) -> PendingRewards:
        started = time.perf_counter()
        completions_text, records = list(completions_text), list(records)
        _check_groups(len(completions_text), records, group_size)
        targets: list[int] = []
        ticket = None
        if weights.consistency > 0:
            requests = []
            for i, (text, record) in enumerate(zip(completions_text, records)):
                think = extract_think(text)
                if needs_judgement(record, accuracy_reward(text, record), think):
                    targets.append(i)
                    requests.append(judge_request(record, think))
            if requests:
                if self.pool is None:
                    raise ValueError(
                        f"consistency weight is {weights.consistency} but there is no judge pool (judge.enabled="
                        f"{self.cfg.judge.enabled})"
                    )
                ticket = self.pool.submit(requests, timeout_s=self.cfg.judge.timeout_s)
        return PendingRewards(completions_text, records, group_size, weights, targets, ticket, started)

    def collect(self, pending: PendingRewards) -> RewardBatch:
        judge_letters: list[str | None] | None = None
        latency, errors = 0.0, []
        if pending.weights.consistency > 0:
            judge_letters = [None] * len(pending.completions_text)
            if pending.ticket is not None:
                assert self.pool is not None
                result = self.pool.collect(pending.ticket)
                latency, errors = result.latency_s, result.errors
                for i, letter in zip(pending.targets, result.letters):
                    judge_letters[i] = letter
        batch = score_group_batch(
            pending.completions_text, pending.records, pending.group_size, pending.weights, judge_letters
        )
        batch.judge_latency_s = latency
        batch.judge_errors = errors
        batch.score_s = time.perf_counter() - pending.started
        return batch

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def score(
        self, completions_text: Sequence[str], records: Sequence[Record], group_size: int, weights: RewardStage
    ) -> RewardBatch:
        return self.collect(self.submit(completions_text, records, group_size, weights))
