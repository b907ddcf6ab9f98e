"""Checkpoint folders of a run: naming, the driver's own state beside the learner's, finding the newest, pruning old ones."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from embodied_data.atomic import write_text_atomically

_NAME = re.compile(r"^step_(\d{6})$")
_UNFINISHED = re.compile(r"^step_(\d{6})\.tmp$")  # the learner writes a checkpoint here, then renames it
log = logging.getLogger(__name__)


def checkpoint_dir(run_dir: str, step: int) -> str:
    return str(Path(run_dir) / "checkpoints" / f"step_{step:06d}")


def write_driver_state(checkpoint: str, state: dict) -> None:
    write_text_atomically(Path(checkpoint) / "driver_state.json", json.dumps(state, indent=2))


def latest_checkpoint(run_dir: str) -> str | None:
    """The newest checkpoint that is complete and readable; a broken one (unreadable driver state, a missing part) is
    skipped with a warning naming it, and an older one is used."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    for unfinished in sorted(p for p in root.iterdir() if _UNFINISHED.match(p.name)):
        log.warning("skipping checkpoint %s: an unfinished write (the run stopped while writing it)", unfinished)
    for candidate in sorted((p for p in root.iterdir() if _NAME.match(p.name)), key=lambda p: p.name, reverse=True):
        problem = checkpoint_problem(candidate)
        if problem is None:
            return str(candidate)
        log.warning("skipping checkpoint %s: %s", candidate, problem)
    return None


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from, or None when it can."""
    state_file = checkpoint / "driver_state.json"
    if not state_file.is_file():
        return "no driver_state.json (the checkpoint was not finished)"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"driver_state.json is unreadable ({error})"
    if not isinstance(state, dict) or "step" not in state or "sampler" not in state:
        return "driver_state.json lacks the step or the sampler state"
    missing = [part for part in ("policy", "deepspeed") if not (checkpoint / part).is_dir()]
    if missing:
        return f"missing {', '.join(missing)}/"
    return None


def read_driver_state(checkpoint: str) -> dict:
    return json.loads((Path(checkpoint) / "driver_state.json").read_text())


def prune(run_dir: str, keep: int) -> None:
    root = Path(run_dir) / "checkpoints"
    complete = sorted(p for p in root.iterdir() if _NAME.match(p.name) and checkpoint_problem(p) is None)
    for old in complete[: max(0, len(complete) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
