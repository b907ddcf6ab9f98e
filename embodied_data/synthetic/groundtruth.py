"""Per-frame ground truth from the simulator: camera pose, the action since the previous frame, and the visible
objects with their egocentric bearing, elevation and distance (visibility measured on the rendered id map)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from embodied_data.synthetic.camera import Pose
from embodied_data.synthetic.scene import Scene, point_box_distance

# An object counts as seen when it covers at least this share of the frame (about 150 pixels at 224x224).
MIN_PIXEL_FRACTION = 0.003


@dataclass(frozen=True)
class VisibleObject:
    object_id: int
    category: str
    colour: str
    bearing_deg: float  # horizontal angle from the view direction to the object's centre; positive = to the right
    elevation_deg: float  # angle of the object's centre above (+) or below (-) the camera's horizontal plane
    distance_m: float  # from the camera to the closest point of the object
    pixel_fraction: float  # share of the frame the object covers
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 in the image (exclusive ends)

    @property
    def name(self) -> str:
        return f"{self.colour} {self.category}"

    def direction_words(self) -> str:
        """Where the object is relative to the agent, in the words the paper's VLM prompt uses."""
        b = self.bearing_deg
        if abs(b) <= 10:
            words = "straight ahead"
        elif abs(b) <= 30:
            words = "ahead-right" if b > 0 else "ahead-left"
        else:
            words = "to the right" if b > 0 else "to the left"
        if self.elevation_deg < -35:
            words += " and below"
        return words


@dataclass(frozen=True)
class FrameTruth:
    index: int
    time_s: float
    pose: Pose
    action: str | None  # the action since the previous frame; None for frame 0
    visible: tuple[VisibleObject, ...]  # sorted from left to right

    def visible_ids(self) -> set[int]:
        return {v.object_id for v in self.visible}

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "time_s": self.time_s,
            "pose": self.pose.as_dict(),
            "action": self.action,
            "visible": [asdict(v) for v in self.visible],
        }


def egocentric_bearing(pose: Pose, point: np.ndarray) -> float:
    """Signed horizontal angle (degrees) from the camera's heading to `point`; positive to the right."""
    hx, hy = pose.heading()
    dx, dy = point[0] - pose.x, point[1] - pose.y
    # The cross product heading x target is positive when the target is counter-clockwise, i.e. to the left.
    cross = hx * dy - hy * dx
    dot = hx * dx + hy * dy
    return -math.degrees(math.atan2(cross, dot))


def frame_truth(
    scene: Scene, pose: Pose, id_map: np.ndarray, index: int, fps: float, action: str | None,
    min_pixel_fraction: float = MIN_PIXEL_FRACTION,
) -> FrameTruth:
    """The ground truth of one rendered frame, given the renderer's id map."""
    total = id_map.size
    counts = np.bincount(id_map.ravel().clip(min=0).astype(np.int64), minlength=len(scene.objects) + 1)
    visible = []
    for obj in scene.objects:
        fraction = counts[obj.object_id] / total
        if fraction < min_pixel_fraction:
            continue
        ys, xs = np.nonzero(id_map == obj.object_id)
        centre = obj.centre
        horizontal = math.hypot(centre[0] - pose.x, centre[1] - pose.y)
        visible.append(
            VisibleObject(
                object_id=obj.object_id,
                category=obj.category,
                colour=obj.colour,
                bearing_deg=round(egocentric_bearing(pose, centre), 2),
                elevation_deg=round(math.degrees(math.atan2(centre[2] - pose.z, horizontal)), 2),
                distance_m=round(point_box_distance(pose.position, obj.bounds), 3),
                pixel_fraction=round(float(fraction), 5),
                bbox=(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
            )
        )
    visible.sort(key=lambda v: v.bearing_deg)
    return FrameTruth(index=index, time_s=round(index / fps, 4), pose=pose, action=action, visible=tuple(visible))


def first_appearance(frames: list[FrameTruth]) -> dict[int, int]:
    """Object id -> index of the first frame in which it is visible."""
    first: dict[int, int] = {}
    for frame in frames:
        for obj in frame.visible:
            first.setdefault(obj.object_id, frame.index)
    return first


def seen_object_ids(frames: list[FrameTruth]) -> set[int]:
    return set(first_appearance(frames))


def frames_from_dicts(items: list[dict]) -> list[FrameTruth]:
    """Inverse of `FrameTruth.to_dict` (for ground truth stored as JSON beside a video)."""
    frames = []
    for item in items:
        p = item["pose"]
        pose = Pose(p["x"], p["y"], p["z"], math.radians(p["yaw_deg"]), math.radians(p["pitch_deg"]))
        visible = tuple(VisibleObject(**{**v, "bbox": tuple(v["bbox"])}) for v in item["visible"])
        frames.append(FrameTruth(item["index"], item["time_s"], pose, item["action"], visible))
    return frames
