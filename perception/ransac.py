"""OpenCV's RANSAC homography -- the matrix ``cv2.findHomography(src, dst, cv2.RANSAC, t)`` returns, bit for bit --
with its hypotheses scored a block at a time in numpy instead of one 9x9 eigen-decomposition each.

Why it is the same matrix.  OpenCV's RANSAC (``RANSACPointSetRegistrator``: 2000 iterations, confidence 0.995) is
deterministic: its generator is seeded with ``(uint64)-1`` on every call, draws each 4-point subset with
``rng.uniform(0, n)`` (redrawing an index already in the subset), and rejects subsets whose last point is collinear
with two others (``haveCollinearPoints``) or whose triangles change orientation between the images
(``checkSubset``).  Each accepted subset is one iteration: its model is counted against every point (squared
reprojection error in float32 ``<= t*t``); a strictly larger count becomes the best model and shrinks the iteration
budget (``RANSACUpdateNumIters``).  The result is the best model's inliers refitted by least squares and
Levenberg-Marquardt, which is what ``cv2.findHomography(inlier_src, inlier_dst, 0)`` computes.

This module replays the same generator and the same subset checks (vectorised, in OpenCV's float64 arithmetic), fits
every accepted subset in closed form, and bounds each hypothesis' inlier count from below and above: points within a
rounding band of the threshold (the closed form differs from OpenCV's eigenvector solution by rounding, and OpenCV
counts in float32), and subsets too thin to trust the closed form on, are uncertain.  Only hypotheses that could be a
new best by those bounds are refitted with OpenCV's own 4-point solver (``cv2.findHomography(subset, 0)`` is RANSAC's
kernel) and counted exactly as ``computeError`` does, and the loop's best model and budget are replayed in order.
Where the replay cannot be exact -- too few points, a subset search that would exhaust OpenCV's attempts, a best
model with exactly 4 inliers (RANSAC refines it, method 0 does not), or a best count outside its bounds -- the call
returns OpenCV's own RANSAC result.  tests/test_perception_ransac.py compares the two on real and synthetic matches.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import OrderedDict

import cv2
import numpy as np

_MULTIPLIER = 4164903690  # cv::RNG's multiply-with-carry coefficient (CV_RNG_COEFF)
_LOW32 = 0xFFFFFFFF
_FLT_EPSILON = float(np.finfo(np.float32).eps)
_DBL_MIN = float(np.finfo(np.float64).tiny)
_MODEL_POINTS = 4
_MAX_SUBSET_ATTEMPTS = 10000  # getSubset's attempts per iteration, as RANSAC's run() asks for
_TRIANGLES = ((0, 1, 2), (1, 2, 3), (0, 2, 3), (0, 1, 3))  # checkSubset's orientation triples
# A subset whose thinnest triangle is below this fraction of its squared spread is counted by OpenCV itself: there
# OpenCV's solution (an eigenvector of the squared system) may be far off the exact fit computed here.
_MIN_TRIANGLE_FRACTION = 1e-5
# Bound on the relative difference between the closed-form fit and OpenCV's on trusted subsets (measured <= 2e-8),
# plus float32 rounding of OpenCV's count: how far a projected point may move, relative to the terms summed.
_RELATIVE_SLACK = 1e-6 + 8 * _FLT_EPSILON
_CACHED_POINT_COUNTS = 256  # match counts whose subset streams stay cached (least recently used dropped)
_FIRST_BLOCK = 256  # hypotheses scored first: enough when many matches agree and the budget shrinks fast
_REPLAY_WINDOW = 8  # draws examined at once for a subset with repeats (one that needs more is replayed singly)
_ELEMENTS_PER_PASS = 1 << 19  # hypotheses x points scored per pass (bounds the scratch arrays: ~12 MB)


def find_homography_ransac(
    src: np.ndarray, dst: np.ndarray, reproj_threshold: float, max_iters: int = 2000, confidence: float = 0.995
) -> np.ndarray | None:
    """``cv2.findHomography(src, dst, cv2.RANSAC, reproj_threshold, maxIters=max_iters, confidence=confidence)[0]``.

    `src`, `dst`: matching points, any shape with 2 coordinates last (converted to float32 as OpenCV does).
    Returns the 3x3 float64 homography mapping `src` onto `dst`, or None where OpenCV finds none.
    """
    src = np.ascontiguousarray(np.asarray(src, dtype=np.float32).reshape(-1, 2))
    dst = np.ascontiguousarray(np.asarray(dst, dtype=np.float32).reshape(-1, 2))
    n = len(src)
    if n != len(dst) or n <= 2 * _MODEL_POINTS or max_iters < 1 or not (np.isfinite(src).all() and np.isfinite(dst).all()):
        return _opencv(src, dst, reproj_threshold, max_iters, confidence)
    threshold = np.float32(reproj_threshold * reproj_threshold)  # findInliers compares err <= (float)(t*t)
    search = _SubsetSearch(src, dst)
    scorer = _Scorer(src, dst, float(threshold))
    exact: dict[int, tuple[int, np.ndarray | None]] = {}
    best: tuple[int, np.ndarray] | None = None  # (iteration, subset) of the best model so far
    iterations, done, best_count, best_low = max_iters, 0, 0, 0
    while done < iterations:  # RANSAC's loop, a block of hypotheses at a time (the budget shrinks as it goes)
        found = search.next(min(_FIRST_BLOCK if done == 0 else max_iters, iterations - done))
        if found is None:  # a subset search OpenCV would give up on: leave that path to OpenCV itself
            return _opencv(src, dst, reproj_threshold, max_iters, confidence)
        subsets, thin = found
        low, high = scorer.count_bounds(subsets, thin)
        # The exact count is >= low; a hypothesis can beat all before it only if its high exceeds their lows.
        best_low_before = np.maximum(best_low, np.concatenate([[0], np.maximum.accumulate(low)[:-1]]))
        for j in np.flatnonzero((high > best_low_before) & (high >= _MODEL_POINTS)).tolist():
            if done + j >= iterations:
                break
            if low[j] == high[j]:
                count = int(low[j])
            else:
                exact[done + j] = _exact_count(src, dst, subsets[:, j], threshold)
                count = exact[done + j][0]
            if count > max(best_count, _MODEL_POINTS - 1):
                best, best_count = (done + j, subsets[:, j]), count
                iterations = _update_num_iters(confidence, (n - count) / n, iterations)
        best_low = max(best_low, int(low.max()))
        done += subsets.shape[1]
    if best is None or best_count == _MODEL_POINTS:
        return _opencv(src, dst, reproj_threshold, max_iters, confidence)
    index, subset = best
    count, inliers = exact[index] if index in exact else _exact_count(src, dst, subset, threshold)
    if count != best_count or inliers is None:  # the bounds did not hold: answer with nothing but OpenCV's
        return _opencv(src, dst, reproj_threshold, max_iters, confidence)
    # RANSAC's final step: least squares on the best model's inliers, then Levenberg-Marquardt (method 0 does both).
    homography, _ = cv2.findHomography(src[inliers], dst[inliers], 0)
    return homography


def _opencv(src: np.ndarray, dst: np.ndarray, reproj_threshold: float, max_iters: int, confidence: float) -> np.ndarray | None:
    homography, _ = cv2.findHomography(src, dst, cv2.RANSAC, reproj_threshold, maxIters=max_iters, confidence=confidence)
    return homography


class _SubsetStream:
    """The index quadruples OpenCV's RANSAC draws for n points, before any subset check; cached per n, as (4, Q)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = (1 << 64) - 1  # cv::RNG((uint64)-1)
        self._raw: list[int] = []
        self._raw_array = np.zeros(0, dtype=np.uint64)
        # n -> (quadruples so far, raw values consumed), least recently used first; int16 indices where n allows.
        self._drawn: OrderedDict[int, tuple[np.ndarray, int]] = OrderedDict()

    def quadruples(self, num_points: int, start: int, stop: int) -> np.ndarray:
        with self._lock:
            quads, consumed = self._drawn.pop(num_points, (np.zeros((4, 0), dtype=np.intp), 0))
            if quads.shape[1] < stop:
                quads, consumed = self._draw_more(num_points, quads, consumed, stop)
                compact = np.int16 if num_points <= np.iinfo(np.int16).max else np.int32
                quads = quads.astype(compact, copy=False)
            self._drawn[num_points] = (quads, consumed)
            while len(self._drawn) > _CACHED_POINT_COUNTS:  # ~80 KB per n: bounded for long perception runs
                self._drawn.popitem(last=False)
            return quads[:, start:stop].astype(np.intp)

    def _raw_values(self, count: int) -> np.ndarray:
        if len(self._raw) < count:  # cv::RNG::next() is sequential: generated once per process, then shared
            state, values = self._state, self._raw
            for _ in range(count - len(values)):
                state = (state & _LOW32) * _MULTIPLIER + (state >> 32)
                values.append(state & _LOW32)
            self._state = state
            self._raw_array = np.array(values, dtype=np.uint64)
        return self._raw_array[:count]

    def _draw_more(self, n: int, quads: np.ndarray, consumed: int, count: int) -> tuple[np.ndarray, int]:
        """Extends n's quadruples to `count` (fewer only where the stream runs out): each subset takes the next 4
        distinct draws, as getSubset's ``rng.uniform`` loop does."""
        wanted = count - quads.shape[1]
        total = consumed + 5 * wanted + 64  # a repeated index costs an extra draw: rare for n >> 4
        compact = np.int16 if n <= np.iinfo(np.int16).max else np.int32  # narrow integers: faster comparisons
        draws = (self._raw_values(total + _REPLAY_WINDOW) % np.uint64(n)).astype(compact)
        limit = total - 3  # a subset may start below this: its 4 draws exist
        a, b, c, d = (draws[consumed + k:limit + k] for k in range(4))
        # From most positions the next 4 draws are distinct: a subset starting there is exactly those draws, and the
        # chain of subsets steps by 4 along one lane (position mod 4).  A subset starting where a repeat falls among
        # its 4 draws ("irregular") takes more draws and moves the chain to another lane.
        irregular = consumed + np.flatnonzero((a == b) | (a == c) | (a == d) | (b == c) | (b == d) | (c == d))
        window = draws[irregular[:, None] + np.arange(_REPLAY_WINDOW)]
        fresh = np.ones(window.shape, dtype=bool)  # draw o repeats none of the draws before it in the window
        for later in range(1, _REPLAY_WINDOW):
            for earlier in range(later):
                fresh[:, later] &= window[:, earlier] != window[:, later]
        seen = np.cumsum(fresh, axis=1, dtype=np.int8)
        span = np.argmax(seen >= _MODEL_POINTS, axis=1) + 1  # draws an irregular subset consumes
        complete = seen[:, -1] >= _MODEL_POINTS  # False: more repeats than the window holds
        # Walk the chain event by event (a scalar step per irregular subset met); the runs are filled in after.
        lane_rows = [np.flatnonzero(irregular % 4 == residue) for residue in range(4)]
        lane_positions = [irregular[rows].tolist() for rows in lane_rows]
        lane_indices = [rows.tolist() for rows in lane_rows]
        positions, spans, full = irregular.tolist(), span.tolist(), complete.tolist()

        def next_event(position: int) -> int:  # the first irregular row at or after `position` on its lane
            lane = position % 4
            hit = bisect.bisect_left(lane_positions[lane], position)
            return lane_indices[lane][hit] if hit < len(lane_indices[lane]) else -1

        row = next_event(consumed)
        runs: list[tuple[int, int]] = []  # (first draw, subsets 4 draws apart)
        events: list[tuple[int, int]] = []  # (index among the new subsets, irregular row)
        replayed: list[tuple[int, list[int]]] = []  # (index among the new subsets, indices) beyond the window
        made, position = 0, consumed
        while made < wanted:
            stop = positions[row] if row >= 0 else limit
            run = min(max((stop - position + 3) // 4, 0), wanted - made)
            if run:
                runs.append((position, run))
                made += run
                position += 4 * run
            if made >= wanted or row < 0:
                break
            if full[row]:
                events.append((made, row))
                position = positions[row] + spans[row]
            else:  # more repeats than the window holds: replay rng.uniform's redraws one by one
                subset: list[int] = []
                for value in draws[position:total].tolist():
                    position += 1
                    if value not in subset:
                        subset.append(value)
                        if len(subset) == _MODEL_POINTS:
                            break
                if len(subset) < _MODEL_POINTS:  # the draws ran out: the next call draws more
                    position = positions[row]
                    break
                replayed.append((made, subset))
            row = next_event(position)
            made += 1
        new = np.empty((4, made), dtype=np.intp)
        regular = np.ones(made, dtype=bool)
        if events:
            at, rows = (np.asarray(column, dtype=np.intp) for column in zip(*events))
            regular[at] = False
            first_four = fresh[rows] & (seen[rows] <= _MODEL_POINTS)
            new[:, at] = window[rows][first_four].reshape(-1, _MODEL_POINTS).T
        for at_index, subset in replayed:
            regular[at_index] = False
            new[:, at_index] = subset
        if runs:
            run_starts, run_lengths = (np.asarray(column, dtype=np.intp) for column in zip(*runs))
            run = np.repeat(np.arange(len(runs)), run_lengths)
            within = np.arange(len(run)) - (np.cumsum(run_lengths) - run_lengths)[run]
            starts = run_starts[run] + 4 * within
            new[:, regular] = draws[starts[None, :] + np.arange(4)[:, None]]
        return np.concatenate([quads.astype(np.intp), new], axis=1), position


_STREAM = _SubsetStream()


def forget_drawn_subsets() -> None:
    """Drops the per-n subset cache (the generator's raw stream stays): benchmarks time the per-n work too."""
    with _STREAM._lock:
        _STREAM._drawn.clear()


class _SubsetSearch:
    """getSubset's accepted subsets for one point set, in order, a block at a time."""

    def __init__(self, src: np.ndarray, dst: np.ndarray) -> None:
        self.src_x, self.src_y = src[:, 0].astype(np.float64), src[:, 1].astype(np.float64)
        self.dst_x, self.dst_y = dst[:, 0].astype(np.float64), dst[:, 1].astype(np.float64)
        self.drawn = 0  # quadruples of the stream examined so far
        self.rejected_run = 0  # consecutive rejected quadruples since the last accepted one
        self.accepted_so_far = 0

    def next(self, count: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The next `count` accepted subsets as (4, count) indices, with whether each is too thin to trust; None
        where getSubset would exhaust its attempts."""
        subsets: list[np.ndarray] = []
        thin_flags: list[np.ndarray] = []
        found = 0
        while found < count:
            need = count - found
            # Enough quadruples for `need` acceptances at the rate seen so far (most are rejected on real matches).
            rate = self.accepted_so_far / self.drawn if self.accepted_so_far else 0.2
            quads = _STREAM.quadruples(len(self.src_x), self.drawn, self.drawn + int(need / max(rate, 0.02) * 1.1) + 64)
            if quads.shape[1] == 0:
                return None
            positions, thin = self._accepted(quads)
            positions, thin = positions[:need], thin[:need]
            taken = int(positions[-1]) + 1 if len(positions) == need else quads.shape[1]
            if len(positions):
                previous = np.concatenate([[-1 - self.rejected_run], positions[:-1]])
                if int(np.max(positions - previous - 1)) >= _MAX_SUBSET_ATTEMPTS:
                    return None
                self.rejected_run = taken - 1 - int(positions[-1])
            else:
                self.rejected_run += taken
            if self.rejected_run >= _MAX_SUBSET_ATTEMPTS:
                return None
            subsets.append(quads[:, positions])
            thin_flags.append(thin)
            found += len(positions)
            self.accepted_so_far += len(positions)
            self.drawn += taken
        return np.concatenate(subsets, axis=1), np.concatenate(thin_flags)

    def _accepted(self, quads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the quadruples HomographyEstimatorCallback::checkSubset accepts (OpenCV's float64 arithmetic),
        and whether each accepted one is too thin to trust the closed-form fit on (thinnest triangle a tiny fraction
        of the squared extent, in either image)."""
        src_x, src_y = self.src_x[quads], self.src_y[quads]
        dst_x, dst_y = self.dst_x[quads], self.dst_y[quads]
        src_det, dst_det = _determinants(src_x, src_y), _determinants(dst_x, dst_y)
        negative = sum((s * d < 0).view(np.int8) for s, d in zip(src_det, dst_det))
        candidates = np.flatnonzero((negative == 0) | (negative == 4))  # orientation first: it rejects most
        collinear = _last_point_collinear(src_x[:, candidates], src_y[:, candidates])
        collinear |= _last_point_collinear(dst_x[:, candidates], dst_y[:, candidates])
        accepted = candidates[~collinear]
        thin = np.zeros(len(accepted), dtype=bool)
        for x, y, det in ((src_x, src_y, src_det), (dst_x, dst_y, dst_det)):
            width, height = _spread(x[:, accepted]), _spread(y[:, accepted])
            thinnest = np.abs(det[0][accepted])
            for other in det[1:]:
                thinnest = np.minimum(thinnest, np.abs(other[accepted]))
            thin |= ~(thinnest > _MIN_TRIANGLE_FRACTION * (width * width + height * height))
        return accepted, thin


def _spread(values: np.ndarray) -> np.ndarray:
    """max - min over the 4 rows of a (4, k) array (row by row: numpy's reductions along a short axis are slow)."""
    a, b, c, d = values
    return np.maximum(np.maximum(a, b), np.maximum(c, d)) - np.minimum(np.minimum(a, b), np.minimum(c, d))


def _determinants(x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """checkSubset's four triangle determinants: Matx33d rows (x, y, 1) expanded along the first row as
    cv::determinant does -- x_a*(y_b - y_c) - y_a*(x_b - x_c) + (x_b*y_c - x_c*y_b), the products by 1 being exact --
    with the (b, c) terms computed once per pair."""
    pair = {}
    for b, c in {(t[1], t[2]) for t in _TRIANGLES}:
        pair[b, c] = (y[b] - y[c], x[b] - x[c], x[b] * y[c] - x[c] * y[b])
    determinants = []
    for a, b, c in _TRIANGLES:
        dy, dx, cross = pair[b, c]
        determinants.append(x[a] * dy - y[a] * dx + cross)
    return determinants


def _last_point_collinear(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # haveCollinearPoints(ms, 4) only tests the last point against each pair of the points before it.
    dx = [x[j] - x[3] for j in range(3)]
    dy = [y[j] - y[3] for j in range(3)]
    collinear = np.zeros(x.shape[1], dtype=bool)
    for j in range(3):
        for k in range(j):
            cross = np.abs(dx[k] * dy[j] - dy[k] * dx[j])
            collinear |= cross <= _FLT_EPSILON * (((np.abs(dx[j]) + np.abs(dy[j])) + np.abs(dx[k])) + np.abs(dy[k]))
    return collinear


class _Scorer:
    """Bounds on the inlier counts of the models through a block of subsets, as OpenCV would count them."""

    def __init__(self, src: np.ndarray, dst: np.ndarray, threshold: float) -> None:
        self.src64, self.dst64, self.threshold = src.astype(np.float64), dst.astype(np.float64), threshold
        self.x, self.y = np.ascontiguousarray(src[:, 0]), np.ascontiguousarray(src[:, 1])
        self.dst_x, self.dst_y = np.ascontiguousarray(dst[:, 0]), np.ascontiguousarray(dst[:, 1])
        # Largest coordinate a point near the threshold can have: what the summed terms are relative to.
        self.extent = float(max(np.abs(src).max(), np.abs(dst).max())) + math.sqrt(threshold)

    def _affine(self, a: np.ndarray, b: np.ndarray, c: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> None:
        """out = a*x + b*y + c for per-model columns a, b, c (float32, in OpenCV's order of operations)."""
        np.multiply(a, self.x, out=out)
        np.multiply(b, self.y, out=scratch)
        out += scratch
        out += c

    def count_bounds(self, subsets: np.ndarray, thin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) per subset: low <= OpenCV's count <= high (0 and n where the subset is too thin to tell)."""
        models = _four_point_homographies(self.src64[subsets], self.dst64[subsets])  # (k, 9)
        usable = ~thin & np.isfinite(models).all(axis=1)
        models[~usable] = 0.0
        # A point's projection may move by s = (relative slack) x (size of the terms summed) / |w| in x and in y, so
        # its squared error by at most 2*sqrt(2)*r*s + 2*s*s near the threshold r*r: with c = s * |w| per model,
        # a band of |1/w| * (linear + constant * |1/w|) around the threshold, linear = 2*sqrt(2)*r*c, constant = 2*c*c.
        size = np.abs(models)
        terms = np.maximum(size[:, 0] + size[:, 1], size[:, 3] + size[:, 4]) * self.extent
        terms += np.maximum(size[:, 2], size[:, 5]) + self.extent * ((size[:, 6] + size[:, 7]) * self.extent + 1.0)
        c = _RELATIVE_SLACK * terms
        linear = (2.0 * math.sqrt(2.0 * self.threshold) * c).astype(np.float32)[:, None]
        constant = (2.0 * c * c).astype(np.float32)[:, None]
        models32 = models.astype(np.float32)
        k, n = len(models), len(self.x)
        low, high = np.empty(k, dtype=np.int64), np.empty(k, dtype=np.int64)
        rows_per_pass = max(16, _ELEMENTS_PER_PASS // n)
        work = _workspace(min(k, rows_per_pass) * n)
        threshold = np.float32(self.threshold)
        with np.errstate(all="ignore"):
            for start in range(0, k, rows_per_pass):
                stop = min(k, start + rows_per_pass)
                inverse, error, other, scratch, band, flags = work.shaped(stop - start, n)
                h = models32[start:stop, :, None]  # (rows, 9, 1): each entry a column against the points
                # OpenCV's projection term by term (a BLAS product would start threads that spin beside the decoding
                # thread): w = h6*x + h7*y + h8, x' = (h0*x + h1*y + h2) / w, y' likewise.
                self._affine(h[:, 6], h[:, 7], h[:, 8], out=inverse, scratch=scratch)
                np.divide(1.0, inverse, out=inverse)
                for first, target, out in ((0, self.dst_x, error), (3, self.dst_y, other)):
                    self._affine(h[:, first], h[:, first + 1], h[:, first + 2], out=out, scratch=scratch)
                    out *= inverse
                    out -= target
                    out *= out
                error += other  # OpenCV's squared reprojection error, up to the band
                np.abs(inverse, out=inverse)
                np.multiply(inverse, constant[start:stop], out=band)
                band += linear[start:stop]
                band *= inverse
                # Certainly inside: error + band <= r*r.  Possibly inside: not (error - band > r*r), so that a NaN (a
                # corner through infinity) counts as uncertain.
                np.add(error, band, out=other)
                np.less_equal(other, threshold, out=flags)
                low[start:stop] = flags.view(np.int8).sum(axis=1, dtype=np.int16)
                np.subtract(error, band, out=other)
                np.greater(other, threshold, out=flags)
                high[start:stop] = n - flags.view(np.int8).sum(axis=1, dtype=np.int16)
        return np.where(usable, low, 0), np.where(usable, high, n)


class _Workspace:
    """Scratch arrays for one thread's scoring passes, reused from call to call whatever the number of points (fresh
    large arrays are page-faulted in on every use, which costs more than the arithmetic)."""

    def __init__(self, elements: int) -> None:
        self.elements = elements
        self._floats = [np.empty(elements, dtype=np.float32) for _ in range(5)]
        self._flags = [np.empty(elements, dtype=bool)]

    def shaped(self, rows: int, n: int) -> list[np.ndarray]:
        """Five float32 and one bool (rows, n) views of the scratch arrays."""
        return [array[: rows * n].reshape(rows, n) for array in (*self._floats, *self._flags)]


_WORKSPACES = threading.local()


def _workspace(elements: int) -> _Workspace:
    work: _Workspace | None = getattr(_WORKSPACES, "work", None)
    if work is None or work.elements < elements:
        work = _WORKSPACES.work = _Workspace(elements)
    return work


def _four_point_homographies(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(k, 9) homographies (h33 = 1) through (4, k, 2) subsets: closed form on centred points (unit square maps)."""
    src_centre, dst_centre = src.mean(axis=0), dst.mean(axis=0)
    with np.errstate(all="ignore"):
        a = _square_to_quad(src - src_centre)
        b = _square_to_quad(dst - dst_centre)
        # adj(a): a's inverse up to scale, which a homography ignores.
        adj = [
            a[4] * a[8] - a[5] * a[7], a[2] * a[7] - a[1] * a[8], a[1] * a[5] - a[2] * a[4],
            a[5] * a[6] - a[3] * a[8], a[0] * a[8] - a[2] * a[6], a[2] * a[3] - a[0] * a[5],
            a[3] * a[7] - a[4] * a[6], a[1] * a[6] - a[0] * a[7], a[0] * a[4] - a[1] * a[3],
        ]
        h = [b[3 * r] * adj[c] + b[3 * r + 1] * adj[3 + c] + b[3 * r + 2] * adj[6 + c] for r in range(3) for c in range(3)]
        # Undo the centring: H = T(dst_centre) @ h @ T(-src_centre).
        sx, sy = src_centre[:, 0], src_centre[:, 1]
        for r in range(3):
            h[3 * r + 2] = h[3 * r + 2] - h[3 * r] * sx - h[3 * r + 1] * sy
        dx, dy = dst_centre[:, 0], dst_centre[:, 1]
        for c in range(3):
            h[c] = h[c] + dx * h[6 + c]
            h[3 + c] = h[3 + c] + dy * h[6 + c]
        models = np.stack(h, axis=1)
        return models / models[:, 8:9]


def _square_to_quad(quads: np.ndarray) -> list[np.ndarray]:
    """Row-major entries of the projective maps of the unit square's corners (0,0), (1,0), (1,1), (0,1) onto each
    (4, k, 2) quadrilateral's points in order."""
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = ((quads[i, :, 0], quads[i, :, 1]) for i in range(4))
    dx1, dx2, dx3 = x1 - x2, x3 - x2, x0 - x1 + x2 - x3
    dy1, dy2, dy3 = y1 - y2, y3 - y2, y0 - y1 + y2 - y3
    denominator = dx1 * dy2 - dx2 * dy1
    g = (dx3 * dy2 - dx2 * dy3) / denominator
    h = (dx1 * dy3 - dx3 * dy1) / denominator
    return [x1 - x0 + g * x1, x3 - x0 + h * x3, x0, y1 - y0 + g * y1, y3 - y0 + h * y3, y0, g, h, np.ones_like(g)]


def _exact_count(src: np.ndarray, dst: np.ndarray, subset: np.ndarray, threshold: np.float32) -> tuple[int, np.ndarray | None]:
    """OpenCV's own model for one subset (its RANSAC kernel) and its inliers by computeError's float32 arithmetic."""
    model, _ = cv2.findHomography(src[subset], dst[subset], 0)
    if model is None:  # runKernel found the subset degenerate: no model, the iteration counts nothing
        return 0, None
    h = model.reshape(9).astype(np.float32)
    x, y = src[:, 0], src[:, 1]
    one = np.float32(1.0)
    with np.errstate(all="ignore"):
        w = one / (h[6] * x + h[7] * y + one)
        dx = (h[0] * x + h[1] * y + h[2]) * w - dst[:, 0]
        dy = (h[3] * x + h[4] * y + h[5]) * w - dst[:, 1]
        inliers = (dx * dx + dy * dy) <= threshold
    return int(np.count_nonzero(inliers)), inliers


def _update_num_iters(confidence: float, outlier_ratio: float, max_iters: int) -> int:
    """RANSACUpdateNumIters for 4-point models (cvRound rounds half to even, as Python's round does)."""
    confidence = min(max(confidence, 0.0), 1.0)
    outlier_ratio = min(max(outlier_ratio, 0.0), 1.0)
    numerator = max(1.0 - confidence, _DBL_MIN)
    denominator = 1.0 - (1.0 - outlier_ratio) ** _MODEL_POINTS
    if denominator < _DBL_MIN:
        return 0
    numerator, denominator = math.log(numerator), math.log(denominator)
    if denominator >= 0 or -numerator >= max_iters * (-denominator):
        return max_iters
    return int(round(numerator / denominator))
