"""Camera poses and paths built from the paper's ten actions, each action one known pose change per frame.

Yaw is the heading in radians, 0 facing +y (north), positive turning left (counter-clockwise seen from above);
pitch is the tilt, positive looking up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from embodied_data.actions import ACTIONS
from embodied_data.synthetic.scene import Scene


# One step of each action: metres for moves, degrees for rotations and tilts.
STEP_METRES = 0.25
STEP_VERTICAL_METRES = 0.15
STEP_YAW_DEGREES = 20.0
STEP_PITCH_DEGREES = 8.0



@dataclass(frozen=True)
class StepSizes:
    """How far one step of each kind of action goes: the indoor walker's below, the city drone's in `city.py`."""

    metres: float
    vertical_metres: float
    yaw_degrees: float
    pitch_degrees: float


INDOOR_STEPS = StepSizes(STEP_METRES, STEP_VERTICAL_METRES, STEP_YAW_DEGREES, STEP_PITCH_DEGREES)

HEIGHT_LIMITS = (0.9, 2.0)
PITCH_LIMIT_DEGREES = 16.0
WALL_MARGIN = 0.45  # metres between the camera and any wall
OBJECT_MARGIN = 0.3  # metres between the camera and any object's footprint

# How often a random path picks each action: mostly walking and turning, as in indoor walkthroughs.
_ACTION_WEIGHTS = {
    "move forward": 3.0,
    "move backward": 0.5,
    "move left": 0.8,
    "move right": 0.8,
    "move upward": 0.4,
    "move downward": 0.4,
    "rotate left": 3.0,
    "rotate right": 3.0,
    "tilt upward": 0.4,
    "tilt downward": 0.4,
}
_OPPOSITE = {
    "move forward": "move backward",
    "move left": "move right",
    "move upward": "move downward",
    "rotate left": "rotate right",
    "tilt upward": "tilt downward",
}
_OPPOSITE.update({v: k for k, v in list(_OPPOSITE.items())})


@dataclass(frozen=True)
class Pose:
    x: float
    y: float
    z: float
    yaw: float  # radians
    pitch: float  # radians

    @property
    def position(self) -> np.ndarray:
        return np.array([self.x, self.y, self.z])

    def heading(self) -> np.ndarray:
        """Unit vector of the horizontal viewing direction."""
        return np.array([-math.sin(self.yaw), math.cos(self.yaw)])

    def rotation(self) -> np.ndarray:
        """World-to-camera rotation; camera axes x right, y down, z forward (OpenCV's convention)."""
        sy, cy = math.sin(self.yaw), math.cos(self.yaw)
        sp, cp = math.sin(self.pitch), math.cos(self.pitch)
        forward = np.array([-sy * cp, cy * cp, sp])
        right = np.array([cy, sy, 0.0])
        down = np.cross(forward, right)
        return np.stack([right, down, forward])

    def apply(self, action: str, steps: StepSizes = INDOOR_STEPS) -> "Pose":
        """The pose after one step of `action` (indoor step sizes unless told)."""
        hx, hy = self.heading()
        if action == "move forward":
            return replace(self, x=self.x + steps.metres * hx, y=self.y + steps.metres * hy)
        if action == "move backward":
            return replace(self, x=self.x - steps.metres * hx, y=self.y - steps.metres * hy)
        # Right of the heading (hx, hy) is (hy, -hx).
        if action == "move right":
            return replace(self, x=self.x + steps.metres * hy, y=self.y - steps.metres * hx)
        if action == "move left":
            return replace(self, x=self.x - steps.metres * hy, y=self.y + steps.metres * hx)
        if action == "move upward":
            return replace(self, z=self.z + steps.vertical_metres)
        if action == "move downward":
            return replace(self, z=self.z - steps.vertical_metres)
        if action == "rotate left":
            return replace(self, yaw=self.yaw + math.radians(steps.yaw_degrees))
        if action == "rotate right":
            return replace(self, yaw=self.yaw - math.radians(steps.yaw_degrees))
        if action == "tilt upward":
            return replace(self, pitch=self.pitch + math.radians(steps.pitch_degrees))
        if action == "tilt downward":
            return replace(self, pitch=self.pitch - math.radians(steps.pitch_degrees))
        raise ValueError(f"unknown action {action!r}; expected one of {ACTIONS}")

    def as_dict(self) -> dict[str, float]:
        return {"x": self.x, "y": self.y, "z": self.z, "yaw_deg": math.degrees(self.yaw), "pitch_deg": math.degrees(self.pitch)}


@dataclass(frozen=True)
class Segment:
    """`steps` repetitions of one action, starting at frame `start` (the frame the first step leads to)."""

    action: str
    steps: int
    start: int


def pose_is_free(scene: Scene, pose: Pose) -> bool:
    """Inside the room, away from the walls and from every object, within the height and tilt limits."""
    room = scene.room
    if not (WALL_MARGIN <= pose.x <= room.width - WALL_MARGIN and WALL_MARGIN <= pose.y <= room.depth - WALL_MARGIN):
        return False
    if not HEIGHT_LIMITS[0] - 1e-9 <= pose.z <= HEIGHT_LIMITS[1] + 1e-9:
        return False
    if abs(math.degrees(pose.pitch)) > PITCH_LIMIT_DEGREES + 1e-9:
        return False
    for obj in scene.objects:
        b = obj.bounds
        if b.lo[0] - OBJECT_MARGIN <= pose.x <= b.hi[0] + OBJECT_MARGIN and b.lo[1] - OBJECT_MARGIN <= pose.y <= b.hi[1] + OBJECT_MARGIN:
            return False
    return True


def start_pose(scene: Scene, rng: np.random.Generator) -> Pose:
    """A free pose near the room's centre, at eye height, facing a random direction."""
    room = scene.room
    for _ in range(200):
        pose = Pose(
            x=room.width / 2 + float(rng.uniform(-0.6, 0.6)),
            y=room.depth / 2 + float(rng.uniform(-0.6, 0.6)),
            z=float(rng.uniform(1.3, 1.6)),
            yaw=float(rng.uniform(-math.pi, math.pi)),
            pitch=-math.radians(STEP_PITCH_DEGREES),  # slightly down, as a walker looks at the furniture
        )
        if pose_is_free(scene, pose):
            return pose
    raise ValueError(f"scene {scene.scene_id}: no free start pose near the room's centre")


def random_path(
    scene: Scene,
    num_steps: int,
    rng: np.random.Generator,
    steps_per_segment_unit: int = 1,
    start: Pose | None = None,
    steps: StepSizes = INDOOR_STEPS,
    is_free: Callable[[Scene, Pose], bool] = pose_is_free,
    action_weights: dict[str, float] | None = None,
) -> tuple[list[Pose], list[str | None], list[Segment]]:
    """A random walk of `num_steps` steps made of segments of one repeated action each.

    Segment lengths are multiples of `steps_per_segment_unit` (the frames per second, rounded) so that sampling
    the video at 1 fps sees one action between consecutive samples.  Returns the `num_steps + 1` poses, the action
    leading to each pose (None for the first) and the segments.  `steps`, `is_free` and `action_weights` default
    to the indoor walker's; the city drone passes its own (a start pose is then required).
    """
    pose = start if start is not None else start_pose(scene, rng)
    poses: list[Pose] = [pose]
    actions: list[str | None] = [None]
    segments: list[Segment] = []
    weight_of = _ACTION_WEIGHTS if action_weights is None else action_weights
    names = list(weight_of)
    weights = np.array([weight_of[a] for a in names])
    while len(poses) - 1 < num_steps:
        remaining = num_steps - (len(poses) - 1)
        length = min(remaining, steps_per_segment_unit * int(rng.integers(1, 3)))
        previous = segments[-1].action if segments else None
        chosen: tuple[str, list[Pose]] | None = None
        for _ in range(30):
            probs = weights.copy()
            for i, name in enumerate(names):  # no immediate undoing or repeating of the previous segment
                if previous is not None and name in (previous, _OPPOSITE[previous]):
                    probs[i] = 0.0
            action = names[int(rng.choice(len(names), p=probs / probs.sum()))]
            trial, current = [], pose
            for _ in range(length):
                current = current.apply(action, steps)
                trial.append(current)
            if all(is_free(scene, p) for p in trial):
                chosen = (action, trial)
                break
        if chosen is None:
            # Turning in place is always possible: it changes no position.
            action = "rotate left" if previous != "rotate left" else "rotate right"
            trial, current = [], pose
            for _ in range(length):
                current = current.apply(action, steps)
                trial.append(current)
            chosen = (action, trial)
        action, trial = chosen
        segments.append(Segment(action=action, steps=length, start=len(poses)))
        poses.extend(trial)
        actions.extend([action] * length)
        pose = poses[-1]
    return poses, actions, segments
