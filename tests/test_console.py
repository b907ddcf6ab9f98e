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
logs = ray._private.worker._global_node.get_session_dir_path() + "/logs"
def in_log_files():
    return any("ACTOR-CHATTER-OUT" in open(p, errors="replace").read() for p in glob.glob(logs + "/worker-*.out"))
deadline = time.monotonic() + 15
while not in_log_files() and time.monotonic() < deadline:
    time.sleep(0.2)
time.sleep(2)  # the log monitor forwards lines to the driver on its own schedule: room for it to (wrongly) print them
print("IN-LOG-FILES", in_log_files(), flush=True)
ray.shutdown()
"""


def _start(verbose: bool) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "EMBODIED_R_VERBOSE"}
    if verbose:
        env["EMBODIED_R_VERBOSE"] = "1"
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(ROOT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _output(driver: subprocess.Popen) -> str:
    out, err = driver.communicate(timeout=240)
    assert driver.returncode == 0, err[-3000:]
    return out + err


def test_actor_output_goes_to_its_log_files_unless_verbose():
    # Two local Ray sessions side by side: most of each driver's time is Ray starting and stopping.
    quiet_driver, loud_driver = _start(verbose=False), _start(verbose=True)
    quiet, loud = _output(quiet_driver), _output(loud_driver)
    assert "ACTOR-CHATTER" not in quiet and "IN-LOG-FILES True" in quiet
    assert "--verbose prints it here" in quiet  # the driver says where the actors' output went
    assert "ACTOR-CHATTER-OUT" in loud and "ACTOR-CHATTER-ERR" in loud
