"""Describes one video: key frames -> one VLM request per key frame (first-frame / differential prompt) -> parsed text.

A plain class so that it runs in-process or, wrapped with ``ray.remote`` by perception.pool, as a replica actor.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from perception.config import PerceptionConfig
from perception.engines import VLMEngine, VLMRequest, make_vlm_engine, vlm_engine_class
from perception.keyframes import Keyframes, extract_keyframes
from perception.parse import parse_differential, parse_first_frame
from perception.prompts import differential_prompt, first_frame_prompt
from perception.types import VideoDescription
from perception.video import PartialVideoError, VideoError

log = logging.getLogger(__name__)


@dataclass
class DescribeResult:
    """What a replica returns for one video: a description, or the reason there is none."""

    description: VideoDescription | None
    error: str | None
    vlm_requests: int  # VLM requests this video cost (one per key frame)
    seconds: float
    partial: str | None = None  # described although only partly decodable (keyframes.partial_video=keep): what is missing


def build_requests(keyframes: Keyframes, question: str | None) -> list[VLMRequest]:
    """Key frame 0 with the first-frame prompt; key frame i with key frames i-1 and i and the differential prompt."""
    requests = [VLMRequest(images=[keyframes.images[0]], prompt=first_frame_prompt(question))]
    for i in range(1, len(keyframes.images)):
        requests.append(VLMRequest(images=[keyframes.images[i - 1], keyframes.images[i]], prompt=differential_prompt(question)))
    return requests


class Describer:
    """Holds one VLM engine; `describe_video` turns a video (and optionally a question) into a VideoDescription."""

    def __init__(self, cfg: PerceptionConfig, model_path: str, engine: VLMEngine | None = None,
                 bundle_indices: list[int] | None = None) -> None:
        self.cfg = cfg
        self.model_path = model_path
        if cfg.torch_threads > 0 and vlm_engine_class(cfg.vlm.engine).torch_threads:
            import torch

            torch.set_num_threads(cfg.torch_threads)
        if cfg.keyframes.feature_threads == 0:  # automatic: the replica's CPU share, not the whole node's cores
            self.cfg = replace(cfg, keyframes=replace(cfg.keyframes, feature_threads=max(1, int(cfg.num_cpus_per_replica) - 2)))
        self.engine = engine if engine is not None else make_vlm_engine(cfg.vlm, model_path, bundle_indices)
        self.num_requests = 0  # VLM requests made by this describer
        self.num_videos = 0
        self.partial_videos_skipped = 0  # partly decodable videos refused (keyframes.partial_video=skip)
        self.partial_videos_kept: list[str] = []  # partly decodable videos described anyway (=keep), by path
        self.last_partial: str | None = None  # what the last described video lacked, when it was kept partial

    def describe_video(self, video_path: str, question: str | None = None) -> VideoDescription:
        """Raises VideoError for an unusable video. `question` None: question-independent prompts."""
        try:
            keyframes = extract_keyframes(video_path, self.cfg.keyframes)
        except PartialVideoError:
            self.partial_videos_skipped += 1
            raise
        self.last_partial = keyframes.partial
        if keyframes.partial is not None:
            self.partial_videos_kept.append(video_path)
        requests = build_requests(keyframes, question)
        texts = self.engine.generate(requests)
        self.num_requests += len(requests)
        self.num_videos += 1
        if len(texts) != len(requests):
            raise RuntimeError(f"the VLM engine returned {len(texts)} texts for {len(requests)} requests")
        frames = [parse_first_frame(texts[0])] + [parse_differential(text) for text in texts[1:]]
        return VideoDescription(
            video=video_path,
            frames=frames,
            keyframe_indices=list(keyframes.indices),
            keyframe_frames=list(keyframes.frames),
        )

    def try_describe_video(self, video_path: str, question: str | None = None) -> DescribeResult:
        """describe_video that reports failures instead of raising, for batch work (the pool counts and skips them)."""
        started = time.perf_counter()
        requests_before = self.num_requests
        self.last_partial = None
        try:
            description, error = self.describe_video(video_path, question), None
        except PartialVideoError as partial:  # its own reason, so the skip report counts partial videos apart
            description, error = None, f"partial video: {partial.video_path}: {partial.problem}"
        except VideoError as video_error:
            description, error = None, f"bad video: {video_error}"
        except Exception as other:  # an engine failure must not take the whole batch down; it is reported per video
            log.exception("describing %s failed", video_path)
            description, error = None, f"perception failed: {video_path}: {type(other).__name__}: {other}"
        return DescribeResult(description, error, self.num_requests - requests_before, time.perf_counter() - started,
                              self.last_partial if description is not None else None)

    def stats(self) -> dict:
        """Videos described, VLM requests made, and the partly decodable videos skipped and kept (counted)."""
        return {"videos": self.num_videos, "vlm_requests": self.num_requests,
                "partial_videos_skipped": self.partial_videos_skipped,
                "partial_videos_kept": len(self.partial_videos_kept)}
