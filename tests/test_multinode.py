"""Two Ray nodes on one machine, on distinct loopback addresses (127.0.0.1 runs the driver, 127.0.0.2 the learner):
every rendezvous is hosted where its rank 0 runs, and a training run goes end to end across the nodes. Placement of
tensor-parallel replicas is checked with logical GPUs declared to Ray (no CUDA code runs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "num_gpus": 4, "node_ip_address": "127.0.0.1", "include_dashboard": False},
    )
    cluster.add_node(num_cpus=2, node_ip_address="127.0.0.2", resources={"learner_node": 1})
    ray.init(address=cluster.address, _node_ip_address="127.0.0.1", namespace="test-multinode", log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_learner_rank_0_hosts_every_rendezvous_on_its_own_node(two_nodes, tmp_path):
    cfg_overrides = [
        f"run_dir={tmp_path}",
        "trainer.steps=2",
        "trainer.progress=false",
        "trainer.verify_sync=true",
        "trainer.sft_warmup_steps=4",
        "data.synthetic.scenes=2",
        "data.synthetic.questions_per_scene=3",
        "sampling.max_new_tokens=32",
        "rollout.num_workers=1",
        "learner.resources={learner_node: 1}",
        "rewards.stages=[{start: 0, format: 0.1, accuracy: 0.7, consistency: 0.2}]",
    ]
    from cluster.config import load_config
    from cluster.metrics import read_metrics
    from cluster.train import train

    assert ray.util.get_node_ip_address() == "127.0.0.1"  # the driver's node
    train(load_config(str(ROOT / "configs" / "tiny.yaml"), cfg_overrides))
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2]
    assert all(row["sync/match"] == 1.0 for row in rows)  # the weights crossed the nodes intact
    line = re.search(
        r"rendezvous: learner group at ([\d.]+):(\d+), weight group at ([\d.]+):(\d+), both hosted by learner rank 0 on node ([\d.]+)",
        (tmp_path / "train.log").read_text(),
    )
    assert line, "the run log names no rendezvous"
    learner_host, _, weights_host, _, rank0_node = line.groups()
    assert rank0_node == "127.0.0.2"  # placed by learner.resources on the node that is not the driver's
    assert learner_host == weights_host == rank0_node


def test_tensor_parallel_replicas_get_one_gpu_bundle_per_shard(two_nodes):
    from actors import reserve_pool
    from perception.config import PerceptionConfig, VLMConfig
    from perception.pool import reserve_perception_pool
    from rollout.config import RolloutConfig
    from rollout.pool import reserve_rollout_pool

    rollout = reserve_rollout_pool("tp-rollout", RolloutConfig(num_workers=2, engine="vllm", tensor_parallel_size=2,
                                                               num_cpus_per_worker=0.5, num_gpus_per_worker=1))
    try:
        assert rollout.bundles == [{"CPU": 0.5, "GPU": 1.0}, {"GPU": 1.0}] * 2
        assert [rollout.bundle_indices(i) for i in range(2)] == [[0, 1], [2, 3]]
        options = rollout.actor_options(1)
        assert options["num_gpus"] == 0  # the engine's GPU workers take the GPUs, inside the worker's bundles
        assert options["scheduling_strategy"].placement_group_bundle_index == 2
        assert options["scheduling_strategy"].placement_group_capture_child_tasks
    finally:
        rollout.release()
    # configs/paper.yaml's perception replica: vLLM over 4 GPUs, the actor itself asking for none.
    perception = PerceptionConfig(num_replicas=1, num_cpus_per_replica=0.5, num_gpus_per_replica=0,
                                  vlm=VLMConfig(engine="vllm", tensor_parallel_size=4))
    reserved = reserve_perception_pool("tp-perception", perception)
    try:
        assert sum(bundle.get("GPU", 0) for bundle in reserved.bundles) == 4 and len(reserved.bundles) == 4
    finally:
        reserved.release()
    # More than the cluster has: refused at once, naming what was asked.
    with pytest.raises(RuntimeError, match="needs 3 x"):
        reserve_pool("too-big", 3, 0.5, 2.0, timeout_s=2)
