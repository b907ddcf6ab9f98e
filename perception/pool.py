"""Describes the videos of many records on a pool of Ray actor replicas, reusing cached descriptions.

In question-independent mode each distinct video (by content hash) is described once and shared by all its records;
in question-aware mode each (video, question) pair is.  Uncached work is spread over the replicas (a few videos
queued per replica, collected with ray.wait), saved to the cache as it arrives, with a tqdm bar.  A record whose
video is missing or unusable is reported in the SkipReport with its file and the reason, never a crash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from embodied_data.records import Record, SkipReport
from perception.cache import DescriptionCache, description_key, file_sha256
from perception.config import PerceptionConfig
from perception.describer import DescribeResult, Describer
from perception.types import VideoDescription

log = logging.getLogger(__name__)


def vlm_question(record: Record) -> str:
    """The question as the VLM sees it in question-aware mode: its text and its options (objects may be named there)."""
    return f"{record.question}\n{record.choices_text()}" if record.choices else record.question


@dataclass
class _Task:
    video: str
    question: str | None
    record_ids: list[str] = field(default_factory=list)


def replica_tensor_parallel_size(cfg: PerceptionConfig) -> int:
    """GPUs (and bundles) per describer: the vLLM VLM's tensor-parallel size; other engines take one device or none."""
    from perception.engines import vlm_engine_class

    return cfg.vlm.tensor_parallel_size if vlm_engine_class(cfg.vlm.engine).tensor_parallel else 1


def reserve_perception_pool(name: str, cfg: PerceptionConfig):
    """The bundles of `cfg.num_replicas` describers: one each, or one per GPU of a tensor-parallel vLLM replica."""
    from actors import reserve_pool

    return reserve_pool(name, cfg.num_replicas, cfg.num_cpus_per_replica, cfg.num_gpus_per_replica,
                        tensor_parallel_size=replica_tensor_parallel_size(cfg))


class PerceptionPool:
    """`cfg.num_replicas` Describer actors (each `num_cpus_per_replica` CPUs, `num_gpus_per_replica` GPUs).

    `pool`, the driver's reservation (`actors.reserve_pool`), places replica i in its bundles (one, or one per GPU of a
    tensor-parallel vLLM replica); without it Ray places the replicas by their resource requests.
    """

    def __init__(self, cfg: PerceptionConfig, model_path: str, pool=None) -> None:
        from actors import ActorGroup

        if cfg.num_replicas < 1:
            raise ValueError(f"perception.num_replicas must be >= 1, got {cfg.num_replicas}")
        self.cfg = cfg
        self.model_path = model_path
        self.vlm_requests = 0  # VLM requests made on behalf of this pool's describe() calls
        self.videos_described = 0
        self.records_from_cache = 0  # records whose description was already in the cache
        tp = replica_tensor_parallel_size(cfg)
        self._own_pool = None
        if pool is None and tp > 1:  # a tensor-parallel engine needs bundles to place its GPU workers in
            pool = self._own_pool = reserve_perception_pool("perception-tp", cfg)
        if pool is not None and pool.bundles_per_replica != tp:
            raise ValueError(f"perception pool {pool.name!r} reserved {pool.bundles_per_replica} bundle(s) per replica; "
                             f"the VLM's tensor_parallel_size {tp} needs {tp}")

        def replica_args(index: int) -> tuple:
            return (cfg, model_path, None, pool.bundle_indices(index) if tp > 1 else None)

        # Describers start on the first describe() that finds work the cache does not hold (a run whose descriptions
        # are all cached loads no VLM), without waiting for them: their first tasks queue behind their model loads.
        self.actors = ActorGroup(
            "perception", Describer, replica_args, cfg.num_replicas, num_cpus=cfg.num_cpus_per_replica,
            num_gpus=cfg.num_gpus_per_replica, pool=pool, ray_max_restarts=1, start=False,
        )

    @property
    def replicas(self) -> list:
        return self.actors.handles

    def describe(
        self, records: list[Record], cache: DescriptionCache, question_aware: bool | None = None
    ) -> tuple[dict[str, VideoDescription], SkipReport]:
        """Descriptions by record id, and the records that could not be described (with their file and reason).

        `question_aware` overrides `cfg.question_aware` for this call (the replicas serve both modes).
        """
        if question_aware is None:
            question_aware = self.cfg.question_aware
        skipped = SkipReport()
        descriptions: dict[str, VideoDescription] = {}
        tasks: dict[str, _Task] = {}
        for record in records:
            try:
                video_hash = file_sha256(record.video)
            except OSError as error:
                skipped.add(record.id, f"video unreadable: {record.video}: {error.strerror or error}")
                continue
            question = vlm_question(record) if question_aware else None
            key = description_key(video_hash, self.cfg.keyframes, self.cfg.vlm, self.model_path, question)
            cached = cache.get(key)
            if cached is not None:
                descriptions[record.id] = cached
                self.records_from_cache += 1
                continue
            tasks.setdefault(key, _Task(record.video, question)).record_ids.append(record.id)
        if tasks:
            if not self.actors.handles:
                self.actors.launch()
            log.info("perception: %d records cached, %d descriptions to compute on %d replicas",
                     len(descriptions), len(tasks), len(self.replicas))
            self._run(tasks, cache, descriptions, skipped)
        cache.flush()
        if len(skipped):
            log.warning("perception: %s", skipped.summary())
        return descriptions, skipped

    def _run(self, tasks: dict[str, _Task], cache: DescriptionCache, descriptions: dict, skipped: SkipReport) -> None:
        import ray

        queue = list(tasks.items())
        queue.reverse()  # pop() from the end keeps the records' order
        in_flight: dict = {}  # ObjectRef -> (key, replica index)

        def submit(replica_index: int) -> None:
            if queue:
                key, task = queue.pop()
                ref = self.replicas[replica_index].try_describe_video.remote(task.video, task.question)
                in_flight[ref] = (key, replica_index)

        for _ in range(max(1, self.cfg.max_in_flight_per_replica)):
            for replica_index in range(len(self.replicas)):
                submit(replica_index)
        with tqdm(total=len(tasks), desc="perception", unit="video", dynamic_ncols=True) as bar:
            while in_flight:
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    key, replica_index = in_flight.pop(ref)
                    task = tasks[key]
                    try:
                        result: DescribeResult = ray.get(ref)
                    except ray.exceptions.RayError as error:  # a replica died or its task was lost
                        result = DescribeResult(None, f"perception failed: {task.video}: replica {replica_index}: "
                                                      f"{type(error).__name__}", 0, 0.0)
                    self.vlm_requests += result.vlm_requests
                    if result.description is not None:
                        self.videos_described += 1
                        cache.put(key, result.description, question=task.question, model=self.model_path)
                        if cache.num_pending >= self.cfg.cache_flush_every:
                            cache.flush()  # a killed run loses at most this many descriptions
                        for record_id in task.record_ids:
                            descriptions[record_id] = result.description
                    else:
                        for record_id in task.record_ids:
                            skipped.add(record_id, result.error or f"perception failed: {task.video}")
                    bar.update(1)
                    submit(replica_index)

    def replica_stats(self) -> list[dict]:
        """Each replica's own counters (videos described, VLM requests made) since it started."""
        import ray

        return ray.get([replica.stats.remote() for replica in self.replicas])

    def shutdown(self) -> None:
        self.actors.shutdown()
        if self._own_pool is not None:
            self._own_pool.release()
            self._own_pool = None
