"""Choosing the checkpoint to resume from: the newest complete one; a broken one is skipped with a warning naming it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from cluster.checkpoints import checkpoint_dir, latest_checkpoint, prune, write_driver_state


def make_checkpoint(run_dir: Path, step: int, state: str | None = "ok", parts=("policy", "deepspeed")) -> Path:
    folder = Path(checkpoint_dir(str(run_dir), step))
    for part in parts:
        (folder / part).mkdir(parents=True)
    if state == "ok":
        write_driver_state(str(folder), {"step": step, "sampler": {"epoch": 0}})
    elif state is not None:
        (folder / "driver_state.json").write_text(state)
    return folder


def test_newest_complete_checkpoint_is_chosen(tmp_path):
    make_checkpoint(tmp_path, 2)
    newest = make_checkpoint(tmp_path, 4)
    make_checkpoint(tmp_path, 6, state=None)  # its driver state was never written: the write was interrupted
    assert latest_checkpoint(str(tmp_path)) == str(newest)


def test_broken_checkpoints_are_skipped_with_a_warning_naming_them(tmp_path, caplog):
    good = make_checkpoint(tmp_path, 2)
    corrupt = make_checkpoint(tmp_path, 4, state='{"step": 4, "sampl')  # cut mid-write by a crash of the disk
    wrong = make_checkpoint(tmp_path, 5, state=json.dumps({"sampler": {}}))
    partial = make_checkpoint(tmp_path, 6, parts=("deepspeed",))
    unfinished = tmp_path / "checkpoints" / "step_000008.tmp"  # the learner was killed while writing it
    (unfinished / "deepspeed").mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(str(tmp_path)) == str(good)
    text = caplog.text
    assert f"{unfinished}: an unfinished write" in text
    assert f"{corrupt}: driver_state.json is unreadable" in text
    assert f"{wrong}: driver_state.json lacks the step" in text
    assert f"{partial}: missing policy/" in text


def test_no_usable_checkpoint_means_a_fresh_start(tmp_path):
    assert latest_checkpoint(str(tmp_path)) is None
    make_checkpoint(tmp_path, 3, state="not json")
    assert latest_checkpoint(str(tmp_path)) is None


def test_prune_keeps_the_newest_complete_ones_and_never_counts_broken_ones(tmp_path):
    first, second, third = (make_checkpoint(tmp_path, step) for step in (1, 2, 3))
    broken = make_checkpoint(tmp_path, 4, state="{")
    prune(str(tmp_path), keep=2)
    assert not first.exists() and second.exists() and third.exists() and broken.exists()
