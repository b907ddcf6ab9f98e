"""Geometry behind VSI-Bench's answers: horizontal bearings between box centroids, and "closest point" distances
between oriented boxes (exactly, or between VSI's 5 cm shell samples of the boxes as its generator measures them).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from embodied_data.vsi.layout import VSIObject

SAMPLE_SPACING = 0.05  # metres between VSI's sample points inside a box


def ccw_bearings(standing: np.ndarray, facing: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Angles in degrees, in [0, 360), from the standing->facing direction to standing->point, measured
    counter-clockwise seen from above (z up) in the x-y plane: 0 ahead, 90 left, 180 behind, 270 right."""
    forward = np.asarray(facing, float)[:2] - np.asarray(standing, float)[:2]
    to_points = np.atleast_2d(np.asarray(points, float))[:, :2] - np.asarray(standing, float)[:2]
    cross = forward[0] * to_points[:, 1] - forward[1] * to_points[:, 0]
    dot = to_points @ forward
    return np.degrees(np.arctan2(cross, dot)) % 360.0


def hard_direction(angle: float) -> str:
    """VSI's hard direction: the quadrant of the Cartesian plane (facing = +y), by 90-degree sectors counter-clockwise
    from ahead: [0, 90) front-left, [90, 180) back-left, [180, 270) back-right, [270, 360) front-right."""
    return ("front-left", "back-left", "back-right", "front-right")[int(angle // 90) % 4]


def medium_direction(angle: float) -> str:
    """VSI's medium direction: left for [0, 135), back for [135, 225) (a turn of at least 135 degrees), right after."""
    if angle < 135:
        return "left"
    return "back" if angle < 225 else "right"


def easy_direction(angle: float) -> str:
    """VSI's easy direction: left or right of the standing->facing line (VSI never asks when it is behind, 135-225)."""
    return "left" if angle < 180 else "right"


def distance_to_boundary(angle: float, boundaries: tuple[float, ...]) -> float:
    """Smallest angular distance in degrees from `angle` to any of the (cyclic) boundaries."""
    return min(min(abs(angle - b) % 360, 360 - abs(angle - b) % 360) for b in boundaries)


DIRECTION_BOUNDARIES = {"hard": (0.0, 90.0, 180.0, 270.0), "medium": (0.0, 135.0, 225.0), "easy": (0.0, 180.0)}
DIRECTION_LABELS = {"hard": hard_direction, "medium": medium_direction, "easy": easy_direction}


# --- distances ---------------------------------------------------------------------------------------------------


def point_box_distance(points: np.ndarray, box: VSIObject) -> np.ndarray:
    """Euclidean distance from each point (N, 3) to the solid oriented box (0 inside)."""
    local = (np.atleast_2d(points) - box.centroid) @ box.rotation
    outside = np.maximum(np.abs(local) - box.half_extent, 0.0)
    return np.linalg.norm(outside, axis=1)


# The 12 box edges as corner index pairs: corners (see VSIObject.corners) that differ in one sign.
_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1])


def _segment_distances(p0: np.ndarray, p1: np.ndarray, q0: np.ndarray, q1: np.ndarray) -> np.ndarray:
    """Closest distance between each pair of segments p0-p1 and q0-q1 (arrays (N, 3)): the closest parameters of
    the two lines, clamped to the segments (Ericson, Real-Time Collision Detection, 5.1.9)."""
    d1, d2, r = p1 - p0, q1 - q0, p0 - q0
    a, e = np.maximum((d1 * d1).sum(1), 1e-300), np.maximum((d2 * d2).sum(1), 1e-300)  # no 0/0 for a point-edge
    b, c, f = (d1 * d2).sum(1), (d1 * r).sum(1), (d2 * r).sum(1)
    denom = a * e - b * b
    parallel = denom <= 1e-12 * a * e  # any s works for parallel lines: take the start of p
    s = np.where(parallel, 0.0, np.clip((b * f - c * e) / np.where(parallel, 1.0, denom), 0.0, 1.0))
    t = (b * s + f) / e
    s = np.where(t < 0, np.clip(-c / a, 0.0, 1.0), np.where(t > 1, np.clip((b - c) / a, 0.0, 1.0), s))
    t = np.clip(t, 0.0, 1.0)
    return np.linalg.norm((p0 + d1 * s[:, None]) - (q0 + d2 * t[:, None]), axis=1)


def boxes_overlap(a: VSIObject, b: VSIObject) -> bool:
    """Separating-axis test of two oriented boxes (15 candidate axes)."""
    axes = [a.rotation[:, i] for i in range(3)] + [b.rotation[:, i] for i in range(3)]
    axes += [np.cross(a.rotation[:, i], b.rotation[:, j]) for i in range(3) for j in range(3)]
    offset = b.centroid - a.centroid
    for axis in axes:
        norm = np.linalg.norm(axis)
        if norm < 1e-9:  # parallel edges give no new axis
            continue
        axis = axis / norm
        reach_a = np.sum(a.half_extent * np.abs(axis @ a.rotation))
        reach_b = np.sum(b.half_extent * np.abs(axis @ b.rotation))
        if abs(offset @ axis) > reach_a + reach_b:
            return False
    return True


def box_distance(a: VSIObject, b: VSIObject) -> float:
    """Exact distance between the closest points of two solid oriented boxes (0 when they overlap).

    For disjoint convex polytopes the closest pair lies on a vertex of one and the other solid, or on two edges, so
    the minimum over corner-to-box and edge-to-edge distances is exact.
    """
    if boxes_overlap(a, b):
        return 0.0
    corner_gap = min(point_box_distance(a.corners, b).min(), point_box_distance(b.corners, a).min())
    edge_a, edge_b = np.repeat(_EDGES, len(_EDGES), axis=0), np.tile(_EDGES, (len(_EDGES), 1))  # all 144 pairs
    gaps = _segment_distances(
        a.corners[edge_a[:, 0]], a.corners[edge_a[:, 1]], b.corners[edge_b[:, 0]], b.corners[edge_b[:, 1]]
    )
    return float(min(corner_gap, gaps.min()))


def centroid_distance(a: VSIObject, b: VSIObject) -> float:
    """Distance between the box centres (not VSI's measure; kept to show it is not)."""
    return float(np.linalg.norm(a.centroid - b.centroid))


def _two_product(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a * b as an unevaluated sum p + e of two doubles (Veltkamp/Dekker), exactly."""
    product = a * b
    split_a, split_b = a * 134217729.0, b * 134217729.0  # 2^27 + 1
    high_a, high_b = split_a - (split_a - a), split_b - (split_b - b)
    low_a, low_b = a - high_a, b - high_b
    error = ((high_a * high_b - product) + high_a * low_b + low_a * high_b) + low_a * low_b
    return product, error


def fused_multiply_add(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """a * b + c rounded once, as a hardware FMA does (numpy has none): the exact product and sum are carried as
    pairs of doubles (error-free transforms) and rounded at the end."""
    product, error = _two_product(a, b)
    total = product + c
    back = total - product
    rounding = (product - (total - back)) + (c - back)
    return total + (rounding + error)


def _rotate_like_blas(local: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """local @ rotation.T rounded as OpenBLAS's FMA dgemm kernels do: world_j = fma(l2, R_j2, fma(l1, R_j1, l0 R_j0))."""
    world = np.empty_like(local)
    for j in range(3):
        acc = local[:, 0] * rotation[j, 0]
        acc = fused_multiply_add(local[:, 1], np.full_like(acc, rotation[j, 1]), acc)
        world[:, j] = fused_multiply_add(local[:, 2], np.full_like(acc, rotation[j, 2]), acc)
    return world


def _project_like_eigen(offsets: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """offsets . each box axis, rounded as Open3D's Eigen (SSE2, no FMA) does: (d0 a0 + d1 a1) + d2 a2."""
    d0, d1, d2 = offsets[:, 0], offsets[:, 1], offsets[:, 2]
    return np.stack([d0 * rotation[0, i] + d1 * rotation[1, i] + d2 * rotation[2, i] for i in range(3)], axis=1)


def shell_samples(box: VSIObject, spacing: float = SAMPLE_SPACING, crop: bool = True) -> np.ndarray:
    """The points VSI's generator measures distances between, bit for bit: a grid through the box with
    ceil(length / spacing) points per axis (at least one) from -length/2 to +length/2 (just -length/2 for one point),
    without its inner core (points within a quarter length of the centre on every axis), rotated and moved into
    the world, then cropped to the box.

    The crop is Open3D's `PointCloud.crop(OrientedBoundingBox)` (since 0.10: keep |(p - c) . axis_i| <= extent_i / 2);
    it drops about half of the points that lie exactly on a face, depending on the last bit of the rounding, and that
    changes distances by up to one grid step.  So the rotation is rounded as numpy's OpenBLAS matmul rounds it (an FMA
    chain) and the projection as Open3D rounds it (plain products and sums); with both, every published absolute
    distance is reproduced.  An empty crop is resampled at half the spacing, as VSI does.
    """
    for _ in range(8):
        counts = [max(1, math.ceil(length / spacing)) for length in box.axes_lengths]
        axes = [np.linspace(-length / 2, length / 2, n) for length, n in zip(box.axes_lengths, counts)]
        grid = np.stack(np.meshgrid(*axes), axis=-1).reshape(-1, 3)
        grid = grid[np.any(np.abs(grid) > box.axes_lengths / 4, axis=1)]
        world = _rotate_like_blas(grid, box.rotation) + box.centroid
        if crop:
            local = _project_like_eigen(world - box.centroid, box.rotation)
            world = world[np.all(np.abs(local) <= box.axes_lengths / 2, axis=1)]
        if len(world):
            return world
        spacing /= 2
    return box.centroid[None, :].copy()  # a degenerate (zero-size) box is its centre


def _min_pair_distance(p: np.ndarray, q: np.ndarray, box_p: VSIObject, box_q: VSIObject) -> float:
    """min |p_i - q_j| over two point sets lying in (or on) two boxes, pruned with point-to-box lower bounds."""
    lower_p, lower_q = point_box_distance(p, box_q), point_box_distance(q, box_p)
    i, j = int(np.argmin(lower_p)), int(np.argmin(lower_q))
    upper = min(np.linalg.norm(q - p[i], axis=1).min(), np.linalg.norm(p - q[j], axis=1).min())
    # only points at most `upper` from the other box can be part of a closer pair
    p, q = p[lower_p <= upper + 1e-9], q[lower_q <= upper + 1e-9]
    best = float(upper)
    rows = max(1, 1_000_000 // max(len(q), 1))  # bounded memory for the pairwise differences
    for start in range(0, len(p), rows):
        gaps = p[start : start + rows, None, :] - q[None, :, :]
        best = min(best, float(np.sqrt((gaps**2).sum(axis=2)).min()))  # summed as scipy's cdist sums
    return best


def sampled_distance(a: VSIObject, b: VSIObject, spacing: float = SAMPLE_SPACING, crop: bool = True) -> float:
    """Closest distance between the shell samples of two boxes: VSI's "closest point of each object" measure."""
    return _min_pair_distance(shell_samples(a, spacing, crop), shell_samples(b, spacing, crop), a, b)


class SampledDistance:
    """`sampled_distance` with each box's samples computed once (a scene's boxes are measured against many others)."""

    def __init__(self, spacing: float = SAMPLE_SPACING, crop: bool = True) -> None:
        self.spacing, self.crop = spacing, crop
        self._samples: dict[int, tuple[VSIObject, np.ndarray]] = {}  # id -> (box kept alive, its samples)

    def samples(self, box: VSIObject) -> np.ndarray:
        if id(box) not in self._samples:
            self._samples[id(box)] = (box, shell_samples(box, self.spacing, self.crop))
        return self._samples[id(box)][1]

    def __call__(self, a: VSIObject, b: VSIObject) -> float:
        return _min_pair_distance(self.samples(a), self.samples(b), a, b)


# Closest-point measures by name, each a factory of a (box, box) -> metres function.
DISTANCE_METHODS: dict[str, Callable[[], Callable[[VSIObject, VSIObject], float]]] = {
    "sampled": SampledDistance,  # VSI's own measure
    "sampled_uncropped": lambda: SampledDistance(crop=False),  # the same samples with every face point kept
    "box": lambda: box_distance,
    "centroid": lambda: centroid_distance,
}


def category_distance(first: tuple[VSIObject, ...], second: tuple[VSIObject, ...], method: str = "sampled") -> float:
    """Distance between two categories: the smallest over all pairs of their instances ("measure to the closest")."""
    measure = DISTANCE_METHODS[method]()
    return min(measure(a, b) for a in first for b in second)
