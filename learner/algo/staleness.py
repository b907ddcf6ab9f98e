"""Staleness: how many policy versions behind the learner each sample's sampler was (Sample.policy_version)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class StalenessStats:
    """Sums and maxima, so that ranks add up: mean = total / sequences."""

    total: float
    max: float
    sequences: float


def staleness_stats(policy_versions: Sequence[int], current_version: int) -> StalenessStats:
    """current_version - policy_version over the samples; a sample from a newer policy than the learner's is an error
    (the driver stamped the wrong version), not a negative staleness."""
    lags = [current_version - int(v) for v in policy_versions]
    if any(lag < 0 for lag in lags):
        raise ValueError(f"samples with policy_version > the learner's current version {current_version}: {sorted(set(policy_versions))}")
    return StalenessStats(total=float(sum(lags)), max=float(max(lags, default=0)), sequences=float(len(lags)))
