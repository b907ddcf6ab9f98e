"""The description cache: content-addressed keys, parquet round trip, resume after a kill, atomic shards."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from perception.cache import DescriptionCache, description_key, file_sha256
from perception.config import KeyframeConfig, VLMConfig
from perception.parse import parse_differential, parse_first_frame
from perception.types import VideoDescription

REPO = Path(__file__).resolve().parents[1]


def make_description(name: str, n: int = 3) -> VideoDescription:
    frames = [parse_first_frame(f"{name}: a road ahead, 1.5 m wide.")]
    frames += [parse_differential(f"1. Move forward\n2. {name} view {i}\n3. object {i}") for i in range(1, n)]
    return VideoDescription(video=f"/videos/{name}.mp4", frames=frames, keyframe_indices=list(range(0, 2 * n, 2)),
                            keyframe_frames=list(range(0, 10 * n, 10)))


def test_key_depends_on_content_and_settings(tmp_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"video bytes")
    renamed = tmp_path / "sub" / "b.mp4"
    renamed.parent.mkdir()
    shutil.copy(video, renamed)
    other = tmp_path / "c.mp4"
    other.write_bytes(b"other bytes")
    kf, vlm = KeyframeConfig(), VLMConfig()
    base = description_key(file_sha256(video), kf, vlm, "model-a", None)
    assert base == description_key(file_sha256(renamed), kf, vlm, "model-a", None), "same bytes, same key"
    variants = [
        description_key(file_sha256(other), kf, vlm, "model-a", None),
        description_key(file_sha256(video), KeyframeConfig(overlap_threshold=0.6), vlm, "model-a", None),
        description_key(file_sha256(video), kf, vlm, "model-b", None),
        description_key(file_sha256(video), kf, vlm, "model-a", "what is left of the car?"),
        description_key(file_sha256(video), kf, vlm, "model-a", None, prompt_version="other-prompts"),
        description_key(file_sha256(video), kf, VLMConfig(max_new_tokens=7), "model-a", None),
    ]
    assert len({base, *variants}) == len(variants) + 1
    # The engine that runs the model does not change the key (same model, same greedy text).
    assert base == description_key(file_sha256(video), kf, VLMConfig(engine="vllm"), "model-a", None)
    # Nor do the key-frame settings that change only the speed (the same key frames: tests/test_perception_ransac.py,
    # test_threaded_and_sequential_extraction_are_identical); the key also stays what it was before they existed.
    fast = KeyframeConfig(ransac_engine="opencv", feature_threads=3, decoder="opencv", matcher="opencv")
    assert base == description_key(file_sha256(video), fast, vlm, "model-a", None)
    assert base == _key_without_speed_settings(file_sha256(video), kf, vlm, "model-a")
    with pytest.raises(OSError):
        file_sha256(tmp_path / "missing.mp4")


def _key_without_speed_settings(video_sha256: str, keyframes: KeyframeConfig, vlm: VLMConfig, model: str) -> str:
    """The key as computed before KeyframeConfig had speed-only settings (caches written then must still hit)."""
    import dataclasses
    import hashlib
    import json

    from perception.keyframes import KEYFRAME_RULE_VERSION
    from perception.prompts import PROMPT_VERSION

    settings = dataclasses.asdict(keyframes)
    del settings["ransac_engine"], settings["feature_threads"], settings["decoder"], settings["matcher"]
    material = {
        "video_sha256": video_sha256, "keyframes": settings, "keyframe_rule": KEYFRAME_RULE_VERSION, "model": model,
        "generation": {"max_new_tokens": vlm.max_new_tokens, "temperature": vlm.temperature, "image_size": vlm.image_size},
        "prompt_version": PROMPT_VERSION, "question_aware": False, "question": None,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()


def test_round_trip(tmp_path):
    with DescriptionCache(tmp_path / "cache", flush_every=100) as cache:
        for name in ("a", "b"):
            cache.put(f"key-{name}", make_description(name), question=None, model="m")
        assert cache.num_pending == 2
    reloaded = DescriptionCache(tmp_path / "cache")
    assert len(reloaded) == 2 and "key-a" in reloaded and reloaded.get("missing") is None
    for name in ("a", "b"):
        assert dataclasses.asdict(reloaded.get(f"key-{name}")) == dataclasses.asdict(make_description(name))
    assert reloaded.get("key-a").to_text() == make_description("a").to_text()


def test_flush_every_writes_shards_and_resume_after_kill(tmp_path):
    """A writer killed (os._exit, no cleanup) after 5 puts with flush_every=2 leaves 2 shards = 4 descriptions."""
    folder = tmp_path / "cache"
    script = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from perception.cache import DescriptionCache\n"
        "from test_perception_cache import make_description\n"
        f"cache = DescriptionCache({str(folder)!r}, flush_every=2)\n"
        "for i in range(5):\n"
        "    cache.put(f'key-{i}', make_description(f'v{i}'))\n"
        "os._exit(9)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 9, result.stderr
    shards = sorted(folder.glob("shard-*.parquet"))
    assert len(shards) == 2
    resumed = DescriptionCache(folder, flush_every=2)
    assert sorted(k for k in (f"key-{i}" for i in range(5)) if k in resumed) == ["key-0", "key-1", "key-2", "key-3"]
    # Resuming only adds what is missing; nothing already described is lost or duplicated into a broken state.
    resumed.put("key-4", make_description("v4"))
    resumed.flush()
    assert len(DescriptionCache(folder)) == 5


def test_failed_write_leaves_no_shard(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    cache = DescriptionCache(folder, flush_every=100)
    cache.put("key-ok", make_description("ok"))
    cache.flush()

    def crash_midway(table, sink, *args, **kwargs):
        sink.write(b"PAR1 half a shard")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(pq, "write_table", crash_midway)
    cache.put("key-lost", make_description("lost"))
    with pytest.raises(KeyboardInterrupt):
        cache.flush()
    monkeypatch.undo()
    assert len(list(folder.glob("shard-*.parquet"))) == 1
    assert not list(folder.glob(".tmp-*")), "the temp file is removed"
    reloaded = DescriptionCache(folder)
    assert "key-ok" in reloaded and "key-lost" not in reloaded and not reloaded.corrupt_shards


def test_corrupt_shard_is_reported_and_ignored(tmp_path, caplog):
    folder = tmp_path / "cache"
    cache = DescriptionCache(folder)
    cache.put("key-good", make_description("good"))
    cache.flush()
    bad = folder / "shard-0-deadbeef.parquet"
    bad.write_bytes(b"PAR1 not really parquet")
    (folder / ".tmp-abandoned.parquet").write_bytes(b"half")  # what a kill during a write can leave
    with caplog.at_level("WARNING"):
        reloaded = DescriptionCache(folder)
    assert "key-good" in reloaded and len(reloaded) == 1
    assert reloaded.corrupt_shards == [str(bad)]
    assert str(bad) in caplog.text


def test_compact_merges_shards(tmp_path):
    folder = tmp_path / "cache"
    cache = DescriptionCache(folder, flush_every=1)
    for i in range(4):
        cache.put(f"key-{i}", make_description(f"v{i}"))
    assert len(list(folder.glob("shard-*.parquet"))) == 4
    merged = cache.compact()
    assert [Path(merged)] == list(folder.glob("shard-*.parquet"))
    assert len(DescriptionCache(folder)) == 4
    assert not os.listdir(folder) or all(not name.startswith(".tmp-") for name in os.listdir(folder))
