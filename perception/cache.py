"""Content-addressed, resumable cache of video descriptions in parquet shards.

Key = sha256 over (sha256 of the video file's bytes, the key-frame settings and rule version, the VLM model id/path and
the generation settings that change its text, PROMPT_VERSION, the mode, and the question in question-aware mode).
Moving or renaming a video keeps its descriptions; changing any setting that changes the text misses the cache.

Each flush writes the pending descriptions as a new shard: a temp file in the same folder (``.tmp-*``), fsync'ed,
then ``os.replace``'d to ``shard-<time>-<random>.parquet``.  Loading reads every shard, so a killed run loses at
most its unflushed descriptions and never leaves a half-written shard under a shard name; an unreadable shard (e.g.
damaged by hand) is reported by name, listed in `corrupt_shards`, and ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from embodied_data.atomic import atomic_path
from perception.config import KeyframeConfig, VLMConfig
from perception.keyframes import KEYFRAME_RULE_VERSION
from perception.prompts import PROMPT_VERSION
from perception.types import FrameDescription, VideoDescription

log = logging.getLogger(__name__)

SHARD_PREFIX = "shard-"
_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("video", pa.string()),
        ("question", pa.string()),
        ("model", pa.string()),
        ("prompt_version", pa.string()),
        ("keyframe_indices", pa.list_(pa.int64())),
        ("keyframe_frames", pa.list_(pa.int64())),
        ("frames", pa.string()),  # JSON list of FrameDescription fields: survives new fields with defaults
        ("created", pa.float64()),
    ]
)
_FRAME_FIELDS = {f.name for f in dataclasses.fields(FrameDescription)}
_hash_memo: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (memoised per path, size and mtime); raises OSError for a missing/unreadable file."""
    resolved = os.path.realpath(path)
    stat = os.stat(resolved)
    memo_key = (resolved, stat.st_size, stat.st_mtime_ns)
    if memo_key not in _hash_memo:
        digest = hashlib.sha256()
        with open(resolved, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _hash_memo[memo_key] = digest.hexdigest()
    return _hash_memo[memo_key]


_SPEED_ONLY_KEYFRAME_SETTINGS = frozenset({"ransac_engine", "feature_threads", "decoder", "matcher"})


def description_key(
    video_sha256: str,
    keyframes: KeyframeConfig,
    vlm: VLMConfig,
    model: str,
    question: str | None,
    prompt_version: str = PROMPT_VERSION,
) -> str:
    """The cache key of one description; `question` None means question-independent mode."""
    material = {
        "video_sha256": video_sha256,
        # How the key frames are computed (engine, threads) gives the same key frames: not part of the key.
        "keyframes": {k: v for k, v in dataclasses.asdict(keyframes).items() if k not in _SPEED_ONLY_KEYFRAME_SETTINGS},
        "keyframe_rule": KEYFRAME_RULE_VERSION,
        "model": model,
        # Settings that change the generated text (the engine kind does not: same model, same greedy text).
        "generation": {"max_new_tokens": vlm.max_new_tokens, "temperature": vlm.temperature, "image_size": vlm.image_size},
        "prompt_version": prompt_version,
        "question_aware": question is not None,
        "question": question,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()


class DescriptionCache:
    """Video descriptions by key, loaded from and flushed to parquet shards in `folder`."""

    def __init__(self, folder: str | os.PathLike, flush_every: int = 8) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.flush_every = max(1, flush_every)
        self.corrupt_shards: list[str] = []
        self.shards_written: list[str] = []
        self._entries: dict[str, VideoDescription] = {}
        self._pending: list[dict] = []
        self._load()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __enter__(self) -> "DescriptionCache":
        return self

    def __exit__(self, *exc_info) -> None:
        self.flush()

    def get(self, key: str) -> VideoDescription | None:
        return self._entries.get(key)

    def put(self, key: str, description: VideoDescription, question: str | None = None, model: str = "") -> None:
        """Adds a description; every `flush_every` puts are written as one shard."""
        self._entries[key] = description
        self._pending.append(_to_row(key, description, question, model))
        if len(self._pending) >= self.flush_every:
            self.flush()

    @property
    def num_pending(self) -> int:
        return len(self._pending)

    def flush(self) -> str | None:
        """Writes the pending descriptions as a new shard (atomically); returns its path, or None if none were pending."""
        if not self._pending:
            return None
        table = pa.Table.from_pylist(self._pending, schema=_SCHEMA)
        path = self._write_shard(table)
        self._pending = []
        return path

    def compact(self) -> str | None:
        """Rewrites every readable shard as one; the old shards are removed only after the new one is in place."""
        self.flush()
        corrupt = {Path(p).name for p in self.corrupt_shards}
        old = sorted(p for p in self.folder.glob(f"{SHARD_PREFIX}*.parquet") if p.name not in corrupt)
        if len(old) <= 1:
            return str(old[0]) if old else None
        rows = []
        for path in old:
            rows.extend(pq.read_table(path).to_pylist())
        path = self._write_shard(pa.Table.from_pylist(rows, schema=_SCHEMA))
        for stale in old:
            stale.unlink(missing_ok=True)
        return path

    def _write_shard(self, table: pa.Table) -> str:
        final = self.folder / f"{SHARD_PREFIX}{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        with atomic_path(final) as tmp, open(tmp, "wb") as sink:
            pq.write_table(table, sink)
            sink.flush()
            os.fsync(sink.fileno())
        self.shards_written.append(str(final))
        return str(final)

    def _load(self) -> None:
        for path in sorted(self.folder.glob(f"{SHARD_PREFIX}*.parquet")):
            try:
                rows = pq.read_table(path).to_pylist()
                entries = {row["key"]: _from_row(row) for row in rows}
            except Exception as error:  # any damage: skip this shard, keep the rest usable
                log.warning("description cache: ignoring unreadable shard %s (%s: %s)", path, type(error).__name__, error)
                self.corrupt_shards.append(str(path))
                continue
            self._entries.update(entries)


def _to_row(key: str, description: VideoDescription, question: str | None, model: str) -> dict:
    return {
        "key": key,
        "video": description.video,
        "question": question,
        "model": model,
        "prompt_version": PROMPT_VERSION,
        "keyframe_indices": list(description.keyframe_indices),
        "keyframe_frames": list(description.keyframe_frames),
        "frames": json.dumps([dataclasses.asdict(frame) for frame in description.frames]),
        "created": time.time(),
    }


def _from_row(row: dict) -> VideoDescription:
    frames = [FrameDescription(**{k: v for k, v in frame.items() if k in _FRAME_FIELDS}) for frame in json.loads(row["frames"])]
    return VideoDescription(
        video=row["video"],
        frames=frames,
        keyframe_indices=list(row["keyframe_indices"] or []),
        keyframe_frames=list(row["keyframe_frames"] or []),
    )
