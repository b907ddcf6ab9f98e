"""Key-frame extraction: real benchmark videos, a synthetic video whose view changes are known, degenerate
homographies, clamping, slow / short / corrupt videos, and the `keyframes` subcommand."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from embodied_data.synthetic.video import read_video
from perception import keyframes as keyframes_module
from perception.config import KeyframeConfig
from perception.keyframes import VideoError, clamp_keyframes, extract_keyframes, view_overlap

FRAME_W, FRAME_H = 320, 240


def decode_all(path: Path) -> list[np.ndarray]:
    return read_video(path)


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> Path:
    """Lossless (FFV1) so that decoded frames equal the written ones bit for bit."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (frames[0].shape[1], frames[0].shape[0]))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


# ---------------------------------------------------------------------------------------------- real videos


def test_real_videos_keyframes_are_sorted_bounded_and_keep_the_last_frame(real_videos):
    cfg = KeyframeConfig()
    for video in real_videos:
        decoded = decode_all(video)
        keyframes = extract_keyframes(str(video), cfg)
        capture = cv2.VideoCapture(str(video))
        fps = capture.get(cv2.CAP_PROP_FPS)
        capture.release()
        assert keyframes.fps == pytest.approx(fps)
        # 1-fps samples: every round(fps)-th frame, plus the video's last frame.
        stride = fps / cfg.sample_fps
        expected_samples = sorted({int(np.floor(k * stride + 0.5)) for k in range(len(decoded)) if k * stride + 0.5 < len(decoded)}
                                  | {len(decoded) - 1})
        assert keyframes.sampled_frames == expected_samples
        assert keyframes.num_sampled == len(expected_samples)
        indices = keyframes.indices
        assert indices == sorted(set(indices)), "indices must be strictly increasing"
        assert indices[0] == 0 and indices[-1] == keyframes.num_sampled - 1, "first and last sample are key frames"
        assert all(0 <= i < keyframes.num_sampled for i in indices)
        assert cfg.min_keyframes <= len(indices) <= cfg.max_keyframes
        assert keyframes.frames == [keyframes.sampled_frames[i] for i in indices]
        assert keyframes.frames[-1] == len(decoded) - 1
        # The images are the decoded frames themselves (RGB), never re-encoded.
        assert len(keyframes.images) == len(indices)
        for frame_number, image in zip(keyframes.frames, keyframes.images):
            assert image.dtype == np.uint8 and image.shape == decoded[frame_number].shape
            assert np.array_equal(image, cv2.cvtColor(decoded[frame_number], cv2.COLOR_BGR2RGB))


def test_real_video_clamping(realdata):
    openeqa = realdata / "openeqa" / "open-eqa-hm3d-demo.mp4"
    loose = extract_keyframes(str(openeqa), KeyframeConfig(min_keyframes=1, max_keyframes=1000))
    assert loose.num_detected == len(loose.indices) > 6, "this walkthrough changes view often"
    capped = extract_keyframes(str(openeqa), KeyframeConfig(max_keyframes=6))
    assert len(capped.indices) == 6
    assert capped.indices[0] == loose.indices[0] and capped.indices[-1] == loose.indices[-1]
    assert set(capped.indices) <= set(loose.indices), "too many: a subset of the detected key frames"

    short = realdata / "urbanvideo_bench" / "videos" / "AerialVLN_1_30BUDKLTXMTIKYKFIPPOXCMISXQE5S.mp4"
    detected = extract_keyframes(str(short), KeyframeConfig(min_keyframes=1, max_keyframes=1000))
    wanted = detected.num_detected + 1
    assert wanted < detected.num_sampled
    padded = extract_keyframes(str(short), KeyframeConfig(min_keyframes=wanted, max_keyframes=32))
    expected = [int(np.floor(x + 0.5)) for x in np.linspace(0, detected.num_sampled - 1, wanted)]
    assert padded.indices == expected, "too few: uniform over all samples"
    decoded = decode_all(short)
    for frame_number, image in zip(padded.frames, padded.images):  # frames fetched in the second pass are exact too
        assert np.array_equal(image, cv2.cvtColor(decoded[frame_number], cv2.COLOR_BGR2RGB))
    everything = extract_keyframes(str(short), KeyframeConfig(min_keyframes=detected.num_sampled + 5, max_keyframes=64))
    assert everything.indices == list(range(detected.num_sampled)), "fewer samples than the minimum: all of them"


def test_keyframes_beyond_the_memory_budget_are_read_again(realdata, monkeypatch):
    """With no image budget at all, every chosen key frame comes from the second pass, and is still exact."""
    import perception.keyframes as keyframes_module

    video = realdata / "openeqa" / "open-eqa-hm3d-demo.mp4"
    kept = extract_keyframes(str(video), KeyframeConfig())
    monkeypatch.setattr(keyframes_module, "_IMAGES_PER_MAX_KEYFRAME", 0)
    reread = extract_keyframes(str(video), KeyframeConfig())
    assert reread.indices == kept.indices and reread.frames == kept.frames
    for a, b in zip(reread.images, kept.images):
        assert np.array_equal(a, b)


def test_clamp_rules():
    assert clamp_keyframes([0, 9], 10, 4, 32) == [0, 3, 6, 9]
    assert clamp_keyframes([0, 2], 3, 4, 32) == [0, 1, 2]
    keys = list(range(0, 100, 2)) + [99]  # 51 key frames
    clamped = clamp_keyframes(keys, 100, 4, 8)
    assert len(clamped) == 8 and clamped[0] == 0 and clamped[-1] == 99
    assert clamped == sorted(set(clamped)) and set(clamped) <= set(keys)
    gaps = np.diff(clamped[1:-1])
    assert gaps.max() - gaps.min() <= 2, f"the middle is sampled uniformly: {clamped}"
    assert clamp_keyframes([0, 5, 9], 10, 2, 3) == [0, 5, 9]


# ----------------------------------------------------------------------------------------- synthetic video


def _texture(seed: int, width: int = 1400, height: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = cv2.resize((rng.random((height // 8, width // 8, 3)) * 255).astype(np.uint8), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    for _ in range(400):
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            cv2.circle(image, (x, y), int(rng.integers(5, 30)), colour, -1)
        else:
            cv2.rectangle(image, (x, y), (x + int(rng.integers(5, 50)), y + int(rng.integers(5, 50))), colour, -1)
    return image


def _frame_to_texture(tx: float, ty: float, degrees: float) -> np.ndarray:
    """3x3 map from frame pixels to texture pixels: rotate about the frame centre, then translate."""
    centre = np.array([FRAME_W / 2, FRAME_H / 2])
    theta = np.deg2rad(degrees)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    matrix = np.eye(3)
    matrix[:2, :2] = rotation
    matrix[:2, 2] = centre + np.array([tx, ty]) - rotation @ centre
    return matrix


# Camera pose per 1-fps sample: (texture, tx, ty, degrees). A pan of 64 px per sample (overlap with the key frame
# 0.8, 0.6, 0.4 -> key), a pause, a pan with rotation, then a cut to an unrelated scene.
POSES = (
    [(0, 100 + 64 * k, 300, 0) for k in range(7)]
    + [(0, 484, 300, 0)] * 3
    + [(0, 484 + 48 * k, 300, 25 * k) for k in range(1, 4)]
    + [(1, 400, 300, 0)] * 3
)


def expected_keyframes(threshold: float) -> tuple[list[int], list[float | None]]:
    """The overlap rule applied to the known camera motion (exact homographies)."""
    keys, overlaps, key_pose = [0], [], POSES[0]
    for k, pose in enumerate(POSES[1:], start=1):
        if pose[0] != key_pose[0]:
            overlap = None  # a different scene
        else:
            homography = np.linalg.inv(_frame_to_texture(*key_pose[1:])) @ _frame_to_texture(*pose[1:])
            overlap = view_overlap(homography, FRAME_W, FRAME_H)
        overlaps.append(overlap)
        if overlap is None or overlap < threshold:
            keys.append(k)
            key_pose = pose
    if keys[-1] != len(POSES) - 1:
        keys.append(len(POSES) - 1)
    return keys, overlaps


@pytest.fixture(scope="module")
def synthetic_video(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    textures = [_texture(1), _texture(2)]
    samples = [
        cv2.warpAffine(textures[t], _frame_to_texture(tx, ty, deg)[:2], (FRAME_W, FRAME_H),
                       flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
        for t, tx, ty, deg in POSES
    ]
    # 2 fps: each sample is followed by an in-between frame (a blend) that the 1-fps sampling must skip.
    frames = []
    for k, sample in enumerate(samples):
        frames.append(sample)
        if k + 1 < len(samples):
            frames.append(cv2.addWeighted(sample, 0.5, samples[k + 1], 0.5, 0))
    path = write_video(tmp_path_factory.mktemp("synthetic") / "pan.avi", frames, fps=2.0)
    return path, samples


def test_synthetic_video_keyframes_match_the_known_view_changes(synthetic_video):
    path, samples = synthetic_video
    expected, overlaps = expected_keyframes(0.5)
    margins = [abs(o - 0.5) for o in overlaps if o is not None]
    assert min(margins) > 0.05, "the test video keeps clear of the threshold"
    keyframes = extract_keyframes(str(path), KeyframeConfig(min_keyframes=1, max_keyframes=100))
    assert keyframes.sampled_frames == [2 * k for k in range(len(POSES))]
    assert keyframes.indices == expected
    for index, image in zip(keyframes.indices, keyframes.images):
        assert np.array_equal(image, cv2.cvtColor(samples[index], cv2.COLOR_BGR2RGB))
    # A stricter threshold only ever adds key frames here, at the places the rule predicts.
    strict = extract_keyframes(str(path), KeyframeConfig(overlap_threshold=0.7, min_keyframes=1, max_keyframes=100))
    assert strict.indices == expected_keyframes(0.7)[0]
    assert len(strict.indices) > len(keyframes.indices)


# --------------------------------------------------------------------------------------- degenerate homography


def test_view_overlap_of_proper_views():
    assert view_overlap(np.eye(3), FRAME_W, FRAME_H) == pytest.approx(1.0)
    shift = np.array([[1, 0, FRAME_W / 2], [0, 1, 0], [0, 0, 1]], dtype=float)
    assert view_overlap(shift, FRAME_W, FRAME_H) == pytest.approx(0.5)
    zoom_out = np.diag([0.5, 0.5, 1.0])
    assert view_overlap(zoom_out, FRAME_W, FRAME_H) == pytest.approx(0.25)
    far_away = np.array([[1, 0, 5 * FRAME_W], [0, 1, 0], [0, 0, 1]], dtype=float)
    assert view_overlap(far_away, FRAME_W, FRAME_H) == pytest.approx(0.0)


def test_view_overlap_of_degenerate_views_is_none():
    mirror = np.array([[-1, 0, FRAME_W], [0, 1, 0], [0, 0, 1]], dtype=float)  # same area, flipped orientation
    assert view_overlap(mirror, FRAME_W, FRAME_H) is None
    corners = np.float32([[0, 0], [FRAME_W, 0], [FRAME_W, FRAME_H], [0, FRAME_H]])
    bow_tie = np.float32([[0, 0], [FRAME_W, 0], [0, FRAME_H], [FRAME_W, FRAME_H]])
    assert view_overlap(cv2.getPerspectiveTransform(corners, bow_tie), FRAME_W, FRAME_H) is None
    arrow = np.float32([[0, 0], [FRAME_W, 0], [FRAME_W / 2, FRAME_H / 4], [0, FRAME_H]])  # non-convex (reflex corner)
    assert view_overlap(cv2.getPerspectiveTransform(corners, arrow), FRAME_W, FRAME_H) is None
    through_infinity = np.array([[1, 0, 0], [0, 1, 0], [-2.0 / FRAME_W, 0, 1]], dtype=float)  # w < 0 at the right edge
    assert view_overlap(through_infinity, FRAME_W, FRAME_H) is None
    collapsed = np.diag([1e-5, 1e-5, 1.0])
    assert view_overlap(collapsed, FRAME_W, FRAME_H) is None


def test_degenerate_homography_makes_a_keyframe(tmp_path, monkeypatch):
    """A still scene has key frames only at both ends; if every homography came out mirrored, every sample would be
    a key frame (degenerate = the view changed)."""
    still = cv2.warpAffine(_texture(3), _frame_to_texture(200, 200, 0)[:2], (FRAME_W, FRAME_H),
                           flags=cv2.WARP_INVERSE_MAP)
    path = write_video(tmp_path / "still.avi", [still] * 5, fps=1.0)
    cfg = KeyframeConfig(min_keyframes=1, max_keyframes=100)
    assert extract_keyframes(str(path), cfg).indices == [0, 4]
    mirror = np.array([[-1, 0, FRAME_W], [0, 1, 0], [0, 0, 1]], dtype=float)
    monkeypatch.setattr(cv2, "findHomography", lambda *args, **kwargs: (mirror, None))  # ransac_engine=opencv
    monkeypatch.setattr(keyframes_module, "find_homography_ransac", lambda *args, **kwargs: mirror)  # numpy
    for engine in ("numpy", "opencv"):
        assert extract_keyframes(str(path), replace(cfg, ransac_engine=engine)).indices == [0, 1, 2, 3, 4]


def test_featureless_frames_are_keyframes(tmp_path):
    """No ORB descriptors at all (flat frames): every sample is a key frame, as in the released code."""
    flat = [np.full((FRAME_H, FRAME_W, 3), value, np.uint8) for value in (10, 10, 10)]
    path = write_video(tmp_path / "flat.avi", flat, fps=1.0)
    assert extract_keyframes(str(path), KeyframeConfig(min_keyframes=1)).indices == [0, 1, 2]


# ------------------------------------------------------------------------------------ slow, short, corrupt


def test_video_slower_than_the_sample_rate_takes_every_frame(tmp_path):
    frames = [cv2.warpAffine(_texture(4), _frame_to_texture(64 * k, 300, 0)[:2], (FRAME_W, FRAME_H),
                             flags=cv2.WARP_INVERSE_MAP) for k in range(6)]
    path = write_video(tmp_path / "slow.avi", frames, fps=0.5)
    keyframes = extract_keyframes(str(path), KeyframeConfig(min_keyframes=1))
    assert keyframes.fps == pytest.approx(0.5)
    assert keyframes.sampled_frames == list(range(6)) and keyframes.num_sampled == 6
    assert keyframes.indices[0] == 0 and keyframes.indices[-1] == 5


def test_very_short_videos(tmp_path):
    frame = cv2.warpAffine(_texture(5), _frame_to_texture(0, 0, 0)[:2], (FRAME_W, FRAME_H), flags=cv2.WARP_INVERSE_MAP)
    one = extract_keyframes(str(write_video(tmp_path / "one.avi", [frame], fps=30.0)), KeyframeConfig())
    assert (one.indices, one.frames, one.num_sampled) == ([0], [0], 1)
    two = extract_keyframes(str(write_video(tmp_path / "two.avi", [frame, frame], fps=30.0)), KeyframeConfig())
    assert (two.indices, two.frames) == ([0, 1], [0, 1]), "the last frame joins the samples and is kept"


def test_bad_files_raise_video_error_naming_the_file(tmp_path, realdata):
    missing = tmp_path / "missing.mp4"
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    text = tmp_path / "notes.avi"
    text.write_text("not a video\n" * 100)
    truncated = tmp_path / "truncated.mp4"
    real = realdata / "urbanvideo_bench" / "videos" / "AerialVLN_1_30BUDKLTXMTIKYKFIPPOXCMISXQE5S.mp4"
    truncated.write_bytes(real.read_bytes()[:2000])
    for path, problem in [(missing, "does not exist"), (empty, "empty"), (garbage, ""), (text, ""), (truncated, "")]:
        with pytest.raises(VideoError) as caught:
            extract_keyframes(str(path), KeyframeConfig())
        assert str(path) in str(caught.value) and problem in str(caught.value)
        assert isinstance(caught.value, ValueError)


def test_bad_config_is_rejected(synthetic_video):
    with pytest.raises(ValueError, match="min_keyframes"):
        extract_keyframes(str(synthetic_video[0]), KeyframeConfig(min_keyframes=5, max_keyframes=4))
    with pytest.raises(ValueError, match="ransac_engine"):
        extract_keyframes(str(synthetic_video[0]), KeyframeConfig(ransac_engine="magsac"))


# ------------------------------------------------------------------------------------------------------ CLI


def test_keyframes_subcommand_prints_json(synthetic_video, capsys):
    import argparse

    from perception.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["keyframes", str(synthetic_video[0]), "--threshold", "0.7", "--min", "1"])
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    direct = extract_keyframes(str(synthetic_video[0]), KeyframeConfig(overlap_threshold=0.7, min_keyframes=1))
    assert printed["indices"] == direct.indices and printed["frames"] == direct.frames

    args = parser.parse_args(["keyframes", "/no/such/video.mp4"])
    assert args.func(args) == 2
    assert "/no/such/video.mp4" in capsys.readouterr().err


# ------------------------------------------------------------------- the released method, threads, second pass


def test_key_frames_equal_the_released_methods_on_the_real_videos(real_videos):
    """bench/keyframes.py re-implements the released code (rasterised overlap, its clamping); on the real videos every
    decision agrees.  Ordering the matches by distance before RANSAC, as the released code does, is what makes the
    homographies -- and so the decisions -- the same (without it, AerialVLN_0 and _1 disagree)."""
    from bench.keyframes import published_method

    for video in real_videos:
        ours = extract_keyframes(str(video), KeyframeConfig())
        released = published_method(str(video))
        assert ours.sampled_frames == released.sampled_frames, video.name
        assert ours.detected == released.detected, video.name
        assert ours.indices == released.indices, video.name
        for image, bgr in zip(ours.images, released.frames):
            assert np.array_equal(image, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def test_threaded_and_sequential_extraction_are_identical(real_videos):
    """ORB on a pool of threads (finishing in any order) and the rule on one thread decide as the sequential loop."""
    for video in real_videos:
        sequential = extract_keyframes(str(video), KeyframeConfig(), threaded=False)
        assert sequential.detected != list(range(sequential.num_sampled)), "a video where not every sample is key"
        for threads in (1, 3):
            threaded = extract_keyframes(str(video), KeyframeConfig(feature_threads=threads))
            assert threaded.detected == sequential.detected and threaded.indices == sequential.indices, video.name
            assert all(np.array_equal(a, b) for a, b in zip(threaded.images, sequential.images))
    assert threaded.sampled_frames == sequential.sampled_frames
    assert all(np.array_equal(a, b) for a, b in zip(threaded.images, sequential.images))


def test_clamping_to_the_minimum_needs_no_second_pass(realdata, monkeypatch):
    """The samples that clamping to min_keyframes picks are predicted from the frame count and kept while streaming."""
    import perception.keyframes as keyframes_module

    short = str(realdata / "urbanvideo_bench" / "videos" / "AerialVLN_1_30BUDKLTXMTIKYKFIPPOXCMISXQE5S.mp4")
    detected = extract_keyframes(short, KeyframeConfig(min_keyframes=1, max_keyframes=1000))
    expected = extract_keyframes(short, KeyframeConfig(min_keyframes=detected.num_detected + 1))

    def no_second_pass(*args, **kwargs):
        raise AssertionError("the video was decoded a second time")

    monkeypatch.setattr(keyframes_module, "read_frames", no_second_pass)
    padded = extract_keyframes(short, KeyframeConfig(min_keyframes=detected.num_detected + 1))
    assert padded.indices == expected.indices and len(padded.indices) == detected.num_detected + 1
    assert set(padded.indices) - set(detected.indices), "clamping picked samples that are not key frames"
    assert all(np.array_equal(a, b) for a, b in zip(padded.images, expected.images))


def test_degeneracy_names_the_problem():
    from perception.keyframes import degeneracy

    corners = np.float32([[0, 0], [FRAME_W, 0], [FRAME_W, FRAME_H], [0, FRAME_H]])
    assert degeneracy(np.eye(3), FRAME_W, FRAME_H) is None
    assert degeneracy(np.array([[-1, 0, FRAME_W], [0, 1, 0], [0, 0, 1]], float), FRAME_W, FRAME_H) == "mirrored"
    bow_tie = np.float32([[0, 0], [FRAME_W, 0], [0, FRAME_H], [FRAME_W, FRAME_H]])
    # A homography that is finite on the whole frame keeps it convex: a bow tie can only come through infinity.
    assert degeneracy(cv2.getPerspectiveTransform(corners, bow_tie), FRAME_W, FRAME_H) == "through_infinity"
    through_infinity = np.array([[1, 0, 0], [0, 1, 0], [-2.0 / FRAME_W, 0, 1]], dtype=float)
    assert degeneracy(through_infinity, FRAME_W, FRAME_H) == "through_infinity"
    assert degeneracy(np.diag([1e-5, 1e-5, 1.0]), FRAME_W, FRAME_H) == "collapsed"


def _view(tx: float, ty: float, size: tuple[int, int] = (FRAME_W, FRAME_H)) -> np.ndarray:
    """The frame a camera at (tx, ty) sees of texture 3, rendered at `size` (the same field of view at any size)."""
    frame = cv2.warpAffine(_texture(3), _frame_to_texture(tx, ty, 0)[:2], (FRAME_W, FRAME_H), flags=cv2.WARP_INVERSE_MAP)
    return frame if size == (FRAME_W, FRAME_H) else cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def test_each_decision_names_its_reason_and_a_frame_size_change_keeps_the_overlap():
    """The overlap rule sample by sample: the first sample; the same view again (overlap 1, not a key frame); the same
    view at twice, then at 3/4 of the size (the size changed mid-video: still overlap 1, not a key frame); a view moved
    by 60% of the width (overlap 0.4: a key frame); a flat frame (no descriptors: a key frame), after which the next
    frame has nothing to match against; and with min_matches out of reach, few matches."""
    detector = keyframes_module._KeyframeDetector(KeyframeConfig())
    first = detector.decide(_view(200, 200))
    assert (first.is_keyframe, first.reason) == (True, "first")
    for size in ((FRAME_W, FRAME_H), (2 * FRAME_W, 2 * FRAME_H), (3 * FRAME_W // 4, 3 * FRAME_H // 4)):
        same = detector.decide(_view(200, 200, size))
        assert (same.is_keyframe, same.reason) == (False, "overlap"), size
        assert same.overlap == pytest.approx(1.0, abs=0.03), size
        assert same.num_matches > KeyframeConfig().min_matches
    moved = detector.decide(_view(200 + 0.6 * FRAME_W, 200))
    assert (moved.is_keyframe, moved.reason) == (True, "overlap") and moved.overlap == pytest.approx(0.4, abs=0.03)
    assert detector.decide(np.full((FRAME_H, FRAME_W, 3), 10, np.uint8)).reason == "no_descriptors"
    after_flat = detector.decide(_view(200, 200))
    assert (after_flat.is_keyframe, after_flat.reason) == (True, "no_descriptors")

    strict = keyframes_module._KeyframeDetector(KeyframeConfig(min_matches=10_000))
    strict.decide(_view(200, 200))
    few = strict.decide(_view(200, 200))
    assert (few.is_keyframe, few.reason) == (True, "few_matches") and 0 < few.num_matches <= 10_000
