"""Metrics tracking: one Tracker per backend in tracking.backends (jsonl, tensorboard, wandb; one file each), and the
multiplexing tracker the driver writes every row through, so that every backend gets the same rows and names."""

from __future__ import annotations

from pathlib import Path

from cluster.tracking.base import Tracker, scalars


class MultiTracker:
    """Every call goes to each backend in turn (jsonl first: it is the run's record)."""

    def __init__(self, backends: dict[str, Tracker]):
        self.backends = backends

    def write(self, row: dict) -> None:
        for backend in self.backends.values():
            backend.write(row)

    def write_samples(self, step: int, kind: str, page: dict) -> None:
        """A recorded samples page (cluster/samples.py) to the backends that show text or tables (TensorBoard, W&B);
        metrics.jsonl has none: the page itself is the record."""
        for backend in self.backends.values():
            if hasattr(backend, "write_samples"):
                backend.write_samples(step, kind, page)

    def rewind(self, step: int) -> None:
        for backend in self.backends.values():
            backend.rewind(step)

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()


def make_backend(name: str, tracking, run_dir: Path, start_step: int) -> Tracker:
    if name == "jsonl":
        from cluster.tracking.jsonl import JsonlTracker

        return JsonlTracker(run_dir / "metrics.jsonl", start_step)
    if name == "tensorboard":
        from cluster.tracking.tensorboard import TensorBoardTracker

        return TensorBoardTracker(tracking.tensorboard_dir, start_step)
    if name == "wandb":
        from cluster.tracking.wandb import WandbTracker

        return WandbTracker(tracking.wandb, run_dir, start_step)
    raise ValueError(f"tracking.backends: unknown backend {name!r}")


def make_tracker(tracking, run_dir: str | Path, start_step: int) -> MultiTracker:
    """The run's tracker (cluster.config.TrackingConfig `tracking`), positioned after `start_step`: the rows of later
    steps that an earlier run of this run dir wrote are dropped, since they are run again."""
    run_dir = Path(run_dir)
    backends: dict[str, Tracker] = {}
    try:
        for name in ("jsonl", *[b for b in tracking.backends if b != "jsonl"]):
            if name in tracking.backends:
                backends[name] = make_backend(name, tracking, run_dir, start_step)
    except BaseException:
        MultiTracker(backends).close()
        raise
    return MultiTracker(backends)


__all__ = ["MultiTracker", "Tracker", "make_backend", "make_tracker", "scalars"]
