"""Multi-node on one machine: a real two-node Ray cluster (`ray start`, head on 127.0.0.2, a second node on 127.0.0.3),
the driver joining it as `ray job submit` would, learner rank 0 pinned to the node that is not the driver's, and two
training steps end to end. Every rendezvous address must be the host's own node IP, not the driver's.

127.0.0.1 cannot be one of the nodes: Ray replaces a node IP of 127.0.0.1 with the machine's routable address when
clusters are enabled, while other loopback addresses (127.0.0.0/8 all reach this machine) are kept as given.

Only its own get in: the cluster runs with Ray's token authentication (RAY_AUTH_MODE=token, the cluster's token in a
private file named by RAY_AUTH_TOKEN_PATH, on every node and the driver), and a client without the token, or with
another one, is refused.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")
pytest.importorskip("ray")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HEAD_IP, SECOND_IP = "127.0.0.2", "127.0.0.3"
START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 420


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


AUTH_REFUSED = "Authentication token is missing or incorrect"  # what Ray's GCS answers a client without the token


def node_env(token_path: Path) -> dict[str, str]:
    """What every node's processes need: the driver of a joined cluster adds no runtime env of its own (README). Token
    authentication on, with the cluster's token read from `token_path` (never ~/.ray/auth_token, nor a RAY_AUTH_TOKEN
    inherited from outside: that one would win over the file)."""
    from cluster.runtime import actor_env

    env = {**os.environ, **actor_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path),
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_AUTH_TOKEN", None)
    return env


def new_token(path: Path) -> Path:
    """A fresh 256-bit token (as `ray get-auth-token --generate` makes one), readable by this user only."""
    path.touch(mode=0o600)
    path.write_text(secrets.token_hex(32))
    return path


def stop_tree(process: subprocess.Popen) -> None:
    """Ends a `ray start --block` and everything it started (its own process group, then any straggler). SIGKILL at
    once: the node holds nothing worth a graceful stop, and `ray start --block` takes ~20 s to act on a SIGTERM."""
    try:
        family = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)
    for member in family:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=10)
    for leftover in alive:
        try:
            leftover.kill()
        except psutil.NoSuchProcess:
            pass


def wait_for_nodes(address: str, count: int, env: dict[str, str]) -> None:
    """Polls the cluster (in a subprocess, so this test process never joins it) until `count` nodes are alive."""
    probe = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
             "print(sum(n['Alive'] for n in ray.nodes()))")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        result = subprocess.run([sys.executable, "-c", probe, address], env=env, capture_output=True, text=True, timeout=60)
        if result.returncode == 0 and result.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(1)
    pytest.fail(f"the two-node cluster at {address} did not come up in {START_TIMEOUT_S} s: {result.stderr[-2000:]}")


@pytest.fixture(scope="module")
def two_nodes():
    ray_cli = Path(sys.executable).parent / "ray"
    if not ray_cli.exists():
        pytest.skip(f"no `ray` command beside {sys.executable}")
    port = free_port(HEAD_IP)
    address = f"{HEAD_IP}:{port}"
    # A short private temp dir: Ray's socket paths must fit in 107 bytes, and `ray_current_cluster` must not land in
    # /tmp/ray, where a later bare ray.init() would try to join this (by then dead) cluster.
    temp_dir = tempfile.mkdtemp(prefix="er-2n-", dir="/tmp")
    env = node_env(new_token(Path(temp_dir) / "auth_token"))
    common = ["--block", "--disable-usage-stats", f"--temp-dir={temp_dir}"]
    logs = Path(temp_dir) / "node-logs"
    logs.mkdir()
    nodes: list[subprocess.Popen] = []
    try:
        nodes.append(subprocess.Popen(
            [str(ray_cli), "start", "--head", f"--node-ip-address={HEAD_IP}", f"--port={port}", "--num-cpus=2",
             "--include-dashboard=false", *common],
            env=env, stdout=(logs / "head.out").open("wb"), stderr=subprocess.STDOUT, start_new_session=True))
        wait_for_nodes(address, 1, env)
        nodes.append(subprocess.Popen(
            [str(ray_cli), "start", f"--address={address}", f"--node-ip-address={SECOND_IP}", "--num-cpus=1",
             '--resources={"learner_node": 1}', *common],
            env=env, stdout=(logs / "second.out").open("wb"), stderr=subprocess.STDOUT, start_new_session=True))
        wait_for_nodes(address, 2, env)
        yield address, env
    finally:
        for node in reversed(nodes):
            stop_tree(node)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.parametrize("client", ["no token", "another token"])
def test_a_client_without_the_clusters_token_is_refused(tmp_path, two_nodes, client):
    """The cluster the run below joins lets in only its own: a driver that sends no token (auth off on its side), or
    another token, is refused by the head's GCS. (The fixture's own probe, with the token, got in.)"""
    address, env = two_nodes
    env = {key: value for key, value in env.items() if not key.startswith("RAY_AUTH_")}
    if client == "no token":
        env["RAY_AUTH_MODE"] = "disabled"
    else:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(new_token(tmp_path / "other_token")))
    env["RAY_gcs_server_port_wait_time_s"] = "2"  # the driver's connect attempts (1 s apart; default 20)
    probe = "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); print('joined', len(ray.nodes()))"
    refused = subprocess.run([sys.executable, "-c", probe, address], env=env, capture_output=True, text=True, timeout=90)
    assert refused.returncode != 0 and "joined" not in refused.stdout, refused.stdout
    assert AUTH_REFUSED in refused.stderr, refused.stderr[-3000:]


def test_two_steps_on_two_nodes_with_every_rendezvous_on_its_hosts_node(tmp_path, two_nodes):
    address, env = two_nodes
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "cluster.train", "--config", str(ROOT / "configs" / "tiny.yaml"), f"run_dir={run_dir}",
        f"ray.address={address}",
        "learner.resources={learner_node: 1}",  # rank 0 on the second node, away from the driver
        "trainer.steps=2", "trainer.prompts_per_step=2", "trainer.sft_warmup_steps=2", "trainer.progress=false",
        "weight_sync.verify=true", "data.synthetic.scenes=1", "data.synthetic.questions_per_scene=2",
        "sampling.max_new_tokens=16",
        "perception.source=ground_truth",  # what is tested is placement and rendezvous, not the VLM
    ]
    try:
        finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"two-node run did not finish in {RUN_TIMEOUT_S} s:\n{(timeout.stderr or b'')[-4000:]!r}")
    assert finished.returncode == 0, finished.stderr[-4000:]
    log_text = (run_dir / "train.log").read_text()
    assert f"joined Ray cluster at {address}" in log_text

    rendezvous = re.search(r"rendezvous: learner group at ([\d.]+):(\d+), weight group at ([\d.]+):(\d+), "
                           r"both hosted by learner rank 0 on node ([\d.]+)", log_text)
    assert rendezvous, log_text[-3000:]
    learner_host, _, weights_host, _, rank0_node = rendezvous.groups()
    # The driver sits on the head; rank 0 on the second node hosts both groups at its own address.
    assert (learner_host, weights_host, rank0_node) == (SECOND_IP, SECOND_IP, SECOND_IP)

    import json

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    assert all(row["sync/match"] == 1.0 for row in rows)  # the broadcast crossed nodes and arrived intact
