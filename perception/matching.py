"""Brute-force Hamming matching with cross check: the matches ``cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)``
returns, computed in numpy with popcounts on one thread.

OpenCV keeps query q's nearest train descriptor t (the first of equal distances) when q is in turn t's nearest query
(again the first of equal distances), in query order; the same rule on the same distance matrix gives the same
matches, ties included (tests/test_perception_matching.py checks it against OpenCV on real ORB descriptors and on
tie-heavy random ones).  It costs about half the CPU of OpenCV's matcher, which runs on every core for a 500 x 500
match: that matters where the match is on the key-frame rule's in-order path, beside the decoding.
"""

from __future__ import annotations

import cv2
import numpy as np

# Query rows per block of the distance matrix: bounds its memory for large descriptor sets (~1 MB per block).
_ROWS_PER_BLOCK = 1024


def match_hamming(query: np.ndarray | None, train: np.ndarray | None, engine: str = "numpy") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query indices, train indices, distances) of the cross-checked matches of binary descriptors (uint8 rows), in
    query order, as ``cv2.BFMatcher(NORM_HAMMING, crossCheck=True).match(query, train)``; `engine` "opencv" runs it."""
    if query is None or train is None or len(query) == 0 or len(train) == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty, np.zeros(0, dtype=np.int32)
    if engine == "opencv":
        matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(query, train)
        return (np.array([m.queryIdx for m in matches], dtype=np.intp), np.array([m.trainIdx for m in matches], dtype=np.intp),
                np.array([m.distance for m in matches], dtype=np.int32))
    query_words, train_words = _as_words(query), _as_words(train)
    num_query, num_train = len(query_words), len(train_words)
    distance_type = np.int16 if query_words.shape[1] * 64 <= np.iinfo(np.int16).max else np.int32
    nearest_train = np.empty(num_query, dtype=np.intp)
    nearest_distance = np.empty(num_query, dtype=np.int32)
    # Per train descriptor: its nearest query so far (blocks go in query order, so a tie keeps the earlier query).
    column_best = np.full(num_train, np.iinfo(np.int32).max, dtype=np.int32)
    column_query = np.zeros(num_train, dtype=np.intp)
    columns = np.arange(num_train)
    for start in range(0, num_query, _ROWS_PER_BLOCK):
        block = query_words[start:start + _ROWS_PER_BLOCK]
        distances = np.bitwise_count(block[:, None, 0] ^ train_words[None, :, 0]).astype(distance_type)
        for word in range(1, query_words.shape[1]):
            distances += np.bitwise_count(block[:, None, word] ^ train_words[None, :, word])
        rows = np.arange(len(block))
        nearest_train[start:start + len(block)] = best = distances.argmin(axis=1)
        nearest_distance[start:start + len(block)] = distances[rows, best]
        best_query = distances.argmin(axis=0)
        best_of_block = distances[best_query, columns]
        better = best_of_block < column_best
        column_best[better] = best_of_block[better]
        column_query[better] = best_query[better] + start
    kept = np.flatnonzero(column_query[nearest_train] == np.arange(num_query))
    return kept, nearest_train[kept], nearest_distance[kept]


def _as_words(descriptors: np.ndarray) -> np.ndarray:
    """Descriptor rows as uint64 words (zero-padded to a multiple of 8 bytes: padding adds no distance)."""
    descriptors = np.ascontiguousarray(descriptors, dtype=np.uint8)
    width = descriptors.shape[1]
    if width % 8:
        padded = np.zeros((len(descriptors), width + 8 - width % 8), dtype=np.uint8)
        padded[:, :width] = descriptors
        descriptors = padded
    return descriptors.view(np.uint64)
