"""The perception pool on real Ray actors: distinct videos described once, cached work skipped on the next run,
bad videos reported with their file and their records skipped."""

from __future__ import annotations

import os
import shutil

import pytest

from perception.cache import DescriptionCache
from perception.config import PerceptionConfig, VLMConfig
from perception.keyframes import extract_keyframes

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cfg() -> PerceptionConfig:
    return PerceptionConfig(vlm=VLMConfig(max_new_tokens=8, batch_size=8), num_replicas=2, num_cpus_per_replica=0.5)


@pytest.fixture(scope="module")
def pool(ray_local, tiny_vlm, cfg):
    from perception.pool import PerceptionPool

    pool = PerceptionPool(cfg, tiny_vlm)
    yield pool
    pool.shutdown()


@pytest.mark.slow
def test_pool_describes_each_video_once_and_reuses_the_cache(pool, cfg, realdata, tmp_path, make_record):
    videos = realdata / "urbanvideo_bench" / "videos"
    first = videos / "AerialVLN_0_30BUDKLTXMTIKYKFIPPOXCMISXQE5S.mp4"
    second = videos / "AerialVLN_1_30BUDKLTXMTIKYKFIPPOXCMISXQE5S.mp4"
    copy_of_second = tmp_path / "renamed_copy.mp4"  # same bytes under another name: same description
    shutil.copy(second, copy_of_second)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(5000))
    records = [
        make_record(id="q1", video=str(first), question="Where is the tall tower?"),
        make_record(id="q2", video=str(first), question="Which way did the drone turn?"),
        make_record(id="q3", video=str(second), question="What is below the drone?"),
        make_record(id="q4", video=str(copy_of_second), question="Is the road to the left?"),
        make_record(id="bad1", video=str(corrupt), question="Anything?"),
        make_record(id="bad2", video=str(corrupt), question="Anything else?"),
        make_record(id="gone", video=str(tmp_path / "missing.mp4"), question="Nothing?"),
    ]
    keyframe_counts = {v: len(extract_keyframes(str(v), cfg.keyframes).indices) for v in (first, second)}

    cache = DescriptionCache(tmp_path / "cache")
    descriptions, skipped = pool.describe(records, cache)
    assert set(descriptions) == {"q1", "q2", "q3", "q4"}
    assert pool.vlm_requests == sum(keyframe_counts.values()), "VLM calls = key frames over distinct videos"
    assert descriptions["q1"] is descriptions["q2"] and descriptions["q3"] is descriptions["q4"]
    assert len(descriptions["q1"].frames) == keyframe_counts[first]
    assert len(descriptions["q3"].frames) == keyframe_counts[second]
    reasons = dict(skipped.skipped)
    assert set(reasons) == {"bad1", "bad2", "gone"} and len(skipped) == 3
    assert str(corrupt) in reasons["bad1"] and reasons["bad1"].startswith("bad video")
    assert str(tmp_path / "missing.mp4") in reasons["gone"]
    assert skipped.counts_by_reason() == {"bad video": 2, "video unreadable": 1}
    per_replica = pool.replica_stats()
    assert sum(s["vlm_requests"] for s in per_replica) == pool.vlm_requests
    assert all(s["vlm_requests"] > 0 for s in per_replica), "the work is spread over both replicas"

    # A second run (fresh cache object over the same folder) does no VLM work and returns the same text.
    requests_before = pool.vlm_requests
    reloaded = DescriptionCache(tmp_path / "cache")
    assert len(reloaded) == 2
    again, skipped_again = pool.describe(records[:4], reloaded)
    assert pool.vlm_requests == requests_before
    assert {k: d.to_text() for k, d in again.items()} == {k: d.to_text() for k, d in descriptions.items()}
    assert len(skipped_again) == 0


@pytest.mark.slow
def test_question_aware_mode_describes_each_question(pool, cfg, realdata, tmp_path, make_record):
    """Question-aware keys: each distinct (video, question) pair is its own description."""
    video = realdata / "urbanvideo_bench" / "videos" / "AerialVLN_1_30BUDKLTXMTIKYKFIPPOXCMISXQE5S.mp4"
    records = [make_record(id="a", video=str(video), question="Where is the bridge?"),
               make_record(id="b", video=str(video), question="What is ahead?"),
               make_record(id="c", video=str(video), question="Where is the bridge?")]
    cache = DescriptionCache(tmp_path / "cache")
    requests_before = pool.vlm_requests
    descriptions, skipped = pool.describe(records, cache, question_aware=True)
    keyframes = len(extract_keyframes(str(video), cfg.keyframes).indices)
    assert len(skipped) == 0 and set(descriptions) == {"a", "b", "c"}
    assert pool.vlm_requests - requests_before == 2 * keyframes, "two distinct questions, one description each"
    assert descriptions["a"] is descriptions["c"] and descriptions["a"] is not descriptions["b"]
    assert len(cache) == 2
    # The question-independent description of the same video is a different cache entry.
    pool.describe(records[:1], cache, question_aware=False)
    assert len(cache) == 3
