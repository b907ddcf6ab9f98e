"""Multi-node on one machine: a real two-node Ray cluster (`ray start`, head on 127.0.0.2 with its dashboard, a second
node on 127.0.0.3), the tiny job submitted through Ray's job API (`ray job submit`, as users run it), learner rank 0
pinned to the node that is not the driver's, training end to end. Every rendezvous address must be the host's own node
IP, not the driver's. Then the same job stopped with `ray job stop` during step 3 checkpoints and exits naming the
resume command; then whole nodes die under a job, whose workers and learner (from its checkpoint) start again on a
replacement node and write the rows of the job that lost nothing, until no node is left.

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
           "RAY_USAGE_STATS_ENABLED": "0",
           # A lost node is declared dead ~2 s after its raylet stops answering (Ray's default: ~15 s), so the node
           # loss drill's actors fail fast; the GCS reads these when the head starts.
           "RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "500",
           "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "3"}
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


def probe(address: str, env: dict[str, str], code: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """Runs `code` in a driver that joins the cluster at `address` (a subprocess, so this test process never joins it);
    `code` follows `import json, ray, sys; ray.init(...)` and prints its answer last."""
    joined = f"import json, ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); {code}"
    return subprocess.run([sys.executable, "-c", joined, address], env=env, capture_output=True, text=True,
                          timeout=timeout_s)


def wait_for_nodes(address: str, count: int, env: dict[str, str]) -> None:
    """Polls the cluster until `count` nodes are alive."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        result = probe(address, env, "print(sum(n['Alive'] for n in ray.nodes()))")
        if result.returncode == 0 and result.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(1)
    pytest.fail(f"the two-node cluster at {address} did not come up in {START_TIMEOUT_S} s: {result.stderr[-2000:]}")


class TwoNodes:
    """The module's cluster: its GCS address, the environment every node and client needs, its dashboard, and the nodes
    started so far (the head, then the second node; a test may add more and kill them: `add_node`, `kill_node`)."""

    def __init__(self, address: str, env: dict[str, str], dashboard: str, temp_dir: str, ray_cli: Path):
        self.address, self.env, self.dashboard = address, env, dashboard
        self.temp_dir, self.ray_cli = temp_dir, ray_cli
        self.logs = Path(temp_dir) / "node-logs"
        self.logs.mkdir(exist_ok=True)
        self.nodes: dict[str, subprocess.Popen] = {}
        self.alive = 0

    def own_ports(self, ip: str) -> list[str]:
        # Every node of this machine's nodes, and any other Ray here (a local run's agent holds the default 52365), needs
        # ports of its own: a job agent that cannot bind leaves the head with "No available agent to submit job".
        return [f"--dashboard-agent-listen-port={free_port(ip)}", f"--dashboard-agent-grpc-port={free_port(ip)}",
                f"--metrics-export-port={free_port(ip)}", f"--runtime-env-agent-port={free_port(ip)}"]

    def start(self, ip: str, args: list[str]) -> None:
        """`ray start --block` of one node at `ip` in its own session (so `kill_node` takes all of it); waits until the
        cluster counts it alive."""
        common = ["--block", "--disable-usage-stats", f"--temp-dir={self.temp_dir}"]
        self.nodes[ip] = subprocess.Popen(
            [str(self.ray_cli), "start", f"--node-ip-address={ip}", *args, *self.own_ports(ip), *common], env=self.env,
            stdout=(self.logs / f"{ip}.out").open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        self.alive += 1
        wait_for_nodes(self.address, self.alive, self.env)

    def add_node(self, ip: str, num_cpus: int, resources: dict[str, float]) -> None:
        import json

        self.start(ip, [f"--address={self.address}", f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources)}"])

    def kill_node(self, ip: str) -> None:
        """SIGKILLs the node's raylet, agents and every worker process on it at once: the node is lost."""
        stop_tree(self.nodes.pop(ip))
        self.alive -= 1

    def stop(self) -> None:
        for ip in reversed(list(self.nodes)):
            stop_tree(self.nodes.pop(ip))


@pytest.fixture(scope="module")
def two_nodes():
    ray_cli = Path(sys.executable).parent / "ray"
    if not ray_cli.exists():
        pytest.skip(f"no `ray` command beside {sys.executable}")
    port, dashboard_port = free_port(HEAD_IP), free_port(HEAD_IP)
    address = f"{HEAD_IP}:{port}"
    # A short private temp dir: Ray's socket paths must fit in 107 bytes, and `ray_current_cluster` must not land in
    # /tmp/ray, where a later bare ray.init() would try to join this (by then dead) cluster.
    temp_dir = tempfile.mkdtemp(prefix="er-2n-", dir="/tmp")
    env = node_env(new_token(Path(temp_dir) / "auth_token"))
    cluster = TwoNodes(address, env, f"http://{HEAD_IP}:{dashboard_port}", temp_dir, ray_cli)
    try:
        cluster.start(HEAD_IP, ["--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=true",
                                f"--dashboard-host={HEAD_IP}", f"--dashboard-port={dashboard_port}"])
        cluster.add_node(SECOND_IP, 1, {"learner_node": 1})
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.parametrize("client", ["no token", "another token"])
def test_a_client_without_the_clusters_token_is_refused(tmp_path, two_nodes, client):
    """The cluster the run below joins lets in only its own: a driver that sends no token (auth off on its side), or
    another token, is refused by the head's GCS. (The fixture's own probe, with the token, got in.)"""
    address, env = two_nodes.address, two_nodes.env
    env = {key: value for key, value in env.items() if not key.startswith("RAY_AUTH_")}
    if client == "no token":
        env["RAY_AUTH_MODE"] = "disabled"
    else:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(new_token(tmp_path / "other_token")))
    env["RAY_gcs_server_port_wait_time_s"] = "2"  # the driver's connect attempts (1 s apart; default 20)
    refused = probe(address, env, "print('joined', len(ray.nodes()))", timeout_s=90)
    assert refused.returncode != 0 and "joined" not in refused.stdout, refused.stdout
    assert AUTH_REFUSED in refused.stderr, refused.stderr[-3000:]


# The job of both tests below: the tiny config, learner rank 0 on the second node, a checkpoint every 2 steps.
JOB_STEPS = 4
JOB_OVERRIDES = [
    "learner.resources={learner_node: 1}",  # rank 0 on the second node, away from the driver
    f"trainer.steps={JOB_STEPS}", "trainer.checkpoint_every=2", "trainer.prompts_per_step=2",
    "trainer.sft_warmup_steps=2", "trainer.progress=false",
    "weight_sync.verify=true", "data.synthetic.scenes=1", "data.synthetic.questions_per_scene=2",
    "sampling.max_new_tokens=16",
    "perception.source=ground_truth",  # what is tested is placement, rendezvous and the job's life, not the VLM
]
# The job supervisor's wait between `ray job stop`'s SIGTERM and its SIGKILL (3 s by default): room for the driver to
# finish the step in flight and checkpoint it (trainer.preemption_grace_s).
JOB_ENV = {"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "120"}}
FINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")
_uninterrupted_rows: list[dict] = []  # the first test's rows, which the second compares with


def ray_job(dashboard: str, env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """Runs `ray job <args>` against the cluster's dashboard with the cluster's token; returns its output. Retried
    while the head's job agent is still starting (the dashboard answers before it can take jobs)."""
    command = [str(Path(sys.executable).parent / "ray"), "job", args[0], "--address", dashboard, *args[1:]]
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode == 0 or "No available agent" not in done.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr[-3000:]}"
    return done.stdout + done.stderr


def submit(dashboard: str, env: dict[str, str], job_id: str, train_args: list[str], failpoint: str = "",
           release: Path | None = None) -> None:
    """`ray job submit --no-wait` of `python -m cluster.train <train_args>` (this interpreter: the nodes share its env);
    `failpoint`: the job's EMBODIED_R_FAILPOINT, `release`: its EMBODIED_R_FAILPOINT_RELEASE (cluster/failpoints.py)."""
    import json

    drill = {"EMBODIED_R_FAILPOINT": failpoint} if failpoint else {}
    if release is not None:
        drill["EMBODIED_R_FAILPOINT_RELEASE"] = str(release)
    runtime_env = {"env_vars": {**JOB_ENV["env_vars"], **drill}}
    ray_job(dashboard, env, "submit", "--submission-id", job_id, "--no-wait", "--runtime-env-json", json.dumps(runtime_env),
            "--", sys.executable, "-m", "cluster.train", *train_args)


def job_state(dashboard: str, env: dict[str, str], job_id: str) -> str:
    """SUCCEEDED, FAILED or STOPPED once the job has ended (`ray job status` words them "Job 'ID' succeeded", "... failed",
    "... was stopped"), else RUNNING."""
    ended = re.search(rf"Job '{re.escape(job_id)}' (succeeded|failed|was stopped)", ray_job(dashboard, env, "status", job_id))
    return {"succeeded": "SUCCEEDED", "failed": "FAILED", "was stopped": "STOPPED"}[ended.group(1)] if ended else "RUNNING"


def wait_job(dashboard: str, env: dict[str, str], job_id: str, timeout_s: float = RUN_TIMEOUT_S) -> str:
    """Polls the job until it reaches a final state; returns it (fails the test past `timeout_s`, with its logs)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = job_state(dashboard, env, job_id)
        if state in FINAL_STATES:
            return state
        time.sleep(2)
    pytest.fail(f"job {job_id} did not finish in {timeout_s:.0f} s:\n{ray_job(dashboard, env, 'logs', job_id)[-4000:]}")


def alive_actors(cluster: TwoNodes, wait_s: float = 30.0) -> list[str]:
    """The classes of the cluster's live actors, the job supervisors' aside, once none is left or after `wait_s`."""
    import json

    live = ("from ray.util.state import list_actors; "
            "print(json.dumps(sorted(a.class_name for a in list_actors(filters=[('state', '=', 'ALIVE')]) "
            "if 'JobSupervisor' not in a.class_name)))")
    deadline = time.monotonic() + wait_s
    while True:
        done = probe(cluster.address, cluster.env, live)
        assert done.returncode == 0, done.stderr[-3000:]
        alive = json.loads(done.stdout.strip().splitlines()[-1])
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(1)


def read_rows(run_dir: Path) -> list[dict]:
    import json

    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_a_submitted_job_trains_on_two_nodes_with_every_rendezvous_on_its_hosts_node(tmp_path, two_nodes):
    env, dashboard = two_nodes.env, two_nodes.dashboard
    run_dir = tmp_path / "run"
    submit(dashboard, env, "er-uninterrupted",
           ["--config", str(ROOT / "configs" / "tiny.yaml"), f"run_dir={run_dir}", *JOB_OVERRIDES])
    assert wait_job(dashboard, env, "er-uninterrupted") == "SUCCEEDED", ray_job(dashboard, env, "logs", "er-uninterrupted")[-4000:]
    log_text = (run_dir / "train.log").read_text()
    assert "joined Ray cluster at" in log_text  # from RAY_ADDRESS, which the job supervisor sets

    rendezvous = re.search(r"rendezvous: learner group at ([\d.]+):(\d+), weight group at ([\d.]+):(\d+), "
                           r"both hosted by learner rank 0 on node ([\d.]+)", log_text)
    assert rendezvous, log_text[-3000:]
    learner_host, _, weights_host, _, rank0_node = rendezvous.groups()
    # The driver sits on the head; rank 0 on the second node hosts both groups at its own address.
    assert (learner_host, weights_host, rank0_node) == (SECOND_IP, SECOND_IP, SECOND_IP)

    rows = read_rows(run_dir)
    assert [row["step"] for row in rows] == list(range(1, JOB_STEPS + 1))
    assert all(row["sync/match"] == 1.0 for row in rows)  # the broadcast crossed nodes and arrived intact
    _uninterrupted_rows.extend(rows)


def test_ray_job_stop_checkpoints_the_step_and_exits_naming_the_resume_command(tmp_path, two_nodes):
    """`ray job stop` (SIGTERM to the driver) as step 3 begins: the driver finishes the step, checkpoints it (3 is not a
    checkpoint_every step), shuts the actors down and exits naming the resume command; the job ends STOPPED, with the
    rows of the job never stopped so far. The same job has a full disk at step 2's checkpoint (the ENOSPC failpoint,
    trainer.checkpoint_failure's default `continue`): reported with the path, nothing partial left, counted, and the
    run goes on. (A learner restored from a checkpoint on another node is the lost-node test's below; a run resumed from
    its checkpoint writing the uninterrupted rows to the end, tests/test_faults.py's.)"""
    if not _uninterrupted_rows:
        pytest.skip("needs the uninterrupted job of the test above (run the module)")
    from bench.faults import differences

    env, dashboard = two_nodes.env, two_nodes.dashboard
    run_dir = tmp_path / "run"
    # A tiny step takes well under a second, `ray job stop` a few: the driver holds as step 3 begins until the SIGTERM
    # has come (cluster/failpoints.failpoint_pause), so the stop lands in step 3, which then runs and is checkpointed.
    submit(dashboard, env, "er-stopped", ["--config", str(ROOT / "configs" / "tiny.yaml"), f"run_dir={run_dir}", *JOB_OVERRIDES],
           failpoint="checkpoint.enospc@2,step.begin@3")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while len(read_rows(run_dir)) < 2:  # step 3 is under way once step 2's row is written
        assert time.monotonic() < deadline and job_state(dashboard, env, "er-stopped") not in FINAL_STATES, \
            ray_job(dashboard, env, "logs", "er-stopped")[-4000:]
        time.sleep(0.2)
    ray_job(dashboard, env, "stop", "er-stopped")
    assert wait_job(dashboard, env, "er-stopped") == "STOPPED"
    logs = ray_job(dashboard, env, "logs", "er-stopped")
    resume = re.search(r"embodied-r train --config (\S+) trainer\.resume=true", logs)
    assert resume and "preempted (SIGTERM): checkpoint" in logs and "holds step 3" in logs, logs[-4000:]
    assert "run stopped: preempted (SIGTERM)" in logs  # the command's last words before it exits 75 (EX_TEMPFAIL)
    assert (run_dir / "checkpoints" / "step_000003" / "driver_state.json").exists(), logs[-4000:]
    assert alive_actors(two_nodes) == [], "the stopped job left actors behind"
    assert resume.group(1) == str(run_dir / "config.yaml") and (run_dir / "config.yaml").is_file()
    rows = read_rows(run_dir)
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert differences(rows, _uninterrupted_rows[:3]) == []  # the failed checkpoint changed no row but its count
    disk_full = f"No space left on device ({run_dir / 'checkpoints' / 'step_000002' / 'manifest.sha256'})"
    assert disk_full in (run_dir / "train.log").read_text()
    assert not (run_dir / "checkpoints" / "step_000002").exists() and rows[2]["faults/checkpoint_failures"] == 1


RESOURCES_LOST_EXIT = 69  # cluster/preemption.EXIT_RESOURCES_LOST (EX_UNAVAILABLE)


def wait_for_pause(run_dir: Path, step: int, dashboard: str, env: dict[str, str], job_id: str) -> None:
    """Waits until the job's driver holds at `step.begin@<step>` (its failpoint), i.e. between steps, with
    `step - 1` rows written (a restarted learner rewrites the rows after its checkpoint, so they are counted here)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    mark = f"failpoint step.begin@{step} reached"
    while True:
        log_text = (run_dir / "train.log").read_text() if (run_dir / "train.log").exists() else ""
        if mark in log_text and len(read_rows(run_dir)) == step - 1:
            return
        assert time.monotonic() < deadline and job_state(dashboard, env, job_id) not in FINAL_STATES, \
            ray_job(dashboard, env, "logs", job_id)[-4000:]
        time.sleep(0.5)


def test_lost_nodes_are_replaced_while_the_cluster_has_room_and_stop_the_run_naming_what_it_lacks_when_not(tmp_path, two_nodes):
    """Whole nodes die (raylet, agents and actors SIGKILLed at once) between steps of one job. Step 2: the node holding
    both rollout workers (and nothing else); a replacement node joins meanwhile, as an autoscaler would bring one, the
    workers are started again on it, get the learner's weights and generate the step. Step 3: the second node, holding
    the learner; the learner is rebuilt on the replacement node from the step-2 checkpoint and step 3 is done again.
    The rows so far equal the job's that lost nothing. Step 4: the replacement node, now holding the workers and the
    learner, and no node is left with their resources: within trainer.placement_timeout_s the job stops, exit 69,
    naming the resources no live node has and the resume command. Runs last: it takes the second node down."""
    if not _uninterrupted_rows:
        pytest.skip("needs the uninterrupted job of the tests above (run the module)")
    from bench.faults import differences

    env, dashboard = two_nodes.env, two_nodes.dashboard
    rollout_ip, spare_ip = "127.0.0.4", "127.0.0.5"
    two_nodes.add_node(rollout_ip, 1, {"rollout_node": 2})
    run_dir, release = tmp_path / "run", tmp_path / "release"
    release.mkdir()
    submit(dashboard, env, "er-lost-nodes",
           ["--config", str(ROOT / "configs" / "tiny.yaml"), f"run_dir={run_dir}", *JOB_OVERRIDES,
            "rollout.resources={rollout_node: 1}", "trainer.placement_timeout_s=10"],
           failpoint="step.begin@2,step.begin@3,step.begin@4", release=release)

    wait_for_pause(run_dir, 2, dashboard, env, "er-lost-nodes")
    two_nodes.kill_node(rollout_ip)
    two_nodes.add_node(spare_ip, 2, {"rollout_node": 2, "learner_node": 1})
    (release / "step.begin@2").touch()

    wait_for_pause(run_dir, 3, dashboard, env, "er-lost-nodes")
    two_nodes.kill_node(SECOND_IP)
    (release / "step.begin@3").touch()

    wait_for_pause(run_dir, 4, dashboard, env, "er-lost-nodes")
    rows = read_rows(run_dir)
    assert differences(rows, _uninterrupted_rows[:3]) == []
    assert rows[-1]["faults/rollout_workers_replaced"] == 2 and rows[-1]["faults/learner_restarts"] == 1
    assert all(row["sync/match"] == 1.0 for row in rows)  # the replaced workers hold the learner's weights
    killed_at = time.monotonic()
    two_nodes.kill_node(spare_ip)
    (release / "step.begin@4").touch()

    assert wait_job(dashboard, env, "er-lost-nodes") == "FAILED"
    assert time.monotonic() - killed_at < 10 + 60  # the placement timeout, and the time to notice the node and stop
    logs = ray_job(dashboard, env, "logs", "er-lost-nodes")
    assert f"exit code {RESOURCES_LOST_EXIT}" in ray_job(dashboard, env, "status", "er-lost-nodes")
    assert "no live node has the resources of bundle(s) [{'CPU': 0.5, 'rollout_node': 1.0}" in logs, logs[-4000:]
    assert "learner: 1 x {'CPU': 0.5, 'learner_node': 1.0}" in logs, logs[-4000:]  # what else the cluster lacks
    assert f"resume with: embodied-r train --config {run_dir / 'config.yaml'} trainer.resume=true" in logs
    assert [row["step"] for row in read_rows(run_dir)] == [1, 2, 3]
