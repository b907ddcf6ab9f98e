"""DAPO's dynamic-sampling filter: the indices of the samples whose group's rewards are not all equal.

A group whose G rewards are all equal has advantage 0 for every sample, so it adds no policy gradient; under a
token-mean loss it still counts in the normaliser and shrinks every other group's gradient. Dropping such groups before
the learner step removes that dilution (DAPO, arXiv 2503.14476). The driver keeps the remaining groups whole and in
order; when no group is left it skips the learner step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def kept_sample_indices(
    rewards: Sequence[float], group_size: int, atol: float = 1e-6, valid: Sequence[bool] | None = None
) -> list[int]:
    """Indices of the samples in groups (of `group_size` consecutive samples) whose rewards span more than `atol`.

    `atol` treats float round-off in weighted reward sums as equality: a group whose spread is that small would get
    advantages of at most atol / 1e-4 (the std's epsilon) under group_std, and atol under group_mean, anyway.
    `valid` leaves samples out (a failed judgement): the spread is that of the group's valid samples, and only valid
    indices are returned.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size}")
    if valid is None:
        valid = [True] * len(rewards)
    kept: list[int] = []
    for start in range(0, len(rewards), group_size):
        members = [i for i in range(start, start + group_size) if valid[i]]
        group = [float(rewards[i]) for i in members]
        if not all(math.isfinite(r) for r in group):
            raise ValueError(f"group {start // group_size} (samples {start}-{start + group_size - 1}) has a non-finite reward: {group}")
        if group and max(group) - min(group) > atol:
            kept.extend(members)
    return kept
