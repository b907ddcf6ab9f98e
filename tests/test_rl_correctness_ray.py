"""A rollout worker lost while several generations are queued on it (issue 22, item 7), on real Ray actors: it is
replaced once, not once per queued generation (which killed the healthy replacement), and every completion carries
the policy version of the weights that really sampled it, the regenerated shard's included."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from learner_inproc import tiny_policy
from rollout.config import RolloutConfig, SamplingConfig
from rollout.pool import RolloutPool

torch.set_num_threads(1)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_runtime():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _set_version(ray, worker, version: int) -> None:
    """What a broadcast of policy `version` leaves in the worker (the weights themselves are not the point here)."""
    ray.get(worker.__ray_call__.remote(lambda w, v=version: setattr(w, "policy_version", v)))


def test_a_worker_lost_under_two_queued_generations_is_replaced_once_and_stamps_its_version(ray_runtime, tmp_path):
    ray = ray_runtime
    policy = tiny_policy(tmp_path)
    pool = RolloutPool(RolloutConfig(num_replicas=2, num_cpus_per_replica=0.5, generate_batch_size=8), policy,
                       max_replacements=1)
    try:
        for worker in pool.workers:
            _set_version(ray, worker, 3)
        replaced: list[list[int]] = []

        def resend(workers: list[int]) -> None:
            # The driver's pipeline sends the learner's current weights, a step newer than the ones sampling now.
            replaced.append(workers)
            for index in workers:
                _set_version(ray, pool.workers[index], 4)

        pool.on_replaced = resend
        victim = pool.pids()[1]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and os.path.exists(f"/proc/{victim}"):
            time.sleep(0.05)

        prompts = [[5, 6, 7], [8, 9], [10, 11, 12], [13]]
        sampling = SamplingConfig(num_samples=2, max_new_tokens=6)
        step = pool.submit(prompts, sampling, seed=1)
        queued = pool.submit(prompts, sampling, seed=2)  # e.g. a refill or an evaluation, queued behind it
        first = pool.collect(step)
        assert replaced == [[1]] and pool.replacements == 1
        replacement = pool.pids()[1]
        second = pool.collect(queued)  # the same dead actor held this one: it must not be replaced again
        assert replaced == [[1]] and pool.replacements == 1
        assert pool.pids()[1] == replacement
        for groups in (first, second):
            versions = [[c.policy_version for c in group] for group in groups]
            assert versions == [[3, 3], [3, 3], [4, 4], [4, 4]]  # worker 0's shard, then the replacement's
    finally:
        pool.shutdown()
