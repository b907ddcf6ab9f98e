"""The local Ray instance of `start_ray`: bound to loopback only, and gone with its driver, even a SIGKILLed one.

Each test runs its own driver in a subprocess (start_ray("", 2, ...) plus one trivial actor) and inspects that
driver's process tree and its session's processes with psutil; other Ray instances on the machine are never touched.
Every wait is bounded: a driver that does not answer in time is killed and the test fails.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

DRIVER = """
import os, sys
sys.path.insert(0, sys.argv[1])
from cluster.runtime import start_ray
import ray

start_ray("", 2, "test-cluster-runtime")

@ray.remote(num_cpus=0)
class Probe:
    def pid(self):
        return os.getpid()

probe = Probe.remote()
print("ACTOR", ray.get(probe.pid.remote(), timeout=120), flush=True)
print("SESSION", ray._private.worker._global_node.get_session_dir_path(), flush=True)
print("READY", flush=True)
for line in sys.stdin:
    if line.strip() == "shutdown":
        ray.shutdown()
        print("SHUT", flush=True)
"""


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie: a zombie has exited and only waits for its parent to read its status."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _spawn_driver() -> subprocess.Popen:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(ROOT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )


def _read_until(driver: subprocess.Popen, last: str, timeout: float) -> dict[str, str]:
    """The driver's "KEY value" lines up to the line `last`; a driver silent for `timeout` s is killed (EOF ends it)."""
    reported = {}
    timer = threading.Timer(timeout, driver.kill)
    timer.start()
    try:
        for line in driver.stdout:
            key, _, value = line.strip().partition(" ")
            reported[key] = value
            if key == last:
                break
    finally:
        timer.cancel()
    return reported


def _start_driver() -> tuple[subprocess.Popen, int, str]:
    """A driver with its local Ray instance up and one actor; returns it, the actor's pid and the session dir."""
    driver = _spawn_driver()
    reported = _read_until(driver, "READY", timeout=180)
    if "ACTOR" not in reported or "SESSION" not in reported:
        driver.kill()
        driver.wait(10)
        pytest.fail(f"the driver did not start its Ray instance and actor: {reported}")
    return driver, int(reported["ACTOR"]), reported["SESSION"]


def _session_processes(driver: subprocess.Popen) -> list[psutil.Process]:
    return psutil.Process(driver.pid).children(recursive=True)


def _watchdogs(driver_pid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        ours = any(arg.startswith(f"{driver_pid}:") for arg in cmdline)  # the driver's pid:start-time
        if "embodied-r-ray-watchdog" in cmdline and ours and _alive(proc):
            found.append(proc)
    return found


def _session_members(session_dir: str, exclude: int = 0) -> list[psutil.Process]:
    """Every running process that names the session dir in its command line or holds a file in it open (Ray's
    processes write their logs there, the agents included, whose command line Ray overwrites)."""
    members = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid in (os.getpid(), exclude):
            continue
        try:
            named = session_dir in " ".join(proc.info["cmdline"] or [])
            if (named or any(f.path.startswith(session_dir) for f in proc.open_files())) and _alive(proc):
                members.append(proc)
        except psutil.Error:
            pass
    return members


def _wait_until_gone(
    procs: list[psutil.Process], timeout: float, session_dir: str = "", exclude: int = 0
) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        left = {p.pid: p for p in procs if _alive(p)}
        if session_dir:
            left.update((p.pid, p) for p in _session_members(session_dir, exclude))
        if not left or time.monotonic() > deadline:
            return list(left.values())
        time.sleep(0.5)


def _describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for proc in procs:
        try:
            out.append(f"{proc.pid} {proc.name()}")
        except psutil.Error:
            out.append(f"{proc.pid} (gone)")
    return out


def _stop(driver: subprocess.Popen, procs: list[psutil.Process], session_dir: str = "") -> None:
    """Test teardown: never leave this test's own processes behind, whatever the code under test did."""
    if driver.poll() is None:
        driver.kill()
    driver.wait(10)
    for proc in procs + _watchdogs(driver.pid) + (_session_members(session_dir) if session_dir else []):
        try:
            proc.kill()
        except psutil.Error:
            pass


def _is_loopback(host: str) -> bool:
    address = ipaddress.ip_address(host.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a gRPC server bound to 127.0.0.1 on an IPv6 socket reads ::ffff:127.0.0.1
    return address.is_loopback


def test_sigkilled_driver_leaves_no_process_of_its_ray_session():
    driver, actor_pid, session_dir = _start_driver()
    procs = _session_processes(driver)
    try:
        names = {p.name() for p in procs}
        # The processes that outlived the driver before the fix, and the actor: the test must see them to mean anything.
        assert {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= names, names
        assert actor_pid in {p.pid for p in procs}
        assert {p.pid for p in procs} <= {p.pid for p in _session_members(session_dir)}  # both ways of finding them
        watchdogs = _watchdogs(driver.pid)  # the fix's own helper process must go too

        started = time.monotonic()
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        left = _wait_until_gone(procs + watchdogs, timeout=20, session_dir=session_dir)
        waited = time.monotonic() - started
        assert not left, f"still running {waited:.1f} s after the driver's SIGKILL: {_describe(left)}"
    finally:
        _stop(driver, procs, session_dir)


def test_driver_sigkilled_inside_ray_init_leaves_no_process():
    driver = _spawn_driver()
    procs: list[psutil.Process] = []
    session_dir = ""
    try:
        # Kill as soon as the raylet runs: ray.init has not returned, the agents are starting or just started.
        deadline = time.monotonic() + 120
        raylet = None
        while raylet is None and time.monotonic() < deadline and driver.poll() is None:
            procs = _session_processes(driver)
            raylet = next((p for p in procs if p.name() == "raylet"), None)
            time.sleep(0.05)
        assert raylet is not None, "the driver never started a raylet"
        session_dir = re.search(r"(/[^\s=]*/session_[^/\s]+)", " ".join(raylet.cmdline())).group(1)
        watchdogs = _watchdogs(driver.pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        left = _wait_until_gone(procs + watchdogs, timeout=20, session_dir=session_dir)
        assert not left, f"still running 20 s after a SIGKILL inside ray.init: {_describe(left)}"
    finally:
        _stop(driver, procs, session_dir)


def test_local_instance_listens_on_loopback_only_and_its_watchdog_leaves_with_ray_shutdown():
    driver, _, session_dir = _start_driver()
    procs = _session_processes(driver)
    try:
        listening, exposed = [], []
        for proc in [psutil.Process(driver.pid)] + procs:
            try:
                connections = proc.net_connections(kind="tcp")
                name = proc.name()
            except psutil.NoSuchProcess:
                continue
            for conn in connections:
                if conn.status == psutil.CONN_LISTEN:
                    listening.append((proc.pid, name, conn.laddr))
                    if not _is_loopback(conn.laddr.ip):
                        exposed.append((proc.pid, name, f"{conn.laddr.ip}:{conn.laddr.port}"))
        listeners = {name for _, name, _ in listening}
        # gcs_server, raylet, the driver's and the actor's core workers (gRPC) and both agents all listen somewhere.
        expected = {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::Probe"}
        assert expected <= listeners, listening
        assert driver.pid in {pid for pid, _, _ in listening}
        assert not exposed, f"listening beyond loopback: {exposed}"

        watchdogs = _watchdogs(driver.pid)
        assert len(watchdogs) == 1
        driver.stdin.write("shutdown\n")
        driver.stdin.flush()
        assert "SHUT" in _read_until(driver, "SHUT", timeout=60)
        # ray.shutdown() in a driver that lives on: the session's processes and its watchdog go, the driver stays.
        left = _wait_until_gone(procs + watchdogs, timeout=15, session_dir=session_dir, exclude=driver.pid)
        assert not left, f"still running after ray.shutdown(): {_describe(left)}"
        assert driver.poll() is None
        driver.stdin.close()
        assert driver.wait(30) == 0
    finally:
        _stop(driver, procs, session_dir)
