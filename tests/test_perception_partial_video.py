"""Partially decodable videos: a truncated or damaged file is reported by name (fewer frames than its container
promises), skipped by default, kept with a warning when asked; whole videos, the real ones included, are not."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from embodied_data.records import SkipReport
from perception.config import KeyframeConfig, PerceptionConfig
from perception.describer import Describer
from perception.engines import VLMRequest
from perception.keyframes import extract_keyframes
from perception.video import FramePromise, PartialVideoError, SampledFrames, VideoError

av = pytest.importorskip("av", reason="PyAV is a core dependency; it writes the test clips")

NUM_FRAMES = 45  # 9 s at 5 fps: 10 samples at 1 fps when whole
DECODERS = ("pyav", "opencv")


def encode_clip(path: Path, container_format: str | None = None, options: dict | None = None) -> Path:
    """A 96x64 H.264 clip at 5 fps of a texture panning right (every frame different, ORB finds features)."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (128, 96 + 4 * NUM_FRAMES, 3), dtype=np.uint8)
    with av.open(str(path), "w", format=container_format, options=options or {}) as container:
        stream = container.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(NUM_FRAMES):
            image = np.ascontiguousarray(texture[i % 64: i % 64 + 64, 4 * i: 4 * i + 96])
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def faststart_mp4(folder: Path) -> Path:
    """The clip as an mp4 whose moov index sits before the media data (what makes a truncated file still open)."""
    path = encode_clip(folder / "whole.mp4", options={"movflags": "faststart"})
    data = path.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat"), "the index must come first"
    return path


def truncated(path: Path, name: str) -> Path:
    """The first half of `path`'s bytes, as a download cut short leaves it."""
    data = path.read_bytes()
    half = path.with_name(name)
    half.write_bytes(data[: len(data) // 2])
    return half


@pytest.fixture()
def half_mp4(tmp_path: Path) -> Path:
    return truncated(faststart_mp4(tmp_path), "half.mp4")


class EchoEngine:
    """A VLM engine that answers every request with a fixed text (the describer's bookkeeping is under test)."""

    def generate(self, requests: list[VLMRequest]) -> list[str]:
        return ["A road ahead." if len(r.images) == 1 else "1. Move forward\n2. a wall\n3. a door" for r in requests]


def test_frame_promise_is_exact_for_an_index_and_tolerant_for_an_estimate():
    exact = FramePromise(45, exact=True, source="its index lists 45")
    assert not exact.falls_short(45) and exact.falls_short(44)
    estimate = FramePromise(100, exact=False, source="its duration implies 100")
    assert not estimate.falls_short(95), "5% short of an estimate is rounding, not damage"
    assert estimate.falls_short(94)
    assert not FramePromise(3, exact=False).falls_short(1), "at least 2 frames of slack"
    assert not FramePromise().falls_short(0), "no promise: nothing to check"


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_truncated_faststart_mp4_is_partial_before_and_after_decoding(tmp_path, decoder):
    whole = faststart_mp4(tmp_path)
    half = truncated(whole, "half.mp4")
    complete = SampledFrames(str(whole), 1.0, decoder)
    assert complete.promise == FramePromise(NUM_FRAMES, exact=True, source=f"its index lists {NUM_FRAMES}")
    assert complete.partial is None and len(list(complete)) == 10 and complete.partial is None
    assert complete.frames_decoded == NUM_FRAMES

    reader = SampledFrames(str(half), 1.0, decoder)
    assert reader.promise.frames == NUM_FRAMES, "the index at the front still lists every frame"
    # Before any decoding: the index pass finds fewer packets in the file than the index lists.
    assert reader.partial is not None and "partial file" in reader.partial and f"lists {NUM_FRAMES}" in reader.partial
    samples = list(reader)
    assert 0 < reader.frames_decoded < NUM_FRAMES
    assert samples[-1][0] == reader.frames_decoded - 1, "the samples end at the last frame that decodes"
    assert reader.partial == (f"partially decodable: only {reader.frames_decoded} frames could be decoded where its "
                              f"index lists {NUM_FRAMES} (truncated or damaged file)")


def test_a_partial_video_is_skipped_by_default_naming_the_file(half_mp4):
    assert KeyframeConfig().partial_video == "skip"
    with pytest.raises(PartialVideoError, match=r"video .*half\.mp4: partial file") as caught:
        extract_keyframes(str(half_mp4), KeyframeConfig())
    assert isinstance(caught.value, VideoError), "callers that skip bad videos skip partial ones too"
    assert caught.value.video_path == str(half_mp4)
    assert f"its index lists {NUM_FRAMES} frames" in caught.value.problem


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_partial_video_is_kept_with_a_warning_when_asked(half_mp4, decoder, caplog):
    cfg = KeyframeConfig(partial_video="keep", decoder=decoder)
    with caplog.at_level(logging.WARNING, logger="perception.keyframes"):
        keyframes = extract_keyframes(str(half_mp4), cfg)
    assert keyframes.partial is not None and keyframes.partial.startswith("partially decodable: only")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(half_mp4) in warnings[0] and "partial_video=keep" in warnings[0]
    assert keyframes.num_sampled < 10 and keyframes.sampled_frames[-1] < NUM_FRAMES // 2
    assert len(keyframes.images) == len(keyframes.frames) >= 1


def test_whole_videos_carry_no_partial_mark(tmp_path):
    keyframes = extract_keyframes(str(faststart_mp4(tmp_path)), KeyframeConfig())
    assert keyframes.partial is None and keyframes.sampled_frames[-1] == NUM_FRAMES - 1


@pytest.mark.parametrize("decoder", DECODERS)
def test_frames_unreadable_past_a_damaged_stretch_make_a_video_partial(tmp_path, decoder):
    # Every packet is in the file (the index pass sees nothing wrong), but a stretch in the middle is overwritten:
    # decoding stops there, and the frames after it never come out.
    whole = faststart_mp4(tmp_path)
    data = bytearray(whole.read_bytes())
    middle = len(data) // 2
    data[middle: middle + 3000] = bytes(3000)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    reader = SampledFrames(str(damaged), 1.0, decoder)
    assert reader.partial is None, "nothing is missing from the index's point of view"
    list(reader)
    assert reader.frames_decoded < NUM_FRAMES and reader.partial is not None
    assert reader.partial.startswith(f"partially decodable: only {reader.frames_decoded} frames")
    with pytest.raises(PartialVideoError, match="damaged.mp4"):
        extract_keyframes(str(damaged), KeyframeConfig(decoder=decoder))


def test_a_truncated_matroska_file_falls_short_of_its_duration(tmp_path):
    # Matroska lists no frame count: its duration (in the header, written for the whole file) times the frame rate
    # is the promise, an estimate.
    whole = encode_clip(tmp_path / "whole.mkv", container_format="matroska")
    reader = SampledFrames(str(whole), 1.0)
    assert not reader.promise.exact and reader.promise.frames == NUM_FRAMES
    list(reader)
    assert reader.partial is None
    half = truncated(whole, "half.mkv")
    with pytest.raises(PartialVideoError, match=r"half\.mkv: partial file: its duration \(9\.00 s at 5 fps\) implies 45"):
        extract_keyframes(str(half), KeyframeConfig())


def test_the_describer_reports_partial_videos_apart_and_counts_them(half_mp4, tmp_path):
    skipping = Describer(PerceptionConfig(), "no-model", engine=EchoEngine())
    fine = skipping.try_describe_video(str(faststart_mp4(tmp_path)))
    assert fine.error is None and fine.partial is None and skipping.stats()["partial_videos_skipped"] == 0
    result = skipping.try_describe_video(str(half_mp4))
    assert result.description is None and result.vlm_requests == 0
    assert result.error.startswith(f"partial video: {half_mp4}: partial file:")
    report = SkipReport(log_each=False)
    report.add("q1", result.error)
    assert report.counts_by_reason() == {"partial video": 1}, "counted apart from corrupt ('bad video') files"
    assert skipping.stats()["partial_videos_skipped"] == 1 and skipping.stats()["partial_videos_kept"] == 0

    cfg = PerceptionConfig()
    keeping = Describer(dataclasses.replace(cfg, keyframes=dataclasses.replace(cfg.keyframes, partial_video="keep")),
                        "no-model", engine=EchoEngine())
    kept = keeping.try_describe_video(str(half_mp4))
    assert kept.error is None and kept.description is not None and kept.vlm_requests == len(kept.description.frames)
    assert kept.partial is not None and kept.partial.startswith("partially decodable")
    assert keeping.stats()["partial_videos_kept"] == 1 and keeping.partial_videos_kept == [str(half_mp4)]


def test_an_unknown_partial_video_policy_is_refused(tmp_path):
    with pytest.raises(ValueError, match="partial_video must be one of"):
        extract_keyframes(str(faststart_mp4(tmp_path)), KeyframeConfig(partial_video="drop"))


@pytest.mark.parametrize("decoder", DECODERS)
def test_the_real_videos_are_whole(real_videos, decoder):
    for path in real_videos:
        reader = SampledFrames(str(path), 1.0, decoder)
        assert reader.partial is None, f"{path.name}: {reader.partial}"
        assert reader.promise.exact, f"{path.name}: mp4 lists its frames"
        list(reader)
        assert reader.partial is None and reader.frames_decoded == reader.promise.frames, path.name


@pytest.mark.parametrize(("name", "container_format"), [("clip.ts", "mpegts"), ("clip.avi", "avi")])
def test_whole_videos_in_containers_whose_counts_are_estimates_are_not_partial(tmp_path, name, container_format):
    # MPEG-TS may split a frame over packets and AVI may hold empty "repeat" chunks: their counts are only estimates.
    path = encode_clip(tmp_path / name, container_format=container_format)
    for decoder in DECODERS:
        reader = SampledFrames(str(path), 1.0, decoder)
        assert not reader.promise.exact
        list(reader)
        assert reader.partial is None and reader.frames_decoded == NUM_FRAMES, (decoder, reader.promise)
