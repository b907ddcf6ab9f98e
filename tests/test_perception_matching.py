"""perception/matching.py returns exactly cv2.BFMatcher(NORM_HAMMING, crossCheck=True)'s matches."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from perception import matching
from perception.matching import match_hamming
from perception.video import SampledFrames


def opencv_matches(query: np.ndarray, train: np.ndarray) -> list[tuple[int, int, float]]:
    return [(m.queryIdx, m.trainIdx, m.distance) for m in cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(query, train)]


def ours(query: np.ndarray, train: np.ndarray, engine: str = "numpy") -> list[tuple[int, int, float]]:
    q, t, d = match_hamming(query, train, engine)
    return list(zip(q.tolist(), t.tolist(), d.astype(float).tolist()))


def test_matches_equal_opencv_on_real_orb_descriptors(real_videos):
    orb = cv2.ORB_create(500)
    compared = 0
    for video in real_videos:
        descriptors = [orb.detectAndCompute(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), None)[1] for _, bgr in SampledFrames(str(video), 1.0)]
        for i in range(len(descriptors) - 2):
            for j in (i + 1, i + 2):
                for query, train in ((descriptors[i], descriptors[j]), (descriptors[j], descriptors[i])):
                    expected = opencv_matches(query, train)
                    assert ours(query, train) == expected, (video.name, i, j)
                    compared += 1
    assert compared > 100


@pytest.mark.parametrize("seed", range(6))
def test_ties_are_broken_as_opencv_breaks_them(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    monkeypatch.setattr(matching, "_ROWS_PER_BLOCK", 7)  # several blocks: ties across blocks keep the earlier query
    for _ in range(300):
        num_query, num_train = rng.integers(1, 40, size=2)
        query = np.zeros((num_query, 32), dtype=np.uint8)
        train = np.zeros((num_train, 32), dtype=np.uint8)
        bits = int(rng.integers(1, 6))  # few distinct descriptors: many equal distances
        query[:, 0] = rng.integers(0, 2**bits, num_query)
        train[:, 0] = rng.integers(0, 2**bits, num_train)
        assert ours(query, train) == opencv_matches(query, train)


def test_odd_widths_and_empty_sets():
    rng = np.random.default_rng(0)
    query, train = rng.integers(0, 256, (30, 13), dtype=np.uint8), rng.integers(0, 256, (25, 13), dtype=np.uint8)
    assert ours(query, train) == opencv_matches(query, train)  # 13 bytes: zero-padded words
    assert ours(query, train, "opencv") == opencv_matches(query, train)
    for empty in (None, np.zeros((0, 32), dtype=np.uint8)):
        assert ours(empty, train) == [] and ours(query, empty) == []
