"""The pool of policy rollout workers as Ray actors: shards prompts evenly across them, reassembles completions in prompt order, fans weight updates out to every worker, and replaces a worker that dies mid-generation."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import ray

from actors import ActorGroup, Pool, reserve_pool
from rollout.config import RolloutConfig, SamplingConfig
from rollout.engines import engine_class, resolve_engine
from rollout.engines.base import prompt_seeds
from rollout.types import Completion
from rollout.worker import RolloutWorker

log = logging.getLogger(__name__)


@dataclass
class Shard:
    """A worker's contiguous part of one generation request."""

    rank: int  # the worker's index in the pool
    offset: int  # position of its first prompt in the request
    prompts: list[list[int]]
    seeds: list[int]


@dataclass
class PendingGeneration:
    """A submitted generation request: what each worker was given and the results to wait on (`RolloutPool.collect`)."""

    num_prompts: int
    sampling: SamplingConfig
    shards: list[Shard]
    refs: dict  # worker index -> ObjectRef of (completions, stats)
    submitted_at: float
    workers: dict = field(default_factory=dict)  # worker index -> the actor handle its shard was given to


def shard_sizes(num_items: int, num_shards: int) -> list[int]:
    """Contiguous shard sizes that differ by at most one, larger shards first: 10 over 4 is [3, 3, 2, 2]."""
    base, extra = divmod(num_items, num_shards)
    return [base + (1 if i < extra else 0) for i in range(num_shards)]


def worker_tensor_parallel_size(cfg: RolloutConfig) -> int:
    """GPUs (and bundles) per worker: vLLM's tensor-parallel size; a transformers engine runs on one device."""
    return cfg.tensor_parallel_size if engine_class(resolve_engine(cfg)).tensor_parallel else 1


def reserve_rollout_pool(name: str, cfg: RolloutConfig, timeout_s: float = 120.0) -> Pool:
    """The bundles of `cfg.num_replicas` rollout workers: one each, or one per tensor-parallel GPU."""
    return reserve_pool(name, cfg.num_replicas, cfg.num_cpus_per_replica, cfg.num_gpus_per_replica,
                        timeout_s=timeout_s, tensor_parallel_size=worker_tensor_parallel_size(cfg),
                        resources=dict(cfg.resources) or None)


class RolloutPool:
    """`cfg.num_replicas` RolloutWorker actors.

    `pool` is the driver's reservation (`actors.reserve_pool` with the rollout's tensor-parallel size): worker i takes
    replica i's bundles, one per tensor-parallel shard. Without one, transformers and single-GPU vLLM workers are
    scheduled freely, and tensor-parallel vLLM workers get a reservation of their own.

    Faults: a worker that dies while generating is replaced in its bundles (at most `max_replacements` over the pool's
    life); `on_replaced` (set by the driver's rollout pipeline) then gives every worker the learner's current weights,
    and the lost shard is generated again with the seeds it had, so in the synchronous loop the step's completions are
    the ones it would have had.
    """

    def __init__(self, cfg: RolloutConfig, model_path: str, pool: Pool | None = None, max_replacements: int = 0,
                 wait: bool = True):
        """`wait=False` returns as soon as the workers are created (their engines load meanwhile, e.g. while the
        driver starts the learner); `wait_ready()` then waits for them."""
        if cfg.num_replicas < 1:
            raise ValueError(f"num_replicas must be at least 1, got {cfg.num_replicas}")
        if cfg.engine == "auto":  # decided once here, so every worker (and every replacement) runs the same engine
            cfg = dataclasses.replace(cfg, engine=resolve_engine(cfg))
            log.info("rollout.engine=auto: %s", cfg.engine)
        self.cfg = cfg
        self.model_path = model_path
        tp = worker_tensor_parallel_size(cfg)
        self.ranks_per_worker = tp  # weight-group ranks each worker holds
        self._own_pool: Pool | None = None
        if pool is None and tp > 1:
            pool = self._own_pool = reserve_rollout_pool("rollout-tp", cfg)
        if pool is not None and pool.bundles_per_replica != tp:
            raise ValueError(
                f"rollout pool {pool.name!r} reserved {pool.bundles_per_replica} bundle(s) per worker; "
                f"tensor_parallel_size {tp} needs {tp}"
            )
        self.pool = pool

        def worker_args(index: int) -> tuple:
            return (model_path, cfg, index, pool.bundle_indices(index) if tp > 1 else None)

        self.actors = ActorGroup(
            "rollout", RolloutWorker, worker_args, cfg.num_replicas, num_cpus=cfg.num_cpus_per_replica,
            num_gpus=cfg.num_gpus_per_replica, pool=pool, max_replacements=max_replacements, start=False,
        )
        self.actors.launch()
        self.on_replaced: Callable[[list[int]], None] | None = None
        self.last_stats: dict = {}
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Waits until every worker has loaded its engine (ActorGroupError names a worker that failed or is slow)."""
        self.actors.wait_ready(range(self.cfg.num_replicas))
        log.info("rollout pool: %d %s workers ready", self.cfg.num_replicas, self.cfg.engine)

    @property
    def workers(self) -> list:
        return self.actors.handles

    @property
    def replacements(self) -> int:
        return self.actors.replacements

    @property
    def weight_group_world_size(self) -> int:
        """Members of the weight group: the learner (rank 0) and every rank of every worker."""
        return 1 + self.cfg.num_replicas * self.ranks_per_worker

    def generate(self, prompts: list[list[int]], sampling: SamplingConfig, seed: int | list[int]) -> list[list[Completion]]:
        """G completions per prompt, in prompt order: `collect(submit(...))`."""
        return self.collect(self.submit(prompts, sampling, seed))

    def submit(self, prompts: list[list[int]], sampling: SamplingConfig, seed: int | list[int]) -> PendingGeneration:
        """Starts generating without waiting: each worker gets a contiguous shard with the shard's prompt seeds
        (`prompt_seeds(seed)`), so a prompt's completions do not depend on the worker count, and a replacement worker
        regenerates exactly what the lost one would have. The workers run it after whatever they were given before."""
        seeds = prompt_seeds(seed, len(prompts))
        shards: list[Shard] = []
        offset = 0
        for rank, size in enumerate(shard_sizes(len(prompts), len(self.workers))):
            if size:
                shards.append(Shard(rank, offset, prompts[offset : offset + size], seeds[offset : offset + size]))
            offset += size
        refs = {shard.rank: self.workers[shard.rank].generate_with_stats.remote(shard.prompts, sampling, shard.seeds) for shard in shards}
        given_to = {shard.rank: self.workers[shard.rank] for shard in shards}
        return PendingGeneration(len(prompts), sampling, shards, refs, time.perf_counter(), given_to)

    def collect(self, pending: PendingGeneration) -> list[list[Completion]]:
        """Waits for a submitted generation; a worker that died meanwhile is replaced, `on_replaced` runs, and its
        shard is generated again with the same seeds. Returns the completions in prompt order.

        A worker is replaced once however many generations it held: when another collect (an earlier step's, a refill,
        an evaluation) or a health check has already replaced the actor this shard was given to, the shard just goes to
        the replacement, which already holds the current weights (replacing it again would kill a healthy worker).
        Each completion carries the policy version of the worker that generated it (`Completion.policy_version`)."""
        if not pending.shards:
            return []
        results: dict[int, tuple] = {}
        refs = dict(pending.refs)
        given_to = dict(pending.workers)
        while refs:
            lost = []
            for rank, ref in refs.items():
                try:
                    results[rank] = ray.get(ref)
                except ray.exceptions.ActorDiedError as error:
                    lost.append((rank, error))
            refs = {}
            if lost:
                dead = [rank for rank, _ in lost if given_to.get(rank) is None or given_to[rank] is self.workers[rank]]
                self.actors.replace_all(dead, f"{type(lost[0][1]).__name__} while generating")
                if dead and self.on_replaced is not None:
                    self.on_replaced(dead)
                for rank, _ in lost:
                    shard = next(s for s in pending.shards if s.rank == rank)
                    given_to[rank] = self.workers[rank]
                    refs[rank] = self.workers[rank].generate_with_stats.remote(shard.prompts, pending.sampling, shard.seeds)
        completions: list[list[Completion]] = []
        worker_stats = []
        for shard in pending.shards:
            shard_completions, stats = results[shard.rank]
            for group in shard_completions:
                for completion in group:
                    completion.prompt_index += shard.offset  # worker-local index -> request index
            completions.extend(shard_completions)
            worker_stats.append(stats)
        seconds = time.perf_counter() - pending.submitted_at
        generated = sum(s["generated_tokens"] for s in worker_stats)
        self.last_stats = {
            "workers": worker_stats,
            "generated_tokens": generated,
            "seconds": seconds,
            "tokens_per_s": generated / seconds if seconds > 0 else 0.0,
        }
        if len(completions) != pending.num_prompts:
            raise RuntimeError(f"rollout pool got completions for {len(completions)} of {pending.num_prompts} prompts")
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

    def receive_weights(self, plan, digest: bool = False, version: int | None = None) -> list:
        """Starts every worker receiving one broadcast of policy `version` along the driver's bucket plan; returns the
        ObjectRefs (each resolves to that worker's {"seconds", "bytes", "buckets", "weight_version", "policy_version",
        "rank"[, "digest"]}) so the learner can send meanwhile."""
        return [w.receive_weights.remote(plan, digest, version) for w in self.workers]

    def set_policy_version(self, version: int) -> None:
        """Relabels the weights every worker holds as policy `version` (a step that changed no weight)."""
        ray.get([w.set_policy_version.remote(version) for w in self.workers])

    def digest_at_receive_only(self) -> bool:
        """Whether the workers' engines can only digest their weights at receive time (every worker runs one engine kind)."""
        return bool(ray.get(self.workers[0].digest_at_receive_only.remote()))

    def digests(self) -> list[str]:
        return ray.get([w.weights_digest.remote() for w in self.workers])

    def stats(self) -> list[dict]:
        return ray.get([w.stats.remote() for w in self.workers])

    def replace_dead(self) -> list[int]:
        """Health check: replaces every worker that no longer answers; returns their indices."""
        dead = self.actors.dead()
        self.actors.replace_all(dead, "found dead by a health check")
        return dead

    def pids(self) -> list[int]:
        """The process id of every worker (for fault tests and operators)."""
        return self.actors.run("pid")

    def shutdown(self) -> None:
        """Asks every worker that may be alive to close its engine (30 s at most for all of them together), then kills
        them all. A worker whose bundles no live node holds (a lost node's replacement, still waiting) is not asked:
        it never started, and a call to it would only wait out the timeout."""
        pool = self.actors.pool
        unplaced = set(pool.unplaced_bundles()) if pool is not None and self.workers else set()
        closing = [worker.close.remote() for index, worker in enumerate(self.workers)
                   if pool is None or not unplaced.intersection(pool.bundle_indices(index))]
        _, unanswered = ray.wait(closing, num_returns=len(closing), timeout=30) if closing else ([], [])
        if unanswered:
            log.debug("%d rollout worker(s) did not close in 30 s", len(unanswered))
        self.actors.shutdown()
        if self._own_pool is not None:
            self._own_pool.release()
            self._own_pool = None
