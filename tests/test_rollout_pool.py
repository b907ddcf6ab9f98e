"""The rollout pool as two real Ray actors: prompts sharded and reassembled in order with a seed per prompt, and a
weight broadcast from a learner in this process (rank 0 of a real gloo group) loaded into every worker."""

from __future__ import annotations

import os

import pytest
import torch

from rollout.config import RolloutConfig, SamplingConfig
from rollout.engines.base import prompt_seeds
from rollout.engines.hf_engine import HFEngine
from rollout.pool import RolloutPool, shard_sizes
from weightsync import BucketPlan, create_weight_group, metas_of, send_weights, weights_digest
from weightsync.group import free_port

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pool(ray_local, policy_pair):
    cfg = RolloutConfig(num_replicas=2, num_cpus_per_replica=0.5, generate_batch_size=8)
    pool = RolloutPool(cfg, policy_pair[0])
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def prompts(policy_pair):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(policy_pair[0])
    texts = ["Frame 0:", "a red lamp is left", "Observe: a green lamp", "rotate right", "Frame 3: After rotate left, Observe: a lamp"]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def _tokens(out):
    return [[c.token_ids for c in group] for group in out]


def _as_the_pool_shards(engine: HFEngine, prompts, sampling, seed: int):
    """What the 2-worker pool computes, in one local engine: the same shards (so the same batches), the same seeds."""
    seeds = prompt_seeds(seed, len(prompts))
    return engine.generate(prompts[:3], sampling, seeds[:3]) + engine.generate(prompts[3:], sampling, seeds[3:])


def test_shard_sizes_are_even():
    assert shard_sizes(10, 4) == [3, 3, 2, 2]
    assert shard_sizes(1, 3) == [1, 0, 0]
    assert sum(shard_sizes(17, 5)) == 17


@pytest.mark.slow
def test_pool_returns_completions_in_prompt_order(pool, prompts, policy_pair):
    sampling = SamplingConfig(num_samples=3, max_new_tokens=12)
    out = pool.generate(prompts, sampling, seed=7)
    assert len(out) == len(prompts)
    for i, group in enumerate(out):
        assert len(group) == 3
        assert all(c.prompt_index == i and c.prompt_token_ids == prompts[i] for c in group)
    stats = pool.last_stats
    assert [w["prompts"] for w in stats["workers"]] == [3, 2] and [w["rank"] for w in stats["workers"]] == [0, 1]
    assert stats["generated_tokens"] == sum(len(c.token_ids) for g in out for c in g)

    # Each worker sampled its contiguous shard with those prompts' seeds: a local engine reproduces both shards.
    local = HFEngine(policy_pair[0], generate_batch_size=8)
    assert _tokens(out) == _tokens(_as_the_pool_shards(local, prompts, sampling, 7))
    assert _tokens(pool.generate(prompts, sampling, seed=7)) == _tokens(out)


@pytest.mark.slow
def test_weight_broadcast_reaches_every_worker(pool, prompts, policy_pair):
    import ray
    from transformers import AutoModelForCausalLM

    source = AutoModelForCausalLM.from_pretrained(policy_pair[1], dtype=torch.float32)
    named = dict(source.named_parameters())
    metas = metas_of((name, p.shape, p.dtype) for name, p in named.items())
    port = free_port()

    joins = pool.init_weight_group("gloo", "127.0.0.1", port, timeout_s=60)
    group = create_weight_group("gloo", "127.0.0.1", port, pool.weight_group_world_size, 0, timeout_s=60)
    assert ray.get(joins) == [[1], [2]]

    receipts = pool.receive_weights(BucketPlan.of(metas, 64 * 1024), digest=True)
    sent = send_weights(group, BucketPlan.of(metas, 64 * 1024), lambda bucket: [named[m.name] for m in bucket])
    results = ray.get(receipts)

    expected_digest = weights_digest(named.items())
    assert [r["digest"] for r in results] == [expected_digest, expected_digest]
    assert pool.digests() == [expected_digest, expected_digest]
    assert all(r["bytes"] == sent and r["buckets"] > 1 and r["weight_version"] == 1 for r in results)

    # The workers now sample what the source model samples.
    sampling = SamplingConfig(num_samples=2, max_new_tokens=12)
    out = pool.generate(prompts, sampling, seed=9)
    reference = HFEngine(policy_pair[1], generate_batch_size=8)
    assert _tokens(out) == _tokens(_as_the_pool_shards(reference, prompts, sampling, 9))
    group.close()


@pytest.mark.slow
def test_pool_in_a_driver_placement_group(policy_pair, pool, prompts):
    import ray

    from actors import reserve_pool

    cfg = RolloutConfig(num_replicas=2, num_cpus_per_replica=0.25, generate_batch_size=8)
    too_small = reserve_pool("rollout-too-small", 1, 0.25, 0.0)
    try:
        with pytest.raises(ValueError, match="2 actors but its pool reserved 1"):
            RolloutPool(cfg, policy_pair[0], pool=too_small)
    finally:
        too_small.release()
    reserved = reserve_pool("rollout-placed", 2, 0.25, 0.0)
    placed = RolloutPool(cfg, policy_pair[0], pool=reserved)
    try:
        out = placed.generate(prompts[:2], SamplingConfig(num_samples=1, max_new_tokens=4), seed=0)
        assert [g[0].prompt_index for g in out] == [0, 1]
        placement = ray.get([w.__ray_call__.remote(lambda self: (
            ray.get_runtime_context().get_placement_group_id(), ray.get_runtime_context().get_assigned_resources()))
            for w in placed.workers])
        assert [group for group, _ in placement] == [reserved.group.id.hex()] * 2
    finally:
        placed.shutdown()
        reserved.release()


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_shard_regenerated(policy_pair, pool, prompts):  # noqa: ARG001 (pool: Ray up)
    """SIGKILL one worker: the next generate finds it dead, replaces it in its bundle, asks the driver to resend the
    weights (the hook), and returns the completions a pool that lost nothing returns."""
    import signal
    import time

    sampling = SamplingConfig(num_samples=2, max_new_tokens=48)
    local = HFEngine(policy_pair[0], generate_batch_size=8)
    expected = _tokens(_as_the_pool_shards(local, prompts, sampling, 11))
    cfg = RolloutConfig(num_replicas=2, num_cpus_per_replica=0.5, generate_batch_size=8)
    faulty = RolloutPool(cfg, policy_pair[0], max_replacements=1)
    try:
        replaced: list[list[int]] = []
        faulty.on_replaced = replaced.append
        victim = faulty.pids()[1]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and os.path.exists(f"/proc/{victim}"):
            time.sleep(0.05)
        out = faulty.generate(prompts, sampling, seed=11)
        assert replaced == [[1]] and faulty.replacements == 1
        assert faulty.pids()[1] != victim
        assert _tokens(out) == expected
    finally:
        faulty.shutdown()


@pytest.mark.slow
def test_verify_fails_and_names_the_worker_whose_weights_differ(pool, policy_pair, monkeypatch, caplog):
    """WeightSync.verify against the real workers' digests: equal weights give sync/match 1; one element off by one
    ulp in one worker, or a stale replica still holding the initial weights, give 0 and the log names that worker.
    (The learner's side is a stand-in that returns the digest of what it would send.)"""
    import logging

    import ray
    from transformers import AutoModelForCausalLM

    from cluster.weight_sync import WeightSync

    # Nested, so Ray ships them by value to the workers (which cannot import this test module).
    def _hold(worker, state: dict) -> None:
        """In a rollout worker: its engine's weights become `state` (what a broadcast of `state` leaves)."""
        with torch.no_grad():
            for name, param in worker.engine.model.named_parameters():
                param.copy_(state[name])

    def _nudge_one_element(worker, name: str) -> None:
        """In a rollout worker: one element of one tensor moves by one ulp."""
        with torch.no_grad():
            flat = dict(worker.engine.model.named_parameters())[name].view(-1)
            flat[0] = torch.nextafter(flat[0], torch.tensor(10.0))

    def state_of(path):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        return {name: p.detach().clone() for name, p in model.named_parameters()}

    current, initial = state_of(policy_pair[1]), state_of(policy_pair[0])
    learner = type("Learner", (), {"param_metas": lambda self, dtype: [],
                                   "weights_digest": lambda self, metas: weights_digest(current.items())})()
    monkeypatch.setattr(WeightSync, "connect", lambda self: None)  # no weight group: only verify() is exercised
    sync = WeightSync(learner, pool, backend="gloo", bucket_mb=1, timeout_s=60, wire_dtype="float32", verify=True)

    ray.get([w.__ray_call__.remote(_hold, current) for w in pool.workers])
    assert sync.verify() == {"sync/match": 1.0, "sync/matching_workers": 2}

    caplog.set_level(logging.WARNING, logger="cluster.weight_sync")
    ray.get(pool.workers[1].__ray_call__.remote(_nudge_one_element, "model.norm.weight"))
    assert sync.verify() == {"sync/match": 0.0, "sync/matching_workers": 1}
    assert "rollout worker(s) [1] hold weights that differ" in caplog.text

    caplog.clear()
    ray.get(pool.workers[1].__ray_call__.remote(_hold, current))
    ray.get(pool.workers[0].__ray_call__.remote(_hold, initial))  # a stale replica: it missed the broadcast
    assert sync.verify() == {"sync/match": 0.0, "sync/matching_workers": 1}
    assert "rollout worker(s) [0] hold weights that differ" in caplog.text
