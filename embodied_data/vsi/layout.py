"""Load VSI-Bench's per-scene 3D annotations (meta_info JSON) into scene layouts: oriented boxes per object, in metres.

Each meta_info file maps a scene name to `room_size` (m^2), `room_center`, `object_counts` (category -> count) and
`object_bbox` (category -> list of instances, each with `centroid`, `axesLengths`, `normalizedAxes`, `min`, `max`).
`normalizedAxes` is a row-major 3x3 whose ROWS are the box's unit axes (VSI builds its Open3D boxes with
`R = normalizedAxes.reshape(3, 3).T`, i.e. columns = axes) and `axesLengths[i]` is the full length along axis i.
z is up in all three datasets (ARKitScenes, ScanNet, ScanNet++); directions are taken in the x-y plane.  A box listed
twice (identical centroid, lengths and axes: ScanNet printers) is kept once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

DATASETS = ("arkitscenes", "scannet", "scannetpp")


@dataclass(frozen=True, eq=False)
class VSIObject:
    """One annotated instance: an oriented box.  `rotation` columns are the box axes (world = rotation @ local)."""

    category: str
    instance: int  # position among the category's instances in meta_info
    centroid: np.ndarray  # (3,) metres
    axes_lengths: np.ndarray  # (3,) full side lengths along the box axes, metres
    rotation: np.ndarray  # (3, 3) columns = unit box axes in world coordinates

    @property
    def half_extent(self) -> np.ndarray:
        return self.axes_lengths / 2

    @property
    def longest_dimension(self) -> float:
        """Longest side of the box in metres (VSI's object size is this, in centimetres)."""
        return float(self.axes_lengths.max())

    @cached_property
    def corners(self) -> np.ndarray:
        """The 8 box corners, (8, 3)."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
        return self.centroid + (signs * self.half_extent) @ self.rotation.T

    @property
    def yaw(self) -> float:
        """Heading of the box's first horizontal-ish axis about z, radians (for renderers; exact only for z-up boxes)."""
        horizontal = max(range(3), key=lambda i: -abs(self.rotation[2, i]))  # the axis least aligned with z
        axis = self.rotation[:, horizontal]
        return math.atan2(axis[1], axis[0])

    @property
    def footprint_size(self) -> tuple[float, float, float]:
        """(length along `yaw`, width across it, height along the most vertical axis) in metres."""
        vertical = int(np.argmax(np.abs(self.rotation[2])))
        horizontal = [i for i in range(3) if i != vertical]
        first = max(horizontal, key=lambda i: -abs(self.rotation[2, i]))
        second = next(i for i in horizontal if i != first)
        return float(self.axes_lengths[first]), float(self.axes_lengths[second]), float(self.axes_lengths[vertical])


@dataclass(frozen=True, eq=False)
class VSISceneLayout:
    """All annotated objects of one scene, with the room's area and the counts VSI asks about."""

    scene: str
    dataset: str
    room_size: float  # m^2, as annotated (VSI's room-size answer rounds it to 0.1)
    room_center: np.ndarray  # (3,)
    object_counts: dict[str, int]  # VSI's counting answers; may differ from the number of boxes
    objects: tuple[VSIObject, ...] = field(default=())
    duplicates_dropped: int = 0  # boxes listed twice in meta_info (ScanNet printers), kept once

    @cached_property
    def by_category(self) -> dict[str, tuple[VSIObject, ...]]:
        groups: dict[str, list[VSIObject]] = {}
        for obj in self.objects:
            groups.setdefault(obj.category, []).append(obj)
        return {c: tuple(v) for c, v in groups.items()}

    def instances(self, category: str) -> tuple[VSIObject, ...]:
        """The boxes of a category; KeyError naming the scene when it has none."""
        try:
            return self.by_category[category]
        except KeyError:
            raise KeyError(f"scene {self.scene}: no object of category {category!r}") from None

    def unique(self, category: str) -> VSIObject:
        """The only instance of a category; ValueError when it has several (the question would be ambiguous)."""
        found = self.instances(category)
        if len(found) != 1:
            raise ValueError(f"scene {self.scene}: category {category!r} has {len(found)} instances, not one")
        return found[0]

    @property
    def unique_categories(self) -> list[str]:
        """Categories with exactly one annotated instance (VSI's direction/distance/size questions use only these)."""
        return [c for c, n in self.object_counts.items() if n == 1 and len(self.by_category.get(c, ())) == 1]


def _vector(value: object, size: int, what: str) -> np.ndarray:
    array = np.asarray(value, dtype=float).reshape(-1)
    if array.shape != (size,) or not np.all(np.isfinite(array)):
        raise ValueError(f"{what} should be {size} finite numbers, got {value!r}")
    return array


def _parse_object(category: str, instance: int, raw: dict) -> VSIObject:
    where = f"{category}[{instance}]"
    for key in ("centroid", "axesLengths", "normalizedAxes"):
        if key not in raw:
            raise ValueError(f"{where}: missing {key}")
    lengths = _vector(raw["axesLengths"], 3, f"{where}.axesLengths")
    if np.any(lengths < 0):
        raise ValueError(f"{where}.axesLengths has a negative length: {lengths.tolist()}")
    rotation = _vector(raw["normalizedAxes"], 9, f"{where}.normalizedAxes").reshape(3, 3).T
    return VSIObject(category, instance, _vector(raw["centroid"], 3, f"{where}.centroid"), lengths, rotation)


def _same_box(a: VSIObject, b: VSIObject) -> bool:
    return bool(
        np.array_equal(a.centroid, b.centroid)
        and np.array_equal(a.axes_lengths, b.axes_lengths)
        and np.array_equal(a.rotation, b.rotation)
    )


def parse_scene(scene: str, raw: dict, dataset: str | None = None) -> VSISceneLayout:
    """One meta_info entry as a layout; ValueError naming the scene and the field that is wrong."""
    try:
        room_size = float(raw["room_size"])
        if not math.isfinite(room_size) or room_size <= 0:
            raise ValueError(f"room_size {raw['room_size']!r} is not a positive number")
        counts = {str(c): int(n) for c, n in dict(raw.get("object_counts") or {}).items()}
        objects: list[VSIObject] = []
        duplicates = 0
        for category, instances in dict(raw.get("object_bbox") or {}).items():
            kept: list[VSIObject] = []
            for instance in instances:
                obj = _parse_object(str(category), len(kept), instance)
                if any(_same_box(obj, other) for other in kept):
                    duplicates += 1  # an exact repeat of a box already listed: one object, not two
                    continue
                kept.append(obj)
            objects.extend(kept)
        center = _vector(raw.get("room_center", [0.0, 0.0, 0.0]), 3, "room_center")
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"meta_info scene {scene}: {error}") from None
    return VSISceneLayout(
        scene, str(raw.get("dataset") or dataset or ""), room_size, center, counts, tuple(objects), duplicates
    )


def load_meta_info(path: str | Path, dataset: str | None = None) -> dict[str, VSISceneLayout]:
    """Layouts of every scene in one meta_info JSON file; ValueError naming the file and scene when one is malformed."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read meta_info JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: meta_info should map scene names to annotations, got {type(raw).__name__}")
    try:
        return {str(scene): parse_scene(str(scene), entry, dataset) for scene, entry in raw.items()}
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def load_meta_dir(meta_dir: str | Path, datasets: Iterable[str] = DATASETS) -> dict[str, VSISceneLayout]:
    """Layouts of all scenes in `meta_dir/<dataset>_meta_info_val.json` for the given datasets (those present)."""
    meta_dir = Path(meta_dir)
    layouts: dict[str, VSISceneLayout] = {}
    found = False
    for dataset in datasets:
        path = meta_dir / f"{dataset}_meta_info_val.json"
        if path.is_file():
            found = True
            layouts.update(load_meta_info(path, dataset))
    if not found:
        raise FileNotFoundError(f"no <dataset>_meta_info_val.json for {list(datasets)} in {meta_dir}")
    return layouts
