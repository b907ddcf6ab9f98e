"""Checkpoint folders of a run: naming, the driver's own state beside the learner's, finding the newest, pruning old ones."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from embodied_data.atomic import write_text_atomically

_NAME = re.compile(r"^step_(\d{6})$")


def checkpoint_dir(run_dir: str, step: int) -> str:
    return str(Path(run_dir) / "checkpoints" / f"step_{step:06d}")


def write_driver_state(checkpoint: str, state: dict) -> None:
    write_text_atomically(Path(checkpoint) / "driver_state.json", json.dumps(state, indent=2))


def latest_checkpoint(run_dir: str) -> str | None:
    """The newest checkpoint that is complete (its driver state was written last, so its presence marks completion)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if _NAME.match(p.name) and (p / "driver_state.json").is_file()]
    return str(max(done, key=lambda p: p.name)) if done else None


def read_driver_state(checkpoint: str) -> dict:
    return json.loads((Path(checkpoint) / "driver_state.json").read_text())


def prune(run_dir: str, keep: int) -> None:
    root = Path(run_dir) / "checkpoints"
    complete = sorted(p for p in root.iterdir() if _NAME.match(p.name) and (p / "driver_state.json").is_file())
    for old in complete[: max(0, len(complete) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
