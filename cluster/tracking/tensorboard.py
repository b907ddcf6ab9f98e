"""The TensorBoard backend: each row's numbers as scalars (tag = metric name, global step = the row's step) in an event
file under tracking.tensorboard_dir; on resume or rewind the events after the step are purged (SummaryWriter's
purge_step), as metrics.jsonl's lines are."""

from __future__ import annotations

from pathlib import Path

from cluster.tracking.base import scalars


class TensorBoardTracker:
    def __init__(self, log_dir: str | Path, start_step: int):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = self._open(start_step)

    def _open(self, after_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard drops every event at or after it that an earlier writer of this folder left (a fresh
        # run, start 0, drops them all, as metrics.jsonl is emptied).
        return SummaryWriter(log_dir=str(self.log_dir), purge_step=after_step + 1)

    def write(self, row: dict) -> None:
        step = int(row["step"])
        for name, value in scalars(row).items():
            self._writer.add_scalar(name, value, global_step=step)
        self._writer.flush()  # a run killed later keeps this step (resume purges what it repeats)

    def write_samples(self, step: int, kind: str, page: dict) -> None:
        """The page as a markdown table in the text plugin, under samples/train or samples/eval at the page's step."""
        from cluster.samples import markdown_table

        self._writer.add_text(f"samples/{kind}", markdown_table(page), global_step=step)
        self._writer.flush()

    def rewind(self, step: int) -> None:
        self._writer.close()
        self._writer = self._open(step)

    def close(self) -> None:
        self._writer.close()
