"""The console of a local run (issue 26 item 5): an actor's own output (library bars, warnings) stays in the Ray
session's worker log files, and the driver prints it only with --verbose (EMBODIED_R_VERBOSE=1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

DRIVER = """
import glob, logging, sys, time
logging.basicConfig(level=logging.INFO)
sys.path.insert(0, sys.argv[1])
from cluster.runtime import start_ray
import ray
start_ray("", 1, "console-test")

@ray.remote(num_cpus=0)
def chatter():
    import sys
    print("ACTOR-CHATTER-OUT Loading weights 100%", flush=True)
    print("ACTOR-CHATTER-ERR a library warning", file=sys.stderr, flush=True)
    return 1

assert ray.get(chatter.remote()) == 1
time.sleep(2)  # the log monitor forwards lines on its own schedule
logs = ray._private.worker._global_node.get_session_dir_path() + "/logs"
found = any("ACTOR-CHATTER-OUT" in open(p, errors="replace").read() for p in glob.glob(logs + "/worker-*.out"))
print("IN-LOG-FILES", found, flush=True)
ray.shutdown()
"""


def _drive(verbose: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != "EMBODIED_R_VERBOSE"}
    if verbose:
        env["EMBODIED_R_VERBOSE"] = "1"
    done = subprocess.run([sys.executable, "-c", DRIVER, str(ROOT)], capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_actor_output_goes_to_its_log_files_unless_verbose():
    quiet = _drive(verbose=False)
    assert "ACTOR-CHATTER" not in quiet and "IN-LOG-FILES True" in quiet
    assert "--verbose prints it here" in quiet  # the driver says where the actors' output went
    loud = _drive(verbose=True)
    assert "ACTOR-CHATTER-OUT" in loud and "ACTOR-CHATTER-ERR" in loud
