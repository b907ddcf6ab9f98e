"""The perception phase of a run: every training video described once (cached), before the training pools start."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cluster.data import RunData

if TYPE_CHECKING:
    from embodied_data.synthetic.groundtruth import FrameTruth
    from perception.config import KeyframeConfig
log = logging.getLogger(__name__)


def describe_videos(cfg, data: RunData, vlm_path: str) -> dict[str, str]:
    """Record id -> video text (`Frame 0: Observe: ...`). Records whose video cannot be described are reported, counted
    and left out of the table; they never become a prompt with an empty video."""
    if cfg.perception.source == "ground_truth":
        return _ground_truth_texts(cfg, data)
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


def _ground_truth_texts(cfg, data: RunData) -> dict[str, str]:
    """Privileged simulator captions (synthetic data only): for training the reasoning side without a VLM.

    perception.ground_truth_frames picks the frames they describe: one_fps takes the manifest's caption; keyframes and
    uniform caption the per-frame truth beside each video (see `frame_truth_caption`).  train, sft and evaluate all
    get their video texts here, so they see the same ones."""
    mode = str(cfg.perception.ground_truth_frames)
    if not data.gt_captions:
        raise ValueError(
            f"perception.source=ground_truth needs ground-truth captions, and {data.manifest} has none "
            "(only synthetic datasets carry them); use perception.source=vlm"
            + ("" if mode == "one_fps" else f" (perception.ground_truth_frames={mode} needs a synthetic dataset too)")
        )
    if mode == "one_fps":
        captions = data.gt_captions
    else:
        # Only videos with a manifest caption: the others are synthetic-less records, left out as in one_fps.
        videos = sorted({r.video for r in data.records if r.video in data.gt_captions})
        started = time.monotonic()
        captions = {}
        for video in videos:
            caption = frame_truth_caption(video, mode, cfg.perception.keyframes)
            if caption is not None:
                captions[video] = caption
        log.info("ground truth: %d videos captioned at their %s frames in %.1f s", len(captions),
                 "key" if mode == "keyframes" else "uniformly spread", time.monotonic() - started)
    texts = {r.id: captions[r.video] for r in data.records if r.video in captions}
    missing = len(data.records) - len(texts)
    if missing:
        log.warning("%d records have no ground-truth caption and are left out", missing)
    return texts


def uniform_frames(num_frames: int, count: int) -> list[int]:
    """`count` frame numbers spread evenly over a video of `num_frames` frames, first and last included (the
    key-frame extractor's own uniform spread, perception.keyframes.uniform_positions)."""
    from perception.keyframes import uniform_positions

    if not 1 <= count <= num_frames:
        raise ValueError(f"cannot spread {count} frames over a video of {num_frames}")
    return uniform_positions(num_frames, count)


def truth_path(video: str) -> Path:
    """The per-frame simulator truth the synthetic generator writes beside a video: videos/<scene>.json."""
    return Path(video).with_suffix(".json")


def read_frame_truth(video: str, mode: str) -> list["FrameTruth"]:
    """The FrameTruth of every frame of `video`, from its truth JSON; a clear error where there is none."""
    from embodied_data.synthetic.groundtruth import frames_from_dicts

    path = truth_path(video)
    if not path.is_file():
        raise FileNotFoundError(
            f"perception.ground_truth_frames={mode} captions the per-frame simulator truth {path}, and it does not "
            f"exist beside {video}: it is written with the video by the synthetic generator (`embodied-r data synth`, "
            "or data.source=synthetic); regenerate the dataset, or use perception.ground_truth_frames=one_fps"
        )
    try:
        frames = frames_from_dicts(json.loads(path.read_text(encoding="utf-8"))["frames"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a synthetic video's ground truth (a 'frames' list of FrameTruth dicts): {error!r}") from None
    if not frames:
        raise ValueError(f"{path}: its 'frames' list is empty")
    return frames


def frame_truth_caption(video: str, mode: str, keyframe_cfg: "KeyframeConfig") -> str | None:
    """The ground-truth caption of `video` at its key frames (mode keyframes: exactly the frames
    perception.keyframes.extract_keyframes picks from the mp4) or at as many frames spread uniformly over it (mode
    uniform); None, with a warning naming it, for a video the extractor refuses (the VLM path leaves it out too)."""
    from embodied_data.synthetic.captioner import ground_truth_caption
    from perception.keyframes import extract_keyframes
    from perception.video import VideoError

    if mode not in ("keyframes", "uniform"):
        raise ValueError(f"frame_truth_caption: mode must be keyframes or uniform, got {mode!r}")
    frames = read_frame_truth(video, mode)
    try:
        keyframes = extract_keyframes(video, keyframe_cfg)
    except VideoError as error:
        log.warning("ground truth: %s left out: its key frames cannot be extracted: %s", video, error)
        return None
    # The extractor always samples the last frame, so the two counts agree for an intact video and its own truth.
    decoded = keyframes.sampled_frames[-1] + 1 if keyframes.sampled_frames else 0
    if keyframes.partial is not None and 0 < decoded <= len(frames):  # kept (partial_video=keep): its decodable part
        frames = frames[:decoded]
    if decoded != len(frames):
        raise ValueError(
            f"{video} decodes to {decoded} frames and its truth {truth_path(video)} has {len(frames)}: they are not "
            "the same video; regenerate the dataset"
        )
    chosen = list(keyframes.frames) if mode == "keyframes" else uniform_frames(len(frames), len(keyframes.frames))
    caption, _ = ground_truth_caption(frames, chosen)
    return caption
