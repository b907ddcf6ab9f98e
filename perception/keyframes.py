"""Picks the key frames of a video: 1-fps samples whose view overlaps the last key frame by less than a threshold.

Faithful to Embodied-R's released extraction (DESIGN.md step 1):

* the video is sampled at ``cfg.sample_fps`` (frame numbers ``round(k * fps / sample_fps)``); the video's last
  frame is always added to the samples, as the released ``downsample_video`` does;
* ORB features of each sample (on grayscale) are matched against the last key frame with a brute-force Hamming
  matcher with cross check; with more than ``cfg.min_matches`` matches a RANSAC homography (reprojection threshold
  ``cfg.ransac_reproj_threshold``) maps the sample's corners into the key frame;
* overlap = area(key-frame rectangle ∩ warped quadrilateral) / key-frame area, computed exactly as a convex
  polygon intersection (``cv2.intersectConvexConvex``), not on a rasterised mask as the released code did;
* a sample becomes a key frame when the overlap is below ``cfg.overlap_threshold``, or when either frame has no
  descriptors, there are too few matches, or no homography is found;
* **degenerate homography** (our explicit decision; the released code measured whatever polygon came out): when
  the warped quadrilateral is not a proper view of the frame -- a corner maps through the line at infinity
  (projective denominator <= 0), the quad is self-intersecting or non-convex, its orientation is flipped
  (a mirror image), or its area is ~0 -- the view is treated as changed and the sample becomes a key frame;
* the last sample is always a key frame; the count is clamped to ``[min_keyframes, max_keyframes]``: too few ->
  ``min_keyframes`` samples spread uniformly over all samples (first and last included; all samples when there are
  no more than that); too many -> the first and last key frame plus ``max_keyframes - 2`` spread uniformly over the
  key frames between them;
* a **partially decodable video** (truncated or damaged: fewer frames than its container promises, see
  perception/video.py) raises `PartialVideoError` naming it when ``cfg.partial_video`` is "skip" (the default) --
  before any decoding where the index pass already shows frames missing; with "keep" its decodable part gives the key
  frames, a warning names it and ``Keyframes.partial`` says what is missing.

Speed (bench/keyframes.py measures it against decoding alone and against the released method): perception/video.py
reads the samples -- a non-reference frame no sample needs is not even decoded (FFmpeg's ``skip_frame`` through PyAV),
nor the end of a closed group of pictures after its last sample, and only samples are converted to colour, with
OpenCV's frame numbers and pixels.  While the calling thread decodes the frames after sample k, ORB features of the
samples are computed on ``cfg.feature_threads`` threads (they do not depend on any decision) and the rule -- matching,
RANSAC, overlap -- runs on one more thread, one sample after another, so the decisions are exactly the sequential
ones.  The matches (perception/matching.py: cv2.BFMatcher's cross-checked matches, computed in numpy on one thread)
are ordered by distance (stable sort) before RANSAC, as the released code does: RANSAC's subsets depend on the order,
so this keeps our homography -- and decision -- equal to the released one for the same pair of frames.  RANSAC, most
of the in-order work at 1 fps, runs in perception/ransac.py (``cfg.ransac_engine="numpy"``): OpenCV's RANSAC replayed
with its hypotheses scored in numpy blocks, returning OpenCV's matrix bit for bit in a third to a quarter of the time.

Memory: only key frames' pixels are kept -- at most ``_IMAGES_PER_MAX_KEYFRAME * max_keyframes`` of them -- plus the
samples that clamping to ``min_keyframes`` would pick if the container's frame count is right (so a video with few key
frames needs no second pass); a chosen key frame whose pixels were not kept is decoded again in one second pass.
Key-frame images are returned as RGB uint8 arrays exactly as decoded (never re-encoded).  A video slower than the
sample rate (fps < sample_fps) contributes every frame.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from perception.config import PARTIAL_VIDEO_POLICIES, KeyframeConfig
from perception.matching import match_hamming
from perception.ransac import find_homography_ransac
from perception.video import DECODERS, PartialVideoError, SampledFrames, VideoError, read_frames

log = logging.getLogger(__name__)

# Bumped whenever the same video and settings can give other key frames (it is part of the description cache key).
# 2: matches ordered by distance before RANSAC, as the released code orders them.
KEYFRAME_RULE_VERSION = "2"
# A corner whose projective denominator falls below this maps (numerically) through the line at infinity.
_MIN_PROJECTIVE_DENOMINATOR = 1e-8
# Warped quads with less than this fraction of the frame area are treated as degenerate.
_MIN_QUAD_AREA_FRACTION = 1e-6
# Key-frame images held while streaming, per allowed key frame; beyond that, chosen ones are re-read at the end.
_IMAGES_PER_MAX_KEYFRAME = 4
# Samples decoded ahead of the feature worker: enough to keep both threads busy, few enough to bound memory.
_SAMPLES_IN_FLIGHT = 3
# ORB threads chosen automatically: beyond a few, the in-order decisions (matching, RANSAC) are the bottleneck.
_MAX_AUTO_FEATURE_THREADS = 4


@dataclass
class Keyframes:
    indices: list[int]  # positions of the key frames in the sampled (1-fps) sequence, ascending
    frames: list[int]  # frame numbers of the key frames in the source video, ascending
    images: list[np.ndarray]  # RGB uint8 (H, W, 3) key frames, as decoded
    fps: float  # the source video's frame rate
    num_sampled: int  # length of the sampled (1-fps) sequence
    video: str = ""
    num_detected: int = 0  # key frames found by the overlap rule, before clamping
    sampled_frames: list[int] = field(default_factory=list)  # frame number of every sample
    detected: list[int] = field(default_factory=list)  # sample positions of the key frames before clamping
    partial: str | None = None  # why only part of the video could be decoded (kept: cfg.partial_video="keep")


@dataclass
class Decision:
    """Why a sample is or is not a key frame (the overlap rule's verdict on one sample against the last key frame)."""

    is_keyframe: bool
    reason: str  # first | no_descriptors | few_matches | no_homography | degenerate | overlap
    overlap: float | None = None  # exact overlap with the last key frame, when a proper homography was found
    homography: np.ndarray | None = None  # current frame -> last key frame, when found
    num_matches: int = 0


def extract_keyframes(video_path: str, cfg: KeyframeConfig, threaded: bool = True) -> Keyframes:
    """Key frames of `video_path` by the overlap rule (see the module docstring); raises VideoError for bad videos.

    `threaded` runs the feature work beside the decoding (same decisions either way); False keeps it all on the
    calling thread, e.g. where many videos are already processed in parallel on every core.  A partially decodable
    video raises PartialVideoError (a VideoError) unless `cfg.partial_video` is "keep".
    """
    _check_config(cfg)
    detector = _KeyframeDetector(cfg)
    image_budget = _IMAGES_PER_MAX_KEYFRAME * cfg.max_keyframes
    reader = SampledFrames(video_path, cfg.sample_fps, cfg.decoder)
    if reader.partial is not None and cfg.partial_video == "skip":  # the index pass already shows frames missing
        reader.close()
        raise PartialVideoError(video_path, reader.partial)
    # The samples clamping to `min_keyframes` would pick if the reported frame count is right: kept until the end.
    expected_samples = reader.expected_num_samples()
    clamp_picks = set(clamp_keyframes([], expected_samples, cfg.min_keyframes, cfg.max_keyframes)) if expected_samples else set()
    sampled_frames: list[int] = []
    detected: list[int] = []  # sample positions of the key frames
    keyframe_images: dict[int, np.ndarray] = {}  # sample position -> RGB image, for (at most budget) key frames
    clamp_images: dict[int, np.ndarray] = {}  # sample position -> BGR image, for the predicted min-clamp picks
    last_bgr: np.ndarray | None = None
    pending: deque[tuple[int, np.ndarray, Future[bool] | bool]] = deque()  # decoded samples not yet settled

    def settle_oldest() -> None:
        position, bgr, verdict = pending.popleft()
        is_keyframe = verdict if isinstance(verdict, bool) else verdict.result()
        if is_keyframe:
            detected.append(position)
            if len(keyframe_images) < image_budget:
                keyframe_images[position] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    # ORB on a pool of threads (each sample's features are independent of the decisions); the decisions on one
    # thread that takes the samples in order, so every one sees the key frame the sequential rule would.
    feature_threads = _feature_threads(cfg) if threaded else 0
    features_pool = ThreadPoolExecutor(feature_threads, thread_name_prefix="keyframe-orb") if threaded else None
    decider = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyframe-rule") if threaded else None
    in_flight = _SAMPLES_IN_FLIGHT + feature_threads if threaded else 0

    def verdict_of(features: Future) -> bool:
        return detector.decide_features(features.result()).is_keyframe

    try:
        for position, (frame_number, bgr) in enumerate(reader):
            sampled_frames.append(frame_number)
            if position in clamp_picks:
                clamp_images[position] = bgr
            if threaded:
                features = features_pool.submit(orb_features, bgr, cfg.orb_features)
                verdict: Future[bool] | bool = decider.submit(verdict_of, features)
            else:
                verdict = detector.decide(bgr).is_keyframe
            pending.append((position, bgr, verdict))
            while len(pending) > in_flight:
                settle_oldest()
            last_bgr = bgr
        while pending:
            settle_oldest()
    finally:
        for pool in (decider, features_pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    if not sampled_frames:
        raise VideoError(video_path, "no frame could be decoded (empty, truncated or corrupt file)")
    if reader.partial is not None:
        if cfg.partial_video == "skip":
            raise PartialVideoError(video_path, reader.partial)
        log.warning("video %s: %s; kept (perception.keyframes.partial_video=keep): key frames from its first %d frames",
                    video_path, reader.partial, reader.frames_decoded)
    num_sampled = len(sampled_frames)
    if detected[-1] != num_sampled - 1:  # the last frame is always kept
        detected.append(num_sampled - 1)
        keyframe_images[num_sampled - 1] = cv2.cvtColor(last_bgr, cv2.COLOR_BGR2RGB)
    indices = clamp_keyframes(detected, num_sampled, cfg.min_keyframes, cfg.max_keyframes)
    for i in indices:
        if i not in keyframe_images and i in clamp_images:
            keyframe_images[i] = cv2.cvtColor(clamp_images[i], cv2.COLOR_BGR2RGB)
    missing = [sampled_frames[i] for i in indices if i not in keyframe_images]
    if missing:  # decode just the chosen frames whose pixels were not kept, in one second pass
        fetched = read_frames(video_path, missing, cfg.decoder)
        for i in indices:
            if i not in keyframe_images:
                keyframe_images[i] = fetched[sampled_frames[i]]
    return Keyframes(
        indices=indices,
        frames=[sampled_frames[i] for i in indices],
        images=[keyframe_images[i] for i in indices],
        fps=reader.fps,
        num_sampled=num_sampled,
        video=video_path,
        num_detected=len(detected),
        sampled_frames=sampled_frames,
        detected=list(detected),
        partial=reader.partial,
    )


def _feature_threads(cfg: KeyframeConfig) -> int:
    """ORB threads beside the decoding thread and the rule's thread: cfg.feature_threads, or (0) one per spare core
    this process may run on."""
    if cfg.feature_threads > 0:
        return cfg.feature_threads
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, min(_MAX_AUTO_FEATURE_THREADS, usable - 2))


def uniform_positions(num: int, count: int) -> list[int]:
    """`count` positions spread evenly over 0..num-1, both ends included, rounded half up (distinct when count <= num)."""
    return [int(math.floor(x + 0.5)) for x in np.linspace(0, num - 1, count)]


def clamp_keyframes(keyframe_indices: list[int], num_sampled: int, min_keyframes: int, max_keyframes: int) -> list[int]:
    """Clamps the number of key frames to [min, max] the paper's way (see the module docstring)."""
    keys = sorted(keyframe_indices)
    if len(keys) < min_keyframes:
        if num_sampled <= min_keyframes:
            return list(range(num_sampled))
        # Spacing (n-1)/(m-1) >= 1, so the rounded positions are distinct and include 0 and n-1.
        return uniform_positions(num_sampled, min_keyframes)
    if len(keys) > max_keyframes:
        middle = keys[1:-1]
        picks = max_keyframes - 2
        # Centre of each of `picks` equal slices of the middle: uniform, distinct, symmetric.
        chosen = [middle[int((j + 0.5) * len(middle) / picks)] for j in range(picks)]
        return [keys[0], *chosen, keys[-1]]
    return keys


def view_overlap(homography: np.ndarray, width: int, height: int) -> float | None:
    """Fraction of the key frame's area covered by the current frame's corners warped by `homography`.

    `homography` maps current-frame pixel coordinates into the key frame (both `width` x `height`).  Returns None when
    the warped quadrilateral is degenerate (see `degeneracy`).  Callers treat None as "the view changed".
    """
    quad, problem = _warped_frame(homography, width, height)
    if problem is not None:
        return None
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    intersection_area, _ = cv2.intersectConvexConvex(corners, quad.astype(np.float32))
    return max(0.0, float(intersection_area)) / float(width * height)


def degeneracy(homography: np.ndarray, width: int, height: int) -> str | None:
    """Why the frame warped by `homography` is no proper view of it, or None when it is one.

    ``through_infinity`` (a corner's projective denominator is <= 0 or not finite: the line at infinity crosses the
    frame, which is how a bow tie or a reflex corner arises), ``mirrored`` (orientation flipped), ``non_convex`` (a
    numerical guard: a map finite on the whole frame keeps it convex), ``collapsed`` (~zero area).
    """
    return _warped_frame(homography, width, height)[1]


def _warped_frame(homography: np.ndarray, width: int, height: int) -> tuple[np.ndarray | None, str | None]:
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    homogeneous = np.c_[corners, np.ones(4)] @ np.asarray(homography, dtype=np.float64).T
    denominators = homogeneous[:, 2]
    if not np.all(np.isfinite(homogeneous)) or np.any(denominators <= _MIN_PROJECTIVE_DENOMINATOR):
        return None, "through_infinity"
    quad = homogeneous[:, :2] / denominators[:, None]
    # The frame rectangle, listed as above, turns the same way at every corner (positive cross products in image
    # coordinates).  A proper view of it keeps that: all positive. Mixed signs: non-convex or self-intersecting
    # (a bow tie); all negative: mirrored.
    edges = np.roll(quad, -1, axis=0) - quad
    turns = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    if np.all(turns < 0):
        return quad, "mirrored"
    if np.any(turns <= 0):
        return quad, "non_convex"
    quad_area = 0.5 * float(np.sum(quad[:, 0] * np.roll(quad[:, 1], -1) - np.roll(quad[:, 0], -1) * quad[:, 1]))
    if quad_area < _MIN_QUAD_AREA_FRACTION * float(width * height):
        return quad, "collapsed"
    return quad, None


_ORB_PER_THREAD = threading.local()


def orb_features(bgr: np.ndarray, num_features: int) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
    """(key point coordinates (k, 2) float32, descriptors, (height, width)) of a BGR frame's grayscale, with this
    thread's own ORB detector."""
    detectors: dict[int, cv2.ORB] = getattr(_ORB_PER_THREAD, "detectors", None) or {}
    _ORB_PER_THREAD.detectors = detectors
    orb = detectors.get(num_features)
    if orb is None:
        orb = detectors[num_features] = cv2.ORB_create(nfeatures=num_features)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    points, descriptors = orb.detectAndCompute(gray, None)
    return key_point_coordinates(points), descriptors, gray.shape


def key_point_coordinates(points) -> np.ndarray:
    """(k, 2) float32 coordinates of cv2.KeyPoint objects (exactly their float32 ``pt``)."""
    return np.array([point.pt for point in points], dtype=np.float32).reshape(-1, 2)


class _KeyframeDetector:
    """Online overlap rule: feed samples in order; remembers the last key frame's ORB features."""

    def __init__(self, cfg: KeyframeConfig) -> None:
        self.cfg = cfg
        self.key_points: np.ndarray | None = None  # (k, 2) key point coordinates of the last key frame
        self.key_descriptors = None
        self.key_shape: tuple[int, int] | None = None

    def decide(self, bgr: np.ndarray) -> Decision:
        """The verdict on the next sample; a key frame becomes the reference for the samples after it."""
        return self.decide_features(orb_features(bgr, self.cfg.orb_features))

    def decide_features(self, features: tuple) -> Decision:
        """`decide` on the sample's ORB features (`orb_features`), which may be computed on any thread, in any order."""
        points, descriptors, shape = features
        decision = Decision(True, "first") if self.key_shape is None else self._compare(points, descriptors, shape)
        if decision.is_keyframe:
            self.key_points, self.key_descriptors, self.key_shape = points, descriptors, shape
        return decision

    def _compare(self, points, descriptors, shape: tuple[int, int]) -> Decision:
        if self.key_descriptors is None or descriptors is None:
            return Decision(True, "no_descriptors")
        key_index, current_index, distance = match_hamming(self.key_descriptors, descriptors, self.cfg.matcher)
        num_matches = len(distance)
        if num_matches <= self.cfg.min_matches:
            return Decision(True, "few_matches", num_matches=num_matches)
        # Ordered by distance, ties kept in query order (a stable sort), exactly as the released code orders them.
        order = np.argsort(distance, kind="stable")
        key_xy = self.key_points[key_index[order]].reshape(-1, 1, 2)
        current_xy = points[current_index[order]].reshape(-1, 1, 2)
        if self.cfg.ransac_engine == "numpy":  # the same matrix as OpenCV's RANSAC (see perception/ransac.py)
            homography = find_homography_ransac(current_xy, key_xy, self.cfg.ransac_reproj_threshold)
        else:
            homography, _ = cv2.findHomography(current_xy, key_xy, cv2.RANSAC, self.cfg.ransac_reproj_threshold)
        if homography is None:
            return Decision(True, "no_homography", num_matches=num_matches)
        key_height, key_width = self.key_shape
        height, width = shape
        # The current frame's corners warped into the key frame; the overlap is measured on the key frame.
        overlap = _overlap_in_key_frame(homography, width, height, key_width, key_height)
        if overlap is None:
            return Decision(True, "degenerate", homography=homography, num_matches=num_matches)
        return Decision(overlap < self.cfg.overlap_threshold, "overlap", overlap, homography, num_matches)


def _overlap_in_key_frame(homography: np.ndarray, width: int, height: int, key_width: int, key_height: int) -> float | None:
    if (width, height) == (key_width, key_height):
        return view_overlap(homography, width, height)
    # Frame size changed mid-video (rare): scale the current frame onto the key frame's size first.
    scale = np.diag([width / key_width, height / key_height, 1.0])
    return view_overlap(homography @ scale, key_width, key_height)


def _check_config(cfg: KeyframeConfig) -> None:
    if not 1 <= cfg.min_keyframes <= cfg.max_keyframes or cfg.max_keyframes < 2:
        raise ValueError(
            f"key frame bounds need 1 <= min_keyframes <= max_keyframes and max_keyframes >= 2, "
            f"got [{cfg.min_keyframes}, {cfg.max_keyframes}]"
        )
    if cfg.decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {cfg.decoder!r}")
    if cfg.partial_video not in PARTIAL_VIDEO_POLICIES:
        raise ValueError(f"partial_video must be one of {PARTIAL_VIDEO_POLICIES}, got {cfg.partial_video!r}")
    if cfg.matcher not in ("numpy", "opencv"):
        raise ValueError(f"matcher must be 'numpy' or 'opencv', got {cfg.matcher!r}")
    if cfg.ransac_engine not in ("numpy", "opencv"):
        raise ValueError(f"ransac_engine must be 'numpy' or 'opencv', got {cfg.ransac_engine!r}")
    if not 0.0 <= cfg.overlap_threshold <= 1.0:
        raise ValueError(f"overlap_threshold must be in [0, 1], got {cfg.overlap_threshold}")
