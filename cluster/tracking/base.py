"""The interface every metrics backend implements: rows in (one per step, keyed by metric name), rewind to a step, close."""

from __future__ import annotations

import math
from typing import Protocol


class Tracker(Protocol):
    def write(self, row: dict) -> None:
        """One step's row: {"step": N, "reward/total": ..., ...}; the names are the same in every backend."""

    def rewind(self, step: int) -> None:
        """The run went back to `step` (a learner restart): the rows after it will be written again."""

    def close(self) -> None: ...


def scalars(row: dict) -> dict[str, float]:
    """The row's finite numbers (bools as 0/1) by name, `step` left out: what a scalar backend can plot. A metric that
    is null (NaN, e.g. the loss of a step whose groups were all filtered) is left out, not drawn as 0."""
    out = {}
    for name, value in row.items():
        if name == "step" or value is None or isinstance(value, str):
            continue
        value = float(value)
        if math.isfinite(value):
            out[name] = value
    return out
