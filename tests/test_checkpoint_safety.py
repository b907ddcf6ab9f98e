"""Checkpoints under faults, without Ray: the hash manifest that resume verifies (a one-byte edit is refused, naming the
file), a full disk at checkpoint time (the ENOSPC failpoint, or the learner's own OSError: reported with the path, the
partial checkpoint removed, the previous one kept; the run goes on or stops by trainer.checkpoint_failure), the
SIGTERM handler and its grace watchdog, exit codes 75 and 74, and the learner's RNG file read with weights_only=True.
(The preemption and full-disk runs end to end: tests/test_faults.py.)"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from cluster.checkpoints import (
    MANIFEST, CheckpointIntegrityError, checkpoint_dir, latest_checkpoint, read_manifest, verify_checkpoint,
    write_driver_state,
)
from cluster.failpoints import ENV as FAILPOINT_ENV


def checkpoint(run_dir: Path, step: int) -> Path:
    """A complete checkpoint as the learner and the driver write it (small files standing in for the real ones)."""
    folder = Path(checkpoint_dir(str(run_dir), step))
    (folder / "policy").mkdir(parents=True)
    (folder / "deepspeed" / "state").mkdir(parents=True)
    (folder / "policy" / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    (folder / "deepspeed" / "state" / "mp_rank_00_model_states.pt").write_bytes(b"pickled state %d" % step)
    write_driver_state(str(folder), {"step": step, "sampler": {"epoch": 0, "position": step}})
    return folder


# ---- the hash manifest -------------------------------------------------------------------------------------------------
def test_the_manifest_lists_every_file_with_its_sha256_and_verifies(tmp_path):
    folder = checkpoint(tmp_path, 2)
    manifest = read_manifest(folder)
    assert set(manifest) == {"policy/model.safetensors", "deepspeed/state/mp_rank_00_model_states.pt", "driver_state.json"}
    verify_checkpoint(str(folder))
    assert latest_checkpoint(str(tmp_path)) == str(folder)
    if shutil.which("sha256sum"):  # the format sha256sum reads
        subprocess.run(["sha256sum", "--quiet", "-c", MANIFEST], cwd=folder, check=True)


@pytest.mark.parametrize("part", ["deepspeed/state/mp_rank_00_model_states.pt", "driver_state.json"])
def test_a_one_byte_edit_is_refused_naming_the_file(tmp_path, part):
    folder = checkpoint(tmp_path, 4)
    target = folder / part
    data = bytearray(target.read_bytes())
    data[5] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointIntegrityError, match=f"{target} does not match {MANIFEST}.*trusted code"):
        verify_checkpoint(str(folder))


def test_added_missing_and_unlisted_files_are_refused(tmp_path):
    folder = checkpoint(tmp_path, 4)
    (folder / "deepspeed" / "state" / "extra.pt").write_bytes(b"cos\nsystem\n")  # a file DeepSpeed might be led to load
    with pytest.raises(CheckpointIntegrityError, match=r"extra\.pt is not in manifest\.sha256"):
        verify_checkpoint(str(folder))
    (folder / "deepspeed" / "state" / "extra.pt").unlink()
    (folder / "policy" / "model.safetensors").unlink()
    with pytest.raises(CheckpointIntegrityError, match=r"model\.safetensors is listed in manifest\.sha256 but missing"):
        verify_checkpoint(str(folder))


def test_a_checkpoint_without_manifest_is_skipped_by_resume_and_refused_by_verify(tmp_path, caplog):
    older = checkpoint(tmp_path, 2)
    newer = checkpoint(tmp_path, 4)
    (newer / MANIFEST).unlink()
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(str(tmp_path)) == str(older)
    assert f"skipping checkpoint {newer}: no {MANIFEST}" in caplog.text
    with pytest.raises(CheckpointIntegrityError, match="refusing to load it unverified"):
        verify_checkpoint(str(newer))


class _RecordingLearner:
    def __init__(self):
        self.loaded = []

    def load_checkpoint(self, path):
        self.loaded.append(path)
        return {}


def test_resume_refuses_an_edited_checkpoint_before_the_learner_loads_anything(tmp_path):
    from cluster.data import EpochSampler
    from cluster.driver import begin

    folder = checkpoint(tmp_path, 4)
    cfg = SimpleNamespace(trainer=SimpleNamespace(seed=0, sft_warmup_steps=0))
    pools = SimpleNamespace(learner=_RecordingLearner())
    sampler = EpochSampler(8, 0)
    sampler.take(4)
    state = json.loads((folder / "driver_state.json").read_text())
    state["sampler"] = sampler.state()
    # re-complete it with a real sampler state (its manifest rewritten by the run itself), then resume once
    write_driver_state(str(folder), state)
    assert begin(cfg, tmp_path, pools, EpochSampler(8, 0), list(range(8)), resume=True) == (4, True)
    assert pools.learner.loaded == [str(folder)]

    state_file = folder / "deepspeed" / "state" / "mp_rank_00_model_states.pt"
    state_file.write_bytes(state_file.read_bytes()[:-1] + b"X")
    pools.learner.loaded.clear()
    with pytest.raises(CheckpointIntegrityError, match=str(state_file)):
        begin(cfg, tmp_path, pools, EpochSampler(8, 0), list(range(8)), resume=True)
    assert pools.learner.loaded == []


# ---- a full disk at checkpoint time ------------------------------------------------------------------------------------
class _Learner:
    """Writes a checkpoint as learner.checkpoint.save does: into <dir>.tmp, renamed into place; `fail` raises as a learner
    whose disk filled up would (after leaving its partial .tmp folder)."""

    def __init__(self, fail: Exception | None = None):
        self.fail = fail

    def save_checkpoint(self, target: str, client_state: dict) -> str:
        tmp = Path(target + ".tmp")
        (tmp / "deepspeed").mkdir(parents=True)
        (tmp / "deepspeed" / "state.pt").write_bytes(json.dumps(client_state).encode())
        if self.fail is not None:
            raise self.fail
        (tmp / "policy").mkdir()
        (tmp / "policy" / "model.safetensors").write_bytes(b"weights")
        os.replace(tmp, target)
        return target


def _setup(tmp_path, policy: str, learner: _Learner):
    from cluster.data import EpochSampler

    cfg = SimpleNamespace(run_dir=str(tmp_path), trainer=SimpleNamespace(keep_checkpoints=2, checkpoint_failure=policy),
                          learner=SimpleNamespace(num_replicas=1))
    pools = SimpleNamespace(learner=learner, checkpoint_failures=0)
    return cfg, pools, EpochSampler(8, 0)


@pytest.mark.parametrize("source", ["failpoint", "learner"])
def test_a_full_disk_with_continue_keeps_the_previous_checkpoint_and_counts_the_failure(tmp_path, monkeypatch, caplog, source):
    import ray

    from cluster.driver import save_checkpoint

    learner = _Learner()
    cfg, pools, sampler = _setup(tmp_path, "continue", learner)
    assert save_checkpoint(cfg, pools, sampler, 2) is True
    previous = Path(checkpoint_dir(str(tmp_path), 2))
    before = {name: (previous / name).read_bytes() for name in read_manifest(previous)}

    target = Path(checkpoint_dir(str(tmp_path), 4))
    if source == "failpoint":  # the driver's write of the manifest fails: the learner's part is complete by then
        monkeypatch.setenv(FAILPOINT_ENV, "checkpoint.enospc@4")
        where = target / MANIFEST
    else:  # the learner's own write fails: Ray hands the driver its OSError as the cause of a RayTaskError
        where = target.with_name(target.name + ".tmp") / "deepspeed" / "state.pt"
        learner.fail = ray.exceptions.RayTaskError("save_checkpoint", "Traceback ...", OSError(errno.ENOSPC, "No space left on device", str(where)))
    with caplog.at_level(logging.WARNING):
        assert save_checkpoint(cfg, pools, sampler, 4) is False
    assert pools.checkpoint_failures == 1
    assert f"checkpoint of step 4 failed: No space left on device ({where})" in caplog.text
    assert f"the newest complete checkpoint is {previous}" in caplog.text
    assert not target.exists() and not target.with_name(target.name + ".tmp").exists()  # nothing partial left
    assert latest_checkpoint(str(tmp_path)) == str(previous)
    assert {name: (previous / name).read_bytes() for name in read_manifest(previous)} == before
    verify_checkpoint(str(previous))

    monkeypatch.delenv(FAILPOINT_ENV, raising=False)
    learner.fail = None
    assert save_checkpoint(cfg, pools, sampler, 6) is True  # the next checkpoint is written as usual
    assert latest_checkpoint(str(tmp_path)) == checkpoint_dir(str(tmp_path), 6)


def test_a_full_disk_with_stop_stops_naming_the_path_and_the_resume(tmp_path, monkeypatch):
    from cluster.preemption import EXIT_CHECKPOINT_FAILED, CheckpointFailed
    from cluster.driver import save_checkpoint

    cfg, pools, sampler = _setup(tmp_path, "stop", _Learner())
    assert save_checkpoint(cfg, pools, sampler, 2)
    monkeypatch.setenv(FAILPOINT_ENV, "checkpoint.enospc@4")
    with pytest.raises(CheckpointFailed) as stopped:
        save_checkpoint(cfg, pools, sampler, 4)
    target = checkpoint_dir(str(tmp_path), 4)
    assert f"({target}/{MANIFEST})" in str(stopped.value)
    assert f"the newest complete checkpoint is {checkpoint_dir(str(tmp_path), 2)}" in str(stopped.value)
    assert stopped.value.resume == f"embodied-r train --config {tmp_path}/config.yaml trainer.resume=true"
    assert stopped.value.exit_code == EXIT_CHECKPOINT_FAILED == 74
    assert not Path(target).exists()


def test_a_learner_that_failed_otherwise_is_not_taken_for_a_full_disk(tmp_path):
    import ray

    from cluster.driver import save_checkpoint

    cfg, pools, sampler = _setup(tmp_path, "continue", _Learner(fail=ray.exceptions.RayTaskError("f", "tb", ValueError("bug"))))
    with pytest.raises(ray.exceptions.RayTaskError):
        save_checkpoint(cfg, pools, sampler, 2)
    assert pools.checkpoint_failures == 0


def test_the_enospc_failpoint_is_inert_unless_named(monkeypatch):
    from cluster.failpoints import failpoint_error

    monkeypatch.delenv(FAILPOINT_ENV, raising=False)
    failpoint_error("checkpoint.enospc", 4, "/x")
    monkeypatch.setenv(FAILPOINT_ENV, "checkpoint.enospc@4")
    failpoint_error("checkpoint.enospc", 3, "/x")
    with pytest.raises(OSError) as raised:
        failpoint_error("checkpoint.enospc", 4, "/x/manifest.sha256")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == "/x/manifest.sha256"
    monkeypatch.setenv(FAILPOINT_ENV, "checkpoint.enospc@*")
    with pytest.raises(OSError):
        failpoint_error("checkpoint.enospc", 7, "/x")


# ---- SIGTERM ----------------------------------------------------------------------------------------------------------
def test_sigterm_sets_the_flag_and_the_grace_watchdog_abandons_with_exit_75(tmp_path, capsys):
    from cluster.preemption import EXIT_PREEMPTED, Preemption

    exits = []
    done = threading.Event()
    preemption = Preemption(0.3, tmp_path, lambda: str(tmp_path / "checkpoints" / "step_000002"),
                            exit=lambda code: (exits.append(code), done.set()))
    preemption.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not preemption.requested and time.monotonic() < deadline:
            time.sleep(0.01)  # the handler runs in the main thread between bytecodes
        assert preemption.requested and exits == []
        assert done.wait(5), "the grace watchdog never fired"
    finally:
        preemption.uninstall()
    assert exits == [EXIT_PREEMPTED] == [75]
    err = capsys.readouterr().err
    assert "trainer.preemption_grace_s=0.3 s ran out" in err
    assert f"A resume starts from {tmp_path}/checkpoints/step_000002: embodied-r train --config {tmp_path}/config.yaml trainer.resume=true" in err
    assert signal.getsignal(signal.SIGTERM) is not preemption._handle  # the previous handler is back


def test_a_run_checkpointed_within_the_grace_cancels_the_watchdog_and_a_second_sigterm_abandons_at_once(tmp_path):
    from cluster.preemption import Preemption

    exits = []
    preemption = Preemption(0.2, tmp_path, lambda: None, exit=exits.append)
    preemption.request()
    preemption.cancel()
    time.sleep(0.4)
    assert exits == []
    preemption._handle(signal.SIGTERM, None)  # the second one
    assert exits == [75]


@pytest.mark.parametrize("error, code", [("Preempted", 75), ("CheckpointFailed", 74)])
def test_the_command_exits_with_the_distinct_code_and_prints_the_resume_command(monkeypatch, capsys, error, code):
    import cluster.preemption as preemption
    import cluster.driver as train_module
    from cluster.train import build_arg_parser, run_from_args

    def stopped(cfg):
        raise getattr(preemption, error)("preempted (SIGTERM): checkpoint X holds step 3", "embodied-r train --config r/config.yaml trainer.resume=true")

    monkeypatch.setattr(train_module, "train", stopped)
    assert run_from_args(build_arg_parser().parse_args(["--config", "configs/tiny.yaml"])) == code
    assert "resume with: embodied-r train --config r/config.yaml trainer.resume=true" in capsys.readouterr().err


# ---- the learner's RNG file ----------------------------------------------------------------------------------------------
class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def test_the_rng_state_file_is_read_weights_only(tmp_path):
    import random

    import torch

    from learner.checkpoint import load_rng_state, rng_state, set_rng_state

    path = tmp_path / "rank_0.pt"
    torch.save(rng_state(), path)
    expected = (torch.rand(3), random.random())
    set_rng_state(load_rng_state(path))
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]

    with path.open("wb") as handle:
        pickle.dump({"torch": _Payload()}, handle, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_rng_state(path)
