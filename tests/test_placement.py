"""Placement of tensor-parallel replicas, checked with logical GPUs declared to Ray (no CUDA code runs): one one-GPU
bundle per shard, the driving actor's CPUs in the first, its engine's GPU workers captured into its bundles."""

from __future__ import annotations

import os

import pytest

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def logical_gpus():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=4, include_dashboard=False, log_to_driver=False, namespace="test-placement")
    try:
        yield
    finally:
        ray.shutdown()


def test_tensor_parallel_replicas_get_one_gpu_bundle_per_shard(logical_gpus):
    from actors import reserve_pool
    from perception.config import PerceptionConfig, VLMConfig
    from perception.pool import reserve_perception_pool
    from rollout.config import RolloutConfig
    from rollout.pool import reserve_rollout_pool

    rollout = reserve_rollout_pool("tp-rollout", RolloutConfig(num_replicas=2, engine="vllm", tensor_parallel_size=2,
                                                               num_cpus_per_replica=0.5, num_gpus_per_replica=1))
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
    # A transformers engine ignores tensor_parallel_size: one bundle per worker.
    single = reserve_rollout_pool("tp-ignored", RolloutConfig(num_replicas=2, engine="transformers", tensor_parallel_size=4,
                                                              num_cpus_per_replica=0.5))
    try:
        assert single.bundles == [{"CPU": 0.5}] * 2 and single.bundles_per_replica == 1
    finally:
        single.release()
    # More than the cluster has: refused at once, naming what was asked.
    with pytest.raises(RuntimeError, match="needs 3 x"):
        reserve_pool("too-big", 3, 0.5, 2.0, timeout_s=2)


def test_a_tensor_parallel_vllm_engine_is_pointed_at_its_replicas_bundles(monkeypatch):
    """What both vLLM engines (policy and VLM) pass to `vllm.LLM` and set in their process before starting it."""
    from actors.vllm_placement import vllm_placement_kwargs

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # what Ray gives an actor that holds no GPU
    monkeypatch.delenv("VLLM_RAY_BUNDLE_INDICES", raising=False)
    assert vllm_placement_kwargs(1, [0]) == {}
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # one GPU: this process is the worker, nothing changes
    assert vllm_placement_kwargs(2, [2, 3]) == {"distributed_executor_backend": "ray"}
    assert os.environ["VLLM_RAY_BUNDLE_INDICES"] == "2,3" and "CUDA_VISIBLE_DEVICES" not in os.environ
    with pytest.raises(ValueError, match="needs as many bundles"):
        vllm_placement_kwargs(4, [0, 1])
