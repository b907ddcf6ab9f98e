"""The Weights & Biases backend: each row logged with its `step` as the x-axis of every chart (wandb.define_metric), so
the names are metrics.jsonl's; the run id is kept in <run_dir>/wandb_run_id so a resumed run continues the same W&B run.
Offline mode (tracking.wandb.mode=offline, or WANDB_MODE=offline with mode "") writes locally for `wandb sync`."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from cluster.tracking.base import scalars

log = logging.getLogger("embodied_r.train")


class WandbTracker:
    def __init__(self, options, run_dir: str | Path, start_step: int):
        try:
            import wandb
        except ImportError as err:
            raise ImportError("tracking.backends has wandb, but wandb is not installed: pip install '.[wandb]'") from err
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        id_file = run_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]  # W&B ids: [a-z0-9]
        Path(options.dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=options.project, entity=options.entity or None, name=options.name or run_dir.name,
            dir=str(options.dir), mode=options.mode or None,  # None: wandb reads WANDB_MODE itself
            id=run_id, resume="allow",
        )
        id_file.write_text(run_id)
        # Our step, not wandb's own counter, is every chart's x-axis: steps run again after a rewind are logged again
        # at the same x (wandb's counter only grows, so it could not take them).
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        self.start_step = start_step

    def write(self, row: dict) -> None:
        self.run.log({"step": int(row["step"]), **scalars(row)})

    def write_samples(self, step: int, kind: str, page: dict) -> None:
        """The page as a wandb.Table (one row per completion) under samples/train or samples/eval."""
        import wandb

        columns = ["step", "group", "record", "category", "gold", "index", "format", "accuracy", "consistency", "judge",
                   "total", "advantage", "tokens", "policy_version", "completion"]
        rows = [[step, g["group"], g["record_id"], g["category"], str(g["answer"]), c["index"], c["format"], c["accuracy"],
                 c["consistency"], c["judge"], c["total"], c["advantage"], c["tokens"], c["policy_version"], c["text"]]
                for g in page["groups"] for c in g["completions"]]
        self.run.log({"step": step, f"samples/{kind}": wandb.Table(columns=columns, data=rows)})

    def rewind(self, step: int) -> None:
        log.warning("W&B cannot delete logged points: the steps after %d are logged again beside the first ones", step)

    def close(self) -> None:
        self.run.finish()
