"""Starting or joining Ray, with the environment every actor needs (DeepSpeed's op cache, the venv's tools on PATH)."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


def default_extensions_dir() -> str:
    """DeepSpeed compiles a CPU comm op on first use (~30-60 s); a stable cache folder pays that once per environment.

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
    # A local, in-process cluster. Token auth is off: it is reachable only from this machine (STACK.md: Ray 2.60
    # turns token auth on by default and a later `ray job submit` would fail without a matching token).
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        # "local": a private instance even when `ray start` left a cluster on this machine (a bare init would join it)
        address="local",
        num_cpus=num_cpus or os.cpu_count(),
        namespace=namespace,
        include_dashboard=False,
        log_to_driver=True,
        runtime_env={"env_vars": env},
    )
    log.info("started local Ray: %s", ray.cluster_resources())


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
