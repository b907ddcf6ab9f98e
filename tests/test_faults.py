"""The fault suite: real training runs (real Ray, DeepSpeed, gloo, transformers) in their own driver processes, with a
rollout worker, a learner rank or the driver itself SIGKILLed mid-run. Each run must end with the metrics of the run
that lost nothing (timings and fault counts aside), bit for bit.

Every run is bounded: a watchdog kills the driver after RUN_TIMEOUT_S, and each kill waits a bounded time for its target.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 420
STEPS = 6
OVERRIDES = [
    f"trainer.steps={STEPS}",
    "trainer.checkpoint_every=2",
    "trainer.keep_checkpoints=3",
    "trainer.prompts_per_step=2",
    "trainer.sft_warmup_steps=40",  # enough for the answer format, so rewards and advantages are not all 0
    "trainer.progress=false",
    "trainer.verify_sync=true",
    "data.synthetic.scenes=2",
    "data.synthetic.questions_per_scene=4",
    "sampling.max_new_tokens=48",
    # consistency on from the first step, so the judge pool is part of every run
    "rewards.stages=[{start: 0, format: 0.1, accuracy: 0.7, consistency: 0.2}]",
]


def comparable(row: dict) -> dict:
    """A metrics row less what may differ between equal runs: timings (time/*, any *_s), throughput, fault counts."""
    return {
        key: value for key, value in row.items()
        if not key.startswith(("time/", "throughput/", "faults/")) and not key.endswith("_s")
    }


def read_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def start_run(run_dir: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "cluster.train", "--config", str(ROOT / "configs" / "tiny.yaml"),
               f"run_dir={run_dir}", *OVERRIDES, *extra]
    log = (run_dir / "driver.out").open("ab")
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RAY_AUTH_MODE": "disabled"})


def finish(process: subprocess.Popen, run_dir: Path) -> None:
    try:
        process.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_tree(process.pid)
        pytest.fail(f"the run in {run_dir} did not finish within {RUN_TIMEOUT_S} s; see {run_dir / 'driver.out'}")
    assert process.returncode == 0, (run_dir / "driver.out").read_text()[-4000:]


def kill_tree(pid: int) -> None:
    try:
        parent = psutil.Process(pid)
        family = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for process in family:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def wait_for(condition, timeout_s: float, what: str, process: subprocess.Popen):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if process.poll() is not None:
            pytest.fail(f"the run ended (rc {process.returncode}) before {what}")
        time.sleep(0.05)
    kill_tree(process.pid)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def actor_process(driver: subprocess.Popen, title_prefix: str):
    """A process of the driver's own Ray instance whose title (Ray sets it to ray::Class.method) starts so."""
    try:
        descendants = psutil.Process(driver.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for process in descendants:
        try:
            title = " ".join(process.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if title.startswith(title_prefix):
            return process
    return None


def prepared_run_dir(tmp_path: Path, baseline: Path) -> Path:
    """A run dir holding the baseline's data, tiny models and description cache (built deterministically; copying
    them saves each run the build), with no checkpoint or metrics."""
    run_dir = tmp_path / "run"
    for part in ("data", "models", "perception_cache"):
        if (baseline / part).exists():
            shutil.copytree(baseline / part, run_dir / part)
    run_dir.mkdir(exist_ok=True)
    return run_dir


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("baseline")
    finish(start_run(run_dir), run_dir)
    rows = read_rows(run_dir)
    assert [row["step"] for row in rows] == list(range(1, STEPS + 1))
    assert all(row["faults/rollout_workers_replaced"] == 0 and row["faults/learner_restarts"] == 0 for row in rows)
    assert any(row["reward/total"] > 0 for row in rows) and any(row["grad_norm"] for row in rows)
    return run_dir


def assert_same_run(run_dir: Path, baseline: Path) -> list[dict]:
    rows, expected = read_rows(run_dir), read_rows(baseline)
    assert [row["step"] for row in rows] == list(range(1, STEPS + 1))
    for row, want in zip(rows, expected):
        assert comparable(row) == comparable(want), f"step {row['step']} differs"
    return rows


def test_a_rollout_worker_killed_while_generating_is_replaced_and_the_run_is_unchanged(tmp_path, baseline):
    run_dir = prepared_run_dir(tmp_path, baseline)
    driver = start_run(run_dir)
    # Step 4 is under way (3 rows written) and a worker is in generate: kill that worker.
    wait_for(lambda: len(read_rows(run_dir)) >= 3, RUN_TIMEOUT_S, "step 3's metrics", driver)
    victim = wait_for(lambda: actor_process(driver, "ray::RolloutWorker.generate_with_stats"), 120, "a generating worker", driver)
    victim.kill()
    finish(driver, run_dir)
    rows = assert_same_run(run_dir, baseline)
    assert rows[-1]["faults/rollout_workers_replaced"] == 1
    assert all(row["sync/match"] == 1.0 for row in rows)  # the replacement held the learner's weights from then on
    assert "rollout: actor" in (run_dir / "train.log").read_text() and "is dead" in (run_dir / "train.log").read_text()


def test_a_learner_rank_killed_mid_run_restarts_from_the_checkpoint_and_the_run_is_unchanged(tmp_path, baseline):
    run_dir = prepared_run_dir(tmp_path, baseline)
    driver = start_run(run_dir)
    wait_for(lambda: len(read_rows(run_dir)) >= 3, RUN_TIMEOUT_S, "step 3's metrics", driver)
    victim = wait_for(lambda: actor_process(driver, "ray::Learner"), 60, "the learner's process", driver)
    victim.kill()
    finish(driver, run_dir)
    rows = assert_same_run(run_dir, baseline)
    assert rows[-1]["faults/learner_restarts"] == 1
    log_text = (run_dir / "train.log").read_text()
    assert "learner lost" in log_text and "rebuilding it from the last checkpoint" in log_text


def test_a_killed_driver_leaves_a_run_that_resumes_to_the_same_metrics(tmp_path, baseline):
    run_dir = prepared_run_dir(tmp_path, baseline)
    driver = start_run(run_dir)
    wait_for(lambda: len(read_rows(run_dir)) >= 3, RUN_TIMEOUT_S, "step 3's metrics", driver)
    descendants = psutil.Process(driver.pid).children(recursive=True)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    # Nothing of the killed driver's Ray instance outlives it for long.
    gone, alive = psutil.wait_procs(descendants, timeout=30)
    assert not alive, [" ".join(p.cmdline()) for p in alive if p.is_running()]
    assert (run_dir / "checkpoints" / "step_000002" / "driver_state.json").is_file()
    finish(start_run(run_dir, "trainer.resume=true"), run_dir)
    assert_same_run(run_dir, baseline)
    assert "resumed from" in (run_dir / "train.log").read_text()
