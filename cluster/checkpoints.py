"""Checkpoint folders of a run: naming, the driver's own state beside the learner's, the hash manifest of every file,
finding the newest, pruning old ones.

A checkpoint is complete when its driver_state.json exists; manifest.sha256 (one `<sha256>  <relative path>` line per
file, driver_state.json included, the format `sha256sum -c` reads) is written just before it. Resume verifies the
manifest before anything is loaded (`verify_checkpoint`): DeepSpeed unpickles its state files, so a checkpoint is code
the learner runs, and one whose files were changed after the run wrote them is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

from embodied_data.atomic import write_text_atomically

_NAME = re.compile(r"^step_(\d{6})$")
_UNFINISHED = re.compile(r"^step_(\d{6})\.tmp$")  # the learner writes a checkpoint here, then renames it
MANIFEST = "manifest.sha256"
DRIVER_STATE = "driver_state.json"
log = logging.getLogger(__name__)


class CheckpointIntegrityError(ValueError):
    """A checkpoint's files do not match the manifest its run wrote: refused, never loaded."""


def checkpoint_dir(run_dir: str, step: int) -> str:
    return str(Path(run_dir) / "checkpoints" / f"step_{step:06d}")


def write_driver_state(checkpoint: str, state: dict) -> None:
    """Completes `checkpoint`: the hash manifest of every file in it (the driver state's own hash included), then the
    driver state, the last write, whose presence marks the checkpoint complete."""
    folder = Path(checkpoint)
    text = json.dumps(state, indent=2)
    hashes = file_hashes(folder)
    hashes.pop(MANIFEST, None)
    hashes[DRIVER_STATE] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    write_text_atomically(folder / MANIFEST, "".join(f"{digest}  {name}\n" for name, digest in sorted(hashes.items())))
    write_text_atomically(folder / DRIVER_STATE, text)


def file_hashes(folder: Path) -> dict[str, str]:
    """Relative path (POSIX) -> sha256 of every regular file under `folder`."""
    hashes = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() or path.is_symlink():
            with path.open("rb") as handle:
                hashes[path.relative_to(folder).as_posix()] = hashlib.file_digest(handle, "sha256").hexdigest()
    return hashes


def read_manifest(checkpoint: Path) -> dict[str, str]:
    manifest: dict[str, str] = {}
    for number, line in enumerate((checkpoint / MANIFEST).read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or not re.fullmatch(r"[0-9a-f]{64}", digest) or not name:
            raise CheckpointIntegrityError(f"checkpoint {checkpoint}: {MANIFEST} line {number} is not `<sha256>  <path>`")
        manifest[name] = digest
    return manifest


def verify_checkpoint(checkpoint: str) -> None:
    """Raises CheckpointIntegrityError naming the file when any file of `checkpoint` differs from its manifest entry,
    is missing, or is not listed in it (nothing of the checkpoint has been loaded then)."""
    folder = Path(checkpoint)
    if not (folder / MANIFEST).is_file():
        raise CheckpointIntegrityError(f"checkpoint {folder} has no {MANIFEST}: refusing to load it unverified")
    expected = read_manifest(folder)
    found = file_hashes(folder)
    found.pop(MANIFEST, None)
    advice = ("; checkpoints are trusted code (DeepSpeed unpickles them): if this change is yours, move the folder "
              "away and resume from the one before it")
    for name, digest in sorted(expected.items()):
        if name not in found:
            raise CheckpointIntegrityError(f"checkpoint {folder}: {folder / name} is listed in {MANIFEST} but missing{advice}")
        if found[name] != digest:
            raise CheckpointIntegrityError(
                f"checkpoint {folder}: {folder / name} does not match {MANIFEST} (sha256 {found[name]}, the run wrote "
                f"{digest}){advice}")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise CheckpointIntegrityError(f"checkpoint {folder}: {folder / extra[0]} is not in {MANIFEST}{advice}")


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
    state_file = checkpoint / DRIVER_STATE
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
    if not (checkpoint / MANIFEST).is_file():
        return f"no {MANIFEST} (written by a version without manifests, or the file was removed)"
    return None


def read_driver_state(checkpoint: str) -> dict:
    return json.loads((Path(checkpoint) / "driver_state.json").read_text())


def prune(run_dir: str, keep: int) -> None:
    root = Path(run_dir) / "checkpoints"
    complete = sorted(p for p in root.iterdir() if _NAME.match(p.name) and checkpoint_problem(p) is None)
    for old in complete[: max(0, len(complete) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def discard(checkpoint: str) -> list[str]:
    """Removes what a failed write of `checkpoint` left (the folder and the learner's .tmp one); returns what was there.
    Best effort: a folder that cannot be removed has no driver_state.json, so resume skips it anyway."""
    removed = []
    for folder in (Path(checkpoint), Path(checkpoint + ".tmp")):
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed
