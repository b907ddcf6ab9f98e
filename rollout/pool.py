"""The pool of policy rollout workers as Ray actors: shards prompts evenly across them, reassembles completions in prompt order, and fans weight updates out to every worker."""

from __future__ import annotations

import logging
import time

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rollout.config import RolloutConfig, SamplingConfig
from rollout.engines.base import derive_seed
from rollout.types import Completion
from rollout.worker import RolloutWorker

log = logging.getLogger(__name__)


def shard_sizes(num_items: int, num_shards: int) -> list[int]:
    """Contiguous shard sizes that differ by at most one, larger shards first: 10 over 4 is [3, 3, 2, 2]."""
    base, extra = divmod(num_items, num_shards)
    return [base + (1 if i < extra else 0) for i in range(num_shards)]


class RolloutPool:
    """`cfg.num_workers` RolloutWorker actors.

    Resources per worker come from the config. A driver that plans placement passes `placement_group` and the bundle
    index of each worker (`bundle_indices`, one per worker; for vLLM with tensor_parallel_size > 1, tp one-GPU
    bundles per worker, flattened, the first of which must also hold the worker's `num_cpus_per_worker`). Without
    one, transformers and single-GPU vLLM workers are scheduled freely, and tensor-parallel vLLM workers get a
    placement group of their own.
    """

    def __init__(
        self,
        cfg: RolloutConfig,
        model_path: str,
        placement_group: PlacementGroup | None = None,
        bundle_indices: list[int] | None = None,
    ):
        if cfg.num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {cfg.num_workers}")
        self.cfg = cfg
        self.model_path = model_path
        tp = cfg.tensor_parallel_size if cfg.engine == "vllm" else 1
        self.ranks_per_worker = tp  # weight-group ranks each worker holds
        self._own_placement_group: PlacementGroup | None = None
        bundles_per_worker = tp  # one bundle per worker, or one GPU bundle per tensor-parallel shard
        if tp > 1 and placement_group is None:
            placement_group = self._own_placement_group = _make_placement_group(cfg, tp)
            bundle_indices = list(range(cfg.num_workers * tp))
        if placement_group is not None:
            if bundle_indices is None:
                bundle_indices = list(range(cfg.num_workers * bundles_per_worker))
            if len(bundle_indices) != cfg.num_workers * bundles_per_worker:
                raise ValueError(
                    f"rollout pool needs {cfg.num_workers * bundles_per_worker} bundle indices "
                    f"({cfg.num_workers} workers x {bundles_per_worker}), got {len(bundle_indices)}"
                )

        self.workers = []
        for i in range(cfg.num_workers):
            worker_bundles = bundle_indices[i * bundles_per_worker : (i + 1) * bundles_per_worker] if bundle_indices else None
            options: dict = {"num_cpus": cfg.num_cpus_per_worker, "num_gpus": cfg.num_gpus_per_worker}
            if tp > 1:
                options["num_gpus"] = 0  # vLLM's own Ray workers take the GPUs of this worker's bundles
            if placement_group is not None:
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    placement_group=placement_group,
                    placement_group_bundle_index=worker_bundles[0],
                    placement_group_capture_child_tasks=tp > 1,
                )
            actor_cls = ray.remote(RolloutWorker).options(**options)
            self.workers.append(actor_cls.remote(model_path, cfg, i, worker_bundles if tp > 1 else None))
        ray.get([w.ready.remote() for w in self.workers])
        self.last_stats: dict = {}
        log.info("rollout pool: %d %s workers ready", cfg.num_workers, cfg.engine)

    @property
    def weight_group_world_size(self) -> int:
        """Members of the weight group: the learner (rank 0) and every rank of every worker."""
        return 1 + self.cfg.num_workers * self.ranks_per_worker

    def generate(self, prompts: list[list[int]], sampling: SamplingConfig, seed: int) -> list[list[Completion]]:
        """G completions per prompt, in prompt order; each worker gets a contiguous shard and a seed of its own."""
        if not prompts:
            return []
        start = time.perf_counter()
        refs, offsets = [], []
        offset = 0
        for rank, size in enumerate(shard_sizes(len(prompts), len(self.workers))):
            if size:
                worker_seed = derive_seed(seed, "worker", rank)
                refs.append(self.workers[rank].generate_with_stats.remote(prompts[offset : offset + size], sampling, worker_seed))
                offsets.append(offset)
            offset += size
        results = ray.get(refs)
        completions: list[list[Completion]] = []
        worker_stats = []
        for shard_offset, (shard, stats) in zip(offsets, results):
            for group in shard:
                for completion in group:
                    completion.prompt_index += shard_offset  # worker-local index -> request index
            completions.extend(shard)
            worker_stats.append(stats)
        seconds = time.perf_counter() - start
        generated = sum(s["generated_tokens"] for s in worker_stats)
        self.last_stats = {
            "workers": worker_stats,
            "generated_tokens": generated,
            "seconds": seconds,
            "tokens_per_s": generated / seconds if seconds > 0 else 0.0,
        }
        if len(completions) != len(prompts):
            raise RuntimeError(f"rollout pool got completions for {len(completions)} of {len(prompts)} prompts")
        return completions

    def init_weight_group(self, backend: str, host: str, port: int, timeout_s: float, world_size: int | None = None) -> list:
        """Starts every worker joining the weight group (worker i takes ranks 1 + i * ranks_per_worker ...); returns the
        ObjectRefs, so the driver can have the learner join (rank 0) before waiting on them."""
        world = self.weight_group_world_size
        if world_size is not None and world_size != world:
            raise ValueError(f"weight group world size {world_size} does not match the pool's {world} (learner + worker ranks)")
        return [
            w.init_weight_group.remote(backend, host, port, world, 1 + i * self.ranks_per_worker, timeout_s)
            for i, w in enumerate(self.workers)
        ]

    def receive_weights(self, metas: list, bucket_bytes: int, digest: bool = False) -> list:
        """Starts every worker receiving one broadcast; returns the ObjectRefs (each resolves to that worker's
        {"seconds", "bytes", "buckets", "weight_version", "rank"[, "digest"]}) so the learner can send meanwhile."""
        return [w.receive_weights.remote(metas, bucket_bytes, digest) for w in self.workers]

    def digests(self) -> list[str]:
        return ray.get([w.weights_digest.remote() for w in self.workers])

    def stats(self) -> list[dict]:
        return ray.get([w.stats.remote() for w in self.workers])

    def shutdown(self) -> None:
        for w in self.workers:
            try:
                ray.get(w.close.remote(), timeout=30)
            except Exception:  # a dead actor has nothing left to close
                log.debug("closing a rollout worker failed", exc_info=True)
            ray.kill(w)
        self.workers = []
        if self._own_placement_group is not None:
            remove_placement_group(self._own_placement_group)
            self._own_placement_group = None


def _make_placement_group(cfg: RolloutConfig, tp: int) -> PlacementGroup:
    """One one-GPU bundle per tensor-parallel shard of every worker, packed so a worker's shards share a node; the
    first bundle of each worker also holds the CPUs of the actor that drives the engine (vLLM's GPU workers take none)."""
    worker_bundles = [{"GPU": 1, "CPU": cfg.num_cpus_per_worker}] + [{"GPU": 1}] * (tp - 1)
    pg = placement_group(worker_bundles * cfg.num_workers, strategy="PACK")
    ray.get(pg.ready())
    return pg
