"""Atomic file writes: write to a temp file beside the target, then os.replace() it into place, so readers only ever
see the old file or the complete new one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_PREFIX = ".tmp-"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a not-yet-existing temp path in `path`'s folder; on success it is renamed to `path`, on any exception
    (KeyboardInterrupt included) it is removed and `path` is left as it was.

    The temp name is `.tmp-<random>-<final name>`: it keeps the final suffix, so writers that pick a format from the
    extension (cv2.VideoWriter) still work, while globs on the final names (`shard-*.parquet`) never match it.
    The folder must exist (the caller decides whether creating it is right).
    """
    path = Path(path)
    temp = path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex[:16]}-{path.name}")
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Writes `text` (UTF-8) to `path` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8")
    return path
