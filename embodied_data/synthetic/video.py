"""Write rendered frames to an MP4 file (OpenCV, MPEG-4 part 2 'mp4v'), atomically; same frames give the same bytes."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from embodied_data.atomic import atomic_path


def write_video(frames: list[np.ndarray], path: str | os.PathLike, fps: float, fourcc: str = "mp4v") -> Path:
    """Encode BGR uint8 frames of one size to `path` (written beside it, then renamed into place)."""
    path = Path(path)
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    height, width = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the .mp4 suffix: OpenCV picks the container from it.
    with atomic_path(path) as temp:
        writer = cv2.VideoWriter(str(temp), cv2.VideoWriter_fourcc(*fourcc), float(fps), (width, height))
        try:
            if not writer.isOpened():
                raise RuntimeError(f"{path}: OpenCV cannot open a {fourcc!r} video writer (is its FFmpeg backend present?)")
            for i, frame in enumerate(frames):
                if frame.shape[:2] != (height, width) or frame.dtype != np.uint8:
                    raise ValueError(f"{path}: frame {i} is {frame.shape} {frame.dtype}, expected {(height, width, 3)} uint8")
                writer.write(frame)
        finally:
            writer.release()  # also on failure, so the half-written temp file is closed before it is removed
    return path


def read_video(path: str | os.PathLike) -> list[np.ndarray]:
    """All frames of a video as BGR uint8 arrays."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open this video")
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames
