"""Per-step metrics as JSON lines in <run_dir>/metrics.jsonl (one flushed line per step, easy to plot or tail)."""

from __future__ import annotations

import json
import math
from pathlib import Path


class MetricsWriter:
    def __init__(self, path: str | Path, truncate_after_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after_step is not None:
            self._truncate(truncate_after_step)
        self._file = self.path.open("a", encoding="utf-8")

    def _truncate(self, step: int) -> None:
        """Drops the lines of steps after `step` (on resume: they will be run again)."""
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _step_of(line) <= step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def rewind(self, step: int) -> None:
        """As on resume, while the writer is open: a run that goes back to a checkpoint rewrites the steps after it."""
        self._file.close()
        self._truncate(step)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, metrics: dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        self._file.write(json.dumps(clean, sort_keys=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 10**12  # an unreadable line is dropped on resume


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class PhaseClock:
    """The wall time of a run split into its phases (start-up, perception, warm-up, steps ...), each `mark` closing
    the phase that ran since the previous one: what a user reads to see where a run's time went."""

    def __init__(self) -> None:
        import time

        self._now = time.perf_counter
        self._last = self._started = self._now()
        self.phases: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        now = self._now()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self._last
        self._last = now

    def summary(self) -> str:
        total = self._last - self._started
        parts = ", ".join(f"{name} {seconds:.1f} s ({seconds / total:.0%})" for name, seconds in self.phases.items()) if total > 0 else ""
        return f"wall time {total:.1f} s: {parts}"

    def as_dict(self) -> dict[str, float]:
        return {"total_s": self._last - self._started, **{f"{name}_s": seconds for name, seconds in self.phases.items()}}
