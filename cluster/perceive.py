"""The perception phase of a run: every training video described once (cached), before the training pools start."""

from __future__ import annotations

import logging

from cluster.data import RunData
log = logging.getLogger(__name__)


def describe_videos(cfg, data: RunData, vlm_path: str) -> dict[str, str]:
    """Record id -> video text (`Frame 0: Observe: ...`). Records whose video cannot be described are reported, counted
    and left out of the table; they never become a prompt with an empty video."""
    if cfg.perception.source == "ground_truth":
        return _ground_truth_texts(data)
    from perception.cache import DescriptionCache
    from perception.pool import PerceptionPool, reserve_perception_pool

    pool = reserve_perception_pool("perception", cfg.perception)
    try:
        perception = PerceptionPool(cfg.perception, vlm_path, pool=pool)
        with DescriptionCache(cfg.perception.cache_dir) as cache:
            descriptions, skipped = perception.describe(data.records, cache)
        log.info("perception: %d VLM requests this run; %s", perception.vlm_requests, skipped.summary())
        perception.shutdown()
    finally:
        pool.release()  # the perception bundles go back before the training pools ask for theirs
    return {record_id: description.to_text() for record_id, description in descriptions.items()}


def _ground_truth_texts(data: RunData) -> dict[str, str]:
    """Privileged simulator captions (synthetic data only): for training the reasoning side without a VLM."""
    if not data.gt_captions:
        raise ValueError(
            f"perception.source=ground_truth needs ground-truth captions, and {data.manifest} has none "
            "(only synthetic datasets carry them); use perception.source=vlm"
        )
    texts = {r.id: data.gt_captions[r.video] for r in data.records if r.video in data.gt_captions}
    missing = len(data.records) - len(texts)
    if missing:
        log.warning("%d records have no ground-truth caption and are left out", missing)
    return texts
