"""The jsonl backend: each row one flushed JSON line in <run_dir>/metrics.jsonl (cluster.metrics.MetricsWriter)."""

from __future__ import annotations

from pathlib import Path

from cluster.metrics import MetricsWriter


class JsonlTracker:
    def __init__(self, path: str | Path, start_step: int):
        # The lines of steps after start_step go (resume: those steps are run again).
        self.writer = MetricsWriter(path, truncate_after_step=start_step)

    def write(self, row: dict) -> None:
        self.writer.write(row)

    def rewind(self, step: int) -> None:
        self.writer.rewind(step)

    def close(self) -> None:
        self.writer.close()
