"""Starting or joining Ray, with the environment every actor needs (DeepSpeed's op cache, the venv's tools on PATH)."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

WATCHDOG_MARK = "embodied-r-ray-watchdog"  # first argument of the watchdog process, so it can be found in `ps`
VERBOSE_ENV = "EMBODIED_R_VERBOSE"  # `--verbose`: the actors' own output is printed by the driver too


def actors_to_console() -> bool:
    """Whether a local run prints its actors' output (their libraries' "Loading weights" bars, warnings, Ray's
    deduplication notices) between the driver's lines: only with --verbose ($EMBODIED_R_VERBOSE=1). Otherwise it stays
    in each worker's log files in the Ray session's logs/ folder, and the console shows the driver's log and progress
    bar; an actor's error still reaches the driver with its traceback (Ray raises it from the call)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def default_extensions_dir() -> str:
    """DeepSpeed compiles its C++ ops on first use (e.g. CPU Adam for learner.offload with DeepSpeed's optimizer, minutes
    on 2 cores; the shared-memory comm op is no longer built, see learner/engine.py); a stable cache folder pays that
    once per environment.

    One folder per Python environment: two virtual environments sharing one folder rebuild the op each time the other
    one loads it (the compile command names the venv's paths), and make each other wait on the build lock.
    """
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return os.environ["TORCH_EXTENSIONS_DIR"]
    environment = hashlib.sha256(sys.prefix.encode()).hexdigest()[:10]
    return str(Path.home() / ".cache" / "embodied-r" / "torch_extensions" / environment)


def actor_env() -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if venv_bin not in path.split(os.pathsep):
        path = venv_bin + os.pathsep + path  # DeepSpeed rebuilds its op when a different `ninja` comes first
    env = {
        "TORCH_EXTENSIONS_DIR": default_extensions_dir(),
        "PATH": path,
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    os.environ.update(env)
    return env


def start_ray(address: str, num_cpus: int | None, namespace: str) -> None:
    import ray

    if ray.is_initialized():
        return
    env = actor_env()
    address = address or os.environ.get("RAY_ADDRESS", "")  # `ray job submit` runs the driver with RAY_ADDRESS set
    if address:
        # A cluster: the job's runtime env (working dir, pip, env vars) applies to every actor; adding our own here
        # would replace it, so the cluster's nodes are expected to have the project's environment (see README).
        ray.init(address=address, namespace=namespace, log_to_driver=True)
        log.info("joined Ray cluster at %s: %s", address, ray.cluster_resources())
        return
    # A local, in-process cluster. Token auth is off, so it must be reachable only from this machine: every Ray
    # process binds to loopback (_loopback_node) instead of all interfaces (STACK.md: Ray 2.60 turns token auth on by
    # default and a later `ray job submit` would fail without a matching token).
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    watchdog = _start_watchdog()  # first, so a driver killed inside ray.init leaves nothing behind either
    try:
        with _loopback_node():
            ray.init(
                # "local": a private instance even when `ray start` left a cluster on this machine (a bare init
                # would join it)
                address="local",
                _node_ip_address="127.0.0.1",
                num_cpus=num_cpus or os.cpu_count(),
                namespace=namespace,
                include_dashboard=False,
                log_to_driver=actors_to_console(),
                runtime_env={"env_vars": env},
            )
        if watchdog is not None:
            watchdog.write(ray._private.worker._global_node.get_session_dir_path() + "\n")
            watchdog.flush()
    except BrokenPipeError:
        log.warning("the Ray watchdog has gone: a SIGKILL of this driver would leave Ray's agents running")
    finally:
        if watchdog is not None:
            try:
                watchdog.close()  # without the session line (ray.init failed) it ends what ray.init had started
            except BrokenPipeError:
                pass
    if (node_ip := ray.util.get_node_ip_address()) != "127.0.0.1":
        log.warning("local Ray runs on %s, not loopback: its ports are open to the network", node_ip)
    log.info("started local Ray: %s", ray.cluster_resources())
    if not actors_to_console():
        log.info("actors' output is in %s/logs/worker-*.out|err (--verbose prints it here)",
                 ray._private.worker._global_node.get_session_dir_path())


@contextmanager
def _loopback_node() -> Iterator[None]:
    """Makes the local instance's node IP 127.0.0.1 while ray.init runs; Ray then binds every server to loopback.

    Ray's C++ servers (GCS, raylet, each worker's and the driver's core worker) bind to 127.0.0.1 when the node IP is a
    loopback address, and so do the dashboard agent, the runtime-env agent and the metrics servers; with any other
    node IP they bind to 0.0.0.0/[::]. But ray.init replaces a loopback `_node_ip_address` with the machine's
    routable IP unless Ray believes clusters are off (its macOS/Windows default): RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
    which Ray reads once at import, hence the module constant as well. Both are restored afterwards, so a later
    ray.init in this process that joins a real cluster still finds this machine's routable IP.
    """
    from ray._private import ray_constants

    variable = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved_env, saved_flag = os.environ.get(variable), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[variable] = "0"  # the processes ray.init starts inherit it
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = saved_env


# Run by `python -S` (no site import, ~10 ms to start where a full start-up took 50-200 ms on a busy machine): the
# launcher forks and returns at once (the driver reaps it, so the watchdog is never the driver's zombie); the fork
# loads site (psutil) and watches. This module needs nothing beyond the stdlib at import.
_WATCHDOG_LAUNCHER = """
import os, sys
if os.fork():
    os._exit(0)
import site
site.main()
sys.path.insert(0, sys.argv[2])
from cluster.runtime import watch_session
watch_session(sys.argv[3:])
"""


def _start_watchdog():
    """Starts the process that ends this driver's local Ray session if the driver dies without shutting it down.

    Ray ties the GCS, raylet and its other direct children to the driver (they get SIGKILL when it dies), but not the
    raylet's children: after a SIGKILL of the driver, `ray::DashboardAgent` and `ray::RuntimeEnvAgent` kept running
    for about a minute (they wait on the dead GCS), the workers for a few seconds. The watchdog runs in its own session
    (a Ctrl-C or a kill of the driver's process group passes it by) with none of the driver's output streams, so it
    never holds a pipe a caller reads to its end. Returns the pipe that takes the session dir once ray.init has
    returned (see watch_session), or None when no watchdog could start (the run goes on without one).
    """
    import psutil
    import ray

    try:
        launcher = subprocess.Popen(
            [sys.executable, "-S", "-c", _WATCHDOG_LAUNCHER, WATCHDOG_MARK, str(Path(__file__).resolve().parents[1]),
             f"{os.getpid()}:{psutil.Process().create_time()!r}", os.path.dirname(ray.__file__)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, cwd="/",
            start_new_session=True,
        )
    except OSError as error:
        log.warning("no watchdog for the local Ray instance (%s): a SIGKILL of this driver would leave Ray's agents "
                    "running", error)
        return None
    try:
        launcher.wait(timeout=30)
    except subprocess.TimeoutExpired:
        log.warning("the Ray watchdog did not start in 30 s: a SIGKILL of this driver would leave Ray's agents running")
        launcher.kill()
        launcher.stdin.close()
        return None
    return launcher.stdin


POLL_S = 0.5  # how often the watchdog checks the driver and the session
RECORD_S = 5.0  # how often it records the processes the session started since (workers), once ray.init is done
GRACE_S = 1.0  # how long leftovers get to exit on their own, then again after SIGTERM, before SIGKILL


def watch_session(argv: list[str]) -> None:
    """The watchdog's body. argv: the driver's pid:start-time and Ray's package directory; stdin: the session dir.

    The session's processes: the driver's children born after the watchdog that run from Ray's package (GCS, raylet,
    monitor, log monitor, dashboard) and every descendant of theirs seen while they lived (the raylet's agents and
    workers, orphaned as soon as the raylet dies, so recorded as they come: each POLL_S while ray.init runs, each
    RECORD_S after). Once the driver has written the session dir, only children naming it count and no new ones are
    taken (a later session of the same driver has its own watchdog). At the end, the processes of the session born
    since the last record are found by their open files (see record_orphans).
    The end: the driver has gone (exited, killed, a zombie), stdin closed without a session dir (the driver died or
    ray.init failed), or the session's GCS and raylet have gone (ray.shutdown). Then each recorded process still
    running gets GRACE_S, SIGTERM, GRACE_S, then SIGKILL. Nothing else is touched: not the driver, not another Ray
    instance.
    """
    import re
    import select

    import psutil

    def process(identity: str) -> psutil.Process | None:
        pid, start = identity.split(":")
        try:
            proc = psutil.Process(int(pid))
        except psutil.Error:
            return None
        return proc if abs(proc.create_time() - float(start)) < 0.01 else None

    def alive(proc: psutil.Process | None) -> bool:
        try:
            return proc is not None and proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def name(proc: psutil.Process) -> str:
        try:
            return proc.name()
        except psutil.Error:
            return "?"

    def take_roots(mark: str, children: dict[int, list[int]]) -> None:
        nonlocal session
        for pid in children.get(driver.pid, []):
            if pid in tracked:
                continue
            try:
                child = psutil.Process(pid)
                cmdline = " ".join(child.cmdline())
                if child.create_time() >= since and mark in cmdline:
                    tracked[pid] = child
                    # the GCS's and raylet's command lines name the session dir (.../session_<time>_<pid>/logs)
                    found = re.search(r"(/[^\s=]*/session_[^/\s]+)", cmdline)
                    session = session or (found.group(1) if found else "")
            except psutil.Error:
                pass

    def children_by_parent() -> dict[int, list[int]]:
        """pid -> its children's pids, read from /proc/*/stat (about 1 ms where psutil.process_iter takes 13)."""
        if not os.path.isdir("/proc/self/task"):
            procs = [driver, *tracked.values()]
            return {proc.pid: [child.pid for child in proc.children()] for proc in procs if alive(proc)}
        children: dict[int, list[int]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    with open(f"/proc/{entry.name}/stat", "rb") as stat:
                        fields = stat.read()
                except OSError:
                    continue
                ppid = int(fields[fields.rindex(b")") + 2:].split()[1])  # after "pid (name) state"
                children.setdefault(ppid, []).append(int(entry.name))
        return children

    def record_descendants(children: dict[int, list[int]]) -> None:
        stack = [proc.pid for proc in tracked.values() if alive(proc)]
        while stack:
            for pid in children.get(stack.pop(), []):
                if pid not in tracked and pid != os.getpid():
                    try:
                        tracked[pid] = psutil.Process(pid)
                    except psutil.Error:
                        continue
                    stack.append(pid)

    def record_orphans(session: str) -> None:
        """Takes the session's processes that were born after the last record and orphaned since: those writing
        their stdout into the session's logs (workers) or holding the raylet's log open for writing, as every
        child of the raylet inherits it (the agents, whose command line Ray overwrites)."""
        logs = os.path.join(session, "logs", "")
        raylet_logs = {logs + "raylet.out", logs + "raylet.err"}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) in tracked or int(entry.name) in (os.getpid(), driver.pid):
                continue
            fd_dir = f"/proc/{entry.name}/fd"
            try:
                ours = os.readlink(f"{fd_dir}/1").startswith(logs)
                for fd in [] if ours else os.listdir(fd_dir):
                    if os.readlink(f"{fd_dir}/{fd}") in raylet_logs:
                        with open(f"/proc/{entry.name}/fdinfo/{fd}") as info:
                            flags = next(int(line.split()[1], 8) for line in info if line.startswith("flags:"))
                        if flags & os.O_ACCMODE != os.O_RDONLY:  # a writer, not someone reading the log
                            ours = True
                            break
                if ours:
                    tracked[int(entry.name)] = psutil.Process(int(entry.name))
            except (OSError, StopIteration, ValueError, psutil.Error):
                pass

    def wait(procs: list[psutil.Process]) -> list[psutil.Process]:
        deadline = time.monotonic() + GRACE_S
        procs = [proc for proc in procs if alive(proc)]
        while procs and time.monotonic() < deadline:
            time.sleep(0.1)
            procs = [proc for proc in procs if alive(proc)]
        return procs

    driver_id, ray_dir = argv
    driver = process(driver_id)
    since = psutil.Process().create_time() - 0.02  # the launcher returned before ray.init started anything
    tracked: dict[int, psutil.Process] = {}
    received, session_dir, reason = b"", "", ""
    session = ""  # the session dir: as the driver wrote it, or as read from the first root's command line
    while driver is not None and not reason:  # ray.init is running
        if not alive(driver):
            reason = "the driver has gone during ray.init"
        elif select.select([0], [], [], POLL_S)[0]:
            chunk = os.read(0, 65536)
            received += chunk
            if b"\n" in received:
                session_dir = session = received.split(b"\n")[0].decode()
                break
            if not chunk:
                reason = "no session dir came (the driver died or ray.init failed)"
        children = children_by_parent()
        take_roots(ray_dir, children)
        record_descendants(children)
    if session:
        try:  # from here on, a log beside Ray's own
            log_path = os.path.join(session, "logs", "embodied_r_watchdog.log")
            log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
        except OSError:
            pass
    if session_dir:
        children = children_by_parent()
        take_roots(session_dir, children)
        record_descendants(children)
        anchors = [p for p in tracked.values() if name(p) in ("gcs_server", "raylet") and alive(p)]
        anchors = anchors or [p for p in tracked.values() if alive(p)]  # the session ends when they all have gone
        last_record = time.monotonic()
        while not reason:
            if not alive(driver):
                reason = "the driver has gone"
            elif not any(alive(proc) for proc in anchors):
                reason = "the session was shut down"
            elif time.monotonic() - last_record >= RECORD_S:
                record_descendants(children_by_parent())
                last_record = time.monotonic()
            if not reason:
                time.sleep(POLL_S)
        record_descendants(children_by_parent())  # children of a raylet that still lives
    if session and driver is not None and os.path.isdir("/proc/self/fd"):
        record_orphans(session)
    left = wait([proc for proc in tracked.values() if driver is None or proc.pid != driver.pid])
    for signal_name in ("terminate", "kill"):
        if not left:
            break
        print(f"{time.strftime('%F %T')} {reason}; {signal_name}: {[f'{p.pid} {name(p)}' for p in left]}", flush=True)
        for proc in left:
            try:
                getattr(proc, signal_name)()  # psutil checks that the pid still names the process recorded
            except psutil.Error:
                pass
        left = wait(left)
    print(f"{time.strftime('%F %T')} {reason or 'no driver'}; the watchdog exits", flush=True)


@contextmanager
def run_log(path: str | Path) -> Iterator[None]:
    """Copies the INFO-level log of a job into `path` (appending, so a resumed run continues its log) while it runs."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)  # the run log keeps INFO even when the console shows less
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
