"""perception/ransac.py returns OpenCV's RANSAC homography bit for bit -- by its own replay, not by falling back."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from perception import ransac
from perception.video import SampledFrames
from perception.ransac import find_homography_ransac, forget_drawn_subsets


class _CvRng:
    """cv::RNG, one draw at a time (the reference the vectorised subset stream must reproduce)."""

    def __init__(self) -> None:
        self.state = (1 << 64) - 1

    def uniform(self, n: int) -> int:
        self.state = (self.state & 0xFFFFFFFF) * 4164903690 + (self.state >> 32)
        return (self.state & 0xFFFFFFFF) % n


def reference_quadruples(n: int, count: int) -> np.ndarray:
    rng, quads = _CvRng(), []
    for _ in range(count):
        subset: list[int] = []
        while len(subset) < 4:  # getSubset: redraw an index already in the subset
            index = rng.uniform(n)
            if index not in subset:
                subset.append(index)
        quads.append(subset)
    return np.asarray(quads).T


@pytest.mark.parametrize("n", [9, 11, 17, 60, 130, 500, 40000])
def test_subset_stream_is_getsubsets_draws(n):
    forget_drawn_subsets()
    # Asked for in uneven pieces, as the search asks; the stream must continue exactly where it stopped.
    pieces = [ransac._STREAM.quadruples(n, start, stop) for start, stop in ((0, 5), (5, 700), (700, 3000))]
    assert np.array_equal(np.concatenate(pieces, axis=1), reference_quadruples(n, 3000))


def _scenario(rng: np.random.Generator, n: int, inlier_fraction: float, noise: float, quantum: float) -> tuple[np.ndarray, np.ndarray]:
    """Matches between two 640x480 views: a random homography for the inliers, uniform outliers."""
    src = rng.uniform(0, [640, 480], size=(n, 2))
    if quantum:  # ORB key points sit on pyramid grids: repeated coordinates and exactly collinear triples
        src = np.round(src / quantum) * quantum
    homography = np.eye(3) + rng.normal(0, [[0.05, 0.05, 20], [0.05, 0.05, 20], [5e-5, 5e-5, 0]], size=(3, 3))
    moved = cv2.perspectiveTransform(src.reshape(-1, 1, 2), homography).reshape(-1, 2)
    dst = moved + rng.normal(0, noise, size=moved.shape)
    outliers = rng.random(n) > inlier_fraction
    dst[outliers] = rng.uniform(0, [640, 480], size=(int(outliers.sum()), 2))
    return src.astype(np.float32), dst.astype(np.float32)


def _real_matches(videos: list[Path]) -> list[tuple[np.ndarray, np.ndarray]]:
    """ORB matches, ordered by distance, between 1-fps samples 1 and 2 apart in the real videos."""
    orb, matcher = cv2.ORB_create(500), cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    pairs = []
    for video in videos:
        features = [orb.detectAndCompute(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), None) for _, bgr in SampledFrames(str(video), 1.0)]
        for i in range(len(features)):
            for j in (i + 1, i + 2):
                if j < len(features) and features[i][1] is not None and features[j][1] is not None:
                    matches = sorted(matcher.match(features[i][1], features[j][1]), key=lambda m: m.distance)
                    if len(matches) > 10:
                        src = np.float32([features[j][0][m.trainIdx].pt for m in matches])
                        dst = np.float32([features[i][0][m.queryIdx].pt for m in matches])
                        pairs.append((src, dst))
    return pairs


def _assert_same_as_opencv(cases, threshold: float, monkeypatch) -> int:
    """Asserts equality with cv2.findHomography on every case; returns how many fell back to OpenCV."""
    fallbacks = []
    real_opencv = ransac._opencv
    monkeypatch.setattr(ransac, "_opencv", lambda *args: fallbacks.append(1) or real_opencv(*args))
    for number, (src, dst) in enumerate(cases):
        forget_drawn_subsets() if number % 3 == 0 else None  # cold and warm subset caches both
        expected, _ = cv2.findHomography(src, dst, cv2.RANSAC, threshold)
        ours = find_homography_ransac(src, dst, threshold)
        if expected is None:
            assert ours is None, f"case {number}"
        else:
            assert ours is not None and np.array_equal(ours, expected), f"case {number}: {ours} != {expected}"
    return len(fallbacks)


def test_same_homography_as_opencv_on_real_matches(real_videos, monkeypatch):
    cases = _real_matches(real_videos)
    assert len(cases) > 60
    fallbacks = _assert_same_as_opencv(cases, 5.0, monkeypatch)
    assert fallbacks <= len(cases) // 20, f"{fallbacks} of {len(cases)} calls were left to OpenCV"


def test_same_homography_as_opencv_on_synthetic_matches(monkeypatch):
    rng = np.random.default_rng(7)
    for threshold in (1.0, 5.0):
        plentiful, hopeless = [], []  # hopeless: few true matches, the best model may have only its own 4 points
        for n in (12, 25, 60, 150, 400):
            for inlier_fraction in (0.05, 0.2, 0.5, 0.9):
                for noise, quantum in ((0.2, 0.0), (0.4, 1.2), (0.0, 0.0)):
                    case = _scenario(rng, n, inlier_fraction, noise * threshold, quantum)
                    (plentiful if n * inlier_fraction >= 20 else hopeless).append(case)
        assert _assert_same_as_opencv(plentiful, threshold, monkeypatch) == 0
        _assert_same_as_opencv(hopeless, threshold, monkeypatch)


def test_degenerate_inputs_give_opencvs_answer(monkeypatch):
    rng = np.random.default_rng(3)
    line = np.stack([np.linspace(0, 100, 40), np.linspace(0, 50, 40)], axis=1).astype(np.float32)
    same_point = np.full((30, 2), 7.0, dtype=np.float32)
    few = rng.uniform(0, 100, size=(6, 2)).astype(np.float32)
    grid = np.stack(np.meshgrid(np.arange(6.0), np.arange(5.0)), axis=-1).reshape(-1, 2).astype(np.float32) * 10
    cases = [(line, line * 2), (same_point, same_point), (few, few + 3), (grid, grid[::-1].copy())]
    _assert_same_as_opencv(cases, 3.0, monkeypatch)


def test_update_num_iters_is_opencvs():
    # RANSACUpdateNumIters(0.995, ep, 4, 2000): all iterations until inliers are common, then log(0.005)/log(1-w^4).
    assert ransac._update_num_iters(0.995, 0.9, 2000) == 2000
    assert ransac._update_num_iters(0.995, 0.5, 2000) == 82  # 82.09
    assert ransac._update_num_iters(0.995, 0.04, 2000) == 3  # 2.80: cvRound rounds, it does not truncate
    assert ransac._update_num_iters(0.995, 0.0, 2000) == 0


def test_subset_cache_is_bounded_and_stays_exact():
    forget_drawn_subsets()
    for n in range(20, 20 + ransac._CACHED_POINT_COUNTS + 40):
        ransac._STREAM.quadruples(n, 0, 8)
    assert len(ransac._STREAM._drawn) == ransac._CACHED_POINT_COUNTS
    assert 20 not in ransac._STREAM._drawn  # the least recently used went first
    assert np.array_equal(ransac._STREAM.quadruples(20, 0, 600), reference_quadruples(20, 600))


def test_other_iteration_budgets_and_confidences():
    rng = np.random.default_rng(11)
    cases = [_scenario(rng, n, fraction, 1.0, 0.0) for n in (30, 120, 300) for fraction in (0.1, 0.4, 0.8)]
    for max_iters, confidence in ((500, 0.99), (3000, 0.999), (50, 0.9)):
        for src, dst in cases:
            expected, _ = cv2.findHomography(src, dst, cv2.RANSAC, 3.0, maxIters=max_iters, confidence=confidence)
            ours = find_homography_ransac(src, dst, 3.0, max_iters=max_iters, confidence=confidence)
            assert (expected is None and ours is None) or np.array_equal(ours, expected), (max_iters, confidence)
