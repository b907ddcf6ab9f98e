"""A seeded, scene-level train/val/test split: every question about one scene lands in the same split."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import numpy as np

from embodied_data.records import Record

SPLITS = ("train", "val", "test")
DEFAULT_RATIOS = (0.75, 0.05, 0.2)


def split_scenes(scenes: Iterable[str], seed: int, ratios: tuple[float, float, float] = DEFAULT_RATIOS) -> dict[str, str]:
    """Scene -> "train" / "val" / "test".

    The sorted distinct scenes are shuffled with `seed` and cut by the ratios (largest remainder rounding).  With
    two or more scenes and a test ratio above zero at least one scene goes to test, so a tiny run can still evaluate.
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise ValueError(f"split ratios must be three non-negative numbers summing to 1, got {ratios}")
    ordered = sorted(set(scenes))
    n = len(ordered)
    exact = [r * n for r in ratios]
    counts = [int(math.floor(x)) for x in exact]
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    if n >= 2 and ratios[2] > 0 and counts[2] == 0:
        donor = 0 if counts[0] > 0 else 1
        counts[donor] -= 1
        counts[2] += 1
    shuffled = [ordered[i] for i in np.random.default_rng(seed).permutation(n)]
    assignment: dict[str, str] = {}
    start = 0
    for split, count in zip(SPLITS, counts):
        for scene in shuffled[start : start + count]:
            assignment[scene] = split
        start += count
    return assignment


def assign_splits(records: list[Record], seed: int, ratios: tuple[float, float, float] = DEFAULT_RATIOS) -> list[Record]:
    """The records with `split` set from their scene's split."""
    assignment = split_scenes((r.scene for r in records), seed, ratios)
    return [dataclasses.replace(r, split=assignment[r.scene]) for r in records]
