"""`embodied-r config`: the resolved tree train would run, and the config check, without importing the driver."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli", "config", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_print_shows_the_resolved_tree_with_file_and_overrides():
    done = run("--print", "--config", "configs/tiny.yaml", "trainer.steps=3", "run_dir=/tmp/x")
    assert done.returncode == 0, done.stderr
    tree = yaml.safe_load(done.stdout)
    assert tree["trainer"]["steps"] == 3  # the override
    assert tree["sampling"]["num_samples"] == 4  # from the file
    assert tree["data"]["synthetic"]["out_dir"] == "/tmp/x/data"  # interpolations resolved
    assert tree["learner"]["grpo"]["kl_estimator"] == "k3"  # a typed choice prints as its value


def test_bad_values_are_all_named_and_refused():
    done = run("learner.grpo.kl_estimator=k9", "rewards.judge.timeout_s=-1", "rollout.dtype=fp8x")
    assert done.returncode == 2
    assert "learner.grpo.kl_estimator must be one of k1, k2, k3; got 'k9'" in done.stderr
    assert "rewards.judge.timeout_s must be > 0" in done.stderr
    assert "rollout.dtype must be one of auto, float32, bfloat16, float16; got 'fp8x'" in done.stderr
