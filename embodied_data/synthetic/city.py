"""A procedural city for drone flights, seeded: a street grid on a textured ground, boxy buildings with window
facades, a few named landmarks, and drone paths made of the paper's actions that never enter a building.

World frame as indoors (x east, y north, z up, metres).  Blocks of BLOCK_METRES squared repeat every PITCH_METRES
with streets of STREET_METRES between them (and around the city).  The result is the indoor `Scene` (kind "city",
its `room` the ground extent and sky height, no walls) plus the faces the renderer draws (`Renderer(faces=...)`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from embodied_data.synthetic.camera import Pose, Segment, StepSizes, random_path
from embodied_data.synthetic.city_textures import (
    FACADE_TEXELS_PER_METRE,
    billboard_texture,
    facade_texture,
    ground_texture,
    roof_texture,
    sky_texture,
    skyline_texture,
)
from embodied_data.synthetic.groundtruth import egocentric_bearing
from embodied_data.synthetic.render import Face, _shaded_set, box_faces
from embodied_data.synthetic.scene import (
    Box,
    Room,
    Scene,
    SceneObject,
    point_box_distance,
)

BLOCK_METRES = 36.0
STREET_METRES = 14.0
PITCH_METRES = BLOCK_METRES + STREET_METRES
SKY_METRES = 400.0
GROUND_MARGIN_METRES = 4 * PITCH_METRES  # the street grid goes on this far beyond the built blocks

# The drone: one step of each action, the altitude band, the tilt range and the clearance kept from every building.
DRONE_STEPS = StepSizes(metres=2.5, vertical_metres=2.0, yaw_degrees=15.0, pitch_degrees=10.0)
ALTITUDE_LIMITS = (10.0, 60.0)
DRONE_PITCH_LIMITS_DEGREES = (-50.0, 10.0)
CLEARANCE_METRES = 3.0
BOUNDARY_MARGIN_METRES = 5.0
DRONE_ACTION_WEIGHTS = {
    "move forward": 3.0,
    "move backward": 0.4,
    "move left": 0.7,
    "move right": 0.7,
    "move upward": 0.8,
    "move downward": 0.8,
    "rotate left": 1.5,
    "rotate right": 1.5,
    "tilt upward": 0.5,
    "tilt downward": 0.5,
}

# Facade colours of ordinary buildings (BGR) by the word captions use.
BUILDING_COLOURS: dict[str, tuple[int, int, int]] = {
    "beige": (150, 190, 215),
    "gray": (140, 140, 140),
    "brown": (50, 80, 130),
    "white": (225, 225, 225),
    "tan": (110, 160, 200),
    "blue": (170, 120, 70),
}


@dataclass(frozen=True)
class Landmark:
    """A named landmark: its colour and category words (the name is "<colour> <category>") and how it looks."""

    colour: str
    category: str
    description: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.category}"


LANDMARKS: dict[str, Landmark] = {
    lm.name: lm
    for lm in [
        Landmark("red", "tower", "a slender red tower, 60 to 75 m tall, with a narrow spire on top"),
        Landmark("glass", "skyscraper", "a very tall skyscraper, 80 to 100 m, clad in blue glass panels"),
        Landmark("white", "water tower", "a white box-shaped water tank raised on four thin legs, about 26 m tall"),
        Landmark("yellow", "billboard", "a large yellow advertising board on two posts, about 17 m tall"),
        Landmark("steel", "bridge", "a gray steel footbridge spanning a street at about 22 m above it"),
        Landmark("orange", "crane", "an orange construction crane: a 50 m lattice mast with a long horizontal jib on top"),
    ]
}


@dataclass
class CityScene:
    """A built city: the scene the ground truth and questions read, the faces the renderer draws, and a description
    of each landmark by object id."""

    scene: Scene
    faces: list[Face] = field(repr=False)
    descriptions: dict[int, str]


def _box(x0: float, y0: float, z0: float, x1: float, y1: float, z1: float) -> Box:
    return Box((x0, y0, z0), (x1, y1, z1))


def _object_faces(obj: SceneObject, roof: np.ndarray, texels_per_metre: float) -> list[Face]:
    """The faces of every part: the object's texture on the sides, the roof texture on top."""
    sides, tops = _shaded_set(obj.texture), _shaded_set(roof)
    faces = []
    for part in obj.parts:
        for face in box_faces(part, sides, obj.object_id):
            if face.normal[2] > 0.5:
                face = replace(face, texture=tops[1.0])
            faces.append(replace(face, texels_per_metre=texels_per_metre))
    return faces


def _landmark_parts(name: str, x0: float, y0: float, size: float, rng: np.random.Generator) -> list[Box]:
    """The boxes of a landmark standing in the lot [x0, x0+size]^2 (the bridge is placed separately)."""
    cx, cy = x0 + size / 2, y0 + size / 2
    if name == "red tower":
        h = float(rng.uniform(60, 75))
        return [_box(cx - 4, cy - 4, 0, cx + 4, cy + 4, h), _box(cx - 1, cy - 1, h, cx + 1, cy + 1, h + 12)]
    if name == "glass skyscraper":
        h = float(rng.uniform(80, 100))
        return [_box(cx - 7, cy - 7, 0, cx + 7, cy + 7, h)]
    if name == "white water tower":
        legs = [_box(cx + sx * 3 - 0.5, cy + sy * 3 - 0.5, 0, cx + sx * 3 + 0.5, cy + sy * 3 + 0.5, 18) for sx in (-1, 1) for sy in (-1, 1)]
        return legs + [_box(cx - 4, cy - 4, 18, cx + 4, cy + 4, 26)]
    if name == "yellow billboard":
        posts = [_box(cx + sx * 4 - 0.4, cy - 0.4, 0, cx + sx * 4 + 0.4, cy + 0.4, 12) for sx in (-1, 1)]
        return posts + [_box(cx - 7, cy - 0.3, 12, cx + 7, cy + 0.3, 17)]
    if name == "orange crane":
        jib_x = 1.0 if rng.integers(2) else -1.0  # which way the jib points
        jib = (cx, cx + jib_x * 24) if jib_x > 0 else (cx - 24, cx)
        return [
            _box(cx - 1, cy - 1, 0, cx + 1, cy + 1, 50),
            _box(jib[0], cy - 0.8, 48, jib[1], cy + 0.8, 50),
            _box(cx - jib_x * 8 - 2, cy - 1.5, 46, cx - jib_x * 8 + 2, cy + 1.5, 50),  # counterweight
        ]
    raise ValueError(f"unknown landmark {name!r}")


def generate_city(seed: int, scene_id: str | None = None, blocks: tuple[int, int] | None = None) -> CityScene:
    """A random city of `blocks` (columns, rows; default 3 or 4 each) with 4 to 6 of the 6 landmarks."""
    rng = np.random.default_rng(seed)
    nx, ny = blocks if blocks is not None else (int(rng.integers(3, 5)), int(rng.integers(3, 5)))
    width, depth = nx * PITCH_METRES + STREET_METRES, ny * PITCH_METRES + STREET_METRES
    ground = ground_texture(rng, PITCH_METRES, STREET_METRES)
    sky = sky_texture(rng)
    room = Room(width=width, depth=depth, height=SKY_METRES, floor_texture=ground, wall_textures=[], ceiling_texture=sky)
    roof = roof_texture(rng)
    lot = BLOCK_METRES / 2
    lots = [(STREET_METRES + i * PITCH_METRES + a * lot, STREET_METRES + j * PITCH_METRES + b * lot)
            for i in range(nx) for j in range(ny) for a in range(2) for b in range(2)]
    count = int(rng.integers(4, len(LANDMARKS) + 1))
    chosen = [list(LANDMARKS)[k] for k in sorted(rng.choice(len(LANDMARKS), size=count, replace=False))]
    standing = [n for n in chosen if n != "steel bridge"]
    landmark_lots = {int(k): name for k, name in zip(rng.choice(len(lots), size=len(standing), replace=False), standing)}
    objects: list[SceneObject] = []
    faces: list[Face] = []
    descriptions: dict[int, str] = {}

    def add(category: str, colour: str, parts: list[Box], texture: np.ndarray, description: str | None = None) -> None:
        obj = SceneObject(object_id=len(objects) + 1, category=category, colour=colour, parts=parts, texture=texture)
        objects.append(obj)
        faces.extend(_object_faces(obj, roof, FACADE_TEXELS_PER_METRE))
        if description is not None:
            descriptions[obj.object_id] = description

    colour_names = list(BUILDING_COLOURS)
    for k, (x0, y0) in enumerate(lots):
        if k in landmark_lots:
            name = landmark_lots[k]
            landmark = LANDMARKS[name]
            texture = {
                "red tower": lambda: facade_texture(rng, (40, 40, 190), "slits"),
                "glass skyscraper": lambda: facade_texture(rng, (180, 140, 90), "glass"),
                "white water tower": lambda: facade_texture(rng, (230, 230, 230), "slits"),
                "yellow billboard": lambda: billboard_texture(rng),
                "orange crane": lambda: facade_texture(rng, (20, 130, 240), "glass"),
            }[name]()
            add(landmark.category, landmark.colour, _landmark_parts(name, x0, y0, lot, rng), texture, landmark.description)
            continue
        if rng.random() < 0.12:
            continue  # an empty lot: a small paved square
        setback = float(rng.uniform(1.0, 3.0))
        height = float(rng.choice([rng.uniform(8, 18), rng.uniform(18, 30), rng.uniform(30, 45)], p=[0.4, 0.4, 0.2]))
        colour = colour_names[int(rng.integers(len(colour_names)))]
        parts = [_box(x0 + setback, y0 + setback, 0, x0 + lot - setback, y0 + lot - setback, height)]
        if height > 20 and rng.random() < 0.4:  # a stepped top
            inset = setback + 3
            parts.append(_box(x0 + inset, y0 + inset, height, x0 + lot - inset, y0 + lot - inset, height + float(rng.uniform(4, 10))))
        add("building", colour, parts, facade_texture(rng, BUILDING_COLOURS[colour]))
    if "steel bridge" in chosen:
        # Across a street between two blocks, from the sidewalk on one side to the other, 22 m up.
        along_x = bool(rng.integers(2))
        street_index = int(rng.integers(1, (nx if along_x else ny)))  # an inner street
        at = float(rng.uniform(STREET_METRES + 8, (ny if along_x else nx) * PITCH_METRES - 8))
        s0 = street_index * PITCH_METRES - 1.0  # the street spans [k*PITCH, k*PITCH + STREET]
        s1 = street_index * PITCH_METRES + STREET_METRES + 1.0
        if along_x:  # the bridge runs along x, across a street that runs along y
            parts = [_box(s0, at - 2, 21, s1, at + 2, 23), _box(s0 - 1.5, at - 1, 0, s0, at + 1, 21), _box(s1, at - 1, 0, s1 + 1.5, at + 1, 21)]
        else:
            parts = [_box(at - 2, s0, 21, at + 2, s1, 23), _box(at - 1, s0 - 1.5, 0, at + 1, s0, 21), _box(at - 1, s1, 0, at + 1, s1 + 1.5, 21)]
        add("bridge", "steel", parts, facade_texture(rng, (120, 125, 130), "glass"), LANDMARKS["steel bridge"].description)
    # Ground, sky and four far walls showing a hazy skyline: a closed box around the city, so no pixel is empty.
    # The ground's texture period is aligned with the street grid.
    margin = GROUND_MARGIN_METRES
    x0, y0, x1, y1, top = -margin, -margin, width + margin, depth + margin, SKY_METRES
    ex, ey, ez = np.array([x1 - x0, 0.0, 0.0]), np.array([0.0, y1 - y0, 0.0]), np.array([0.0, 0.0, top])
    o = np.array([x0, y0, 0.0])
    skyline = skyline_texture(rng)
    far_density = skyline.shape[0] / SKY_METRES
    shell = [
        Face(o, ex, ey, np.array([0, 0, 1.0]), ground, 0, texels_per_metre=ground.shape[0] / PITCH_METRES),
        Face(o + ez, ex, ey, np.array([0, 0, -1.0]), sky, 0, texels_per_metre=0.3),
        Face(o + ez, ex, -ez, np.array([0, 1.0, 0]), skyline, 0, texels_per_metre=far_density),  # south
        Face(o + ex + ez, ey, -ez, np.array([-1.0, 0, 0]), skyline, 0, texels_per_metre=far_density),  # east
        Face(o + ex + ey + ez, -ex, -ez, np.array([0, -1.0, 0]), skyline, 0, texels_per_metre=far_density),  # north
        Face(o + ey + ez, -ey, -ez, np.array([1.0, 0, 0]), skyline, 0, texels_per_metre=far_density),  # west
    ]
    scene = Scene(scene_id=scene_id or f"city_{seed}", room=room, objects=objects, kind="city")
    return CityScene(scene, [*shell, *faces], descriptions)


def drone_pose_is_free(scene: Scene, pose: Pose) -> bool:
    """Over the city, within the altitude band and tilt range, and at least CLEARANCE_METRES from every part of
    every building and landmark (so a straight step between two free poses never passes through one)."""
    room = scene.room
    m = BOUNDARY_MARGIN_METRES
    if not (m <= pose.x <= room.width - m and m <= pose.y <= room.depth - m):
        return False
    if not ALTITUDE_LIMITS[0] - 1e-9 <= pose.z <= ALTITUDE_LIMITS[1] + 1e-9:
        return False
    if not DRONE_PITCH_LIMITS_DEGREES[0] - 1e-9 <= math.degrees(pose.pitch) <= DRONE_PITCH_LIMITS_DEGREES[1] + 1e-9:
        return False
    position = pose.position
    return all(point_box_distance(position, part) >= CLEARANCE_METRES for obj in scene.objects for part in obj.parts)


def drone_start_pose(scene: Scene, rng: np.random.Generator, landmark_ids: set[int] | None = None) -> Pose:
    """A free pose over a street intersection, facing along a street, tilted down by two tilt steps; where possible
    one with a landmark ahead (within 35 degrees, 30 to 150 m away), as a flight to a goal starts."""
    room = scene.room
    columns = int(round((room.width - STREET_METRES) / PITCH_METRES)) + 1
    rows = int(round((room.depth - STREET_METRES) / PITCH_METRES)) + 1
    landmarks = [o for o in scene.objects if landmark_ids is None or o.object_id in landmark_ids]
    candidates = [
        (STREET_METRES / 2 + PITCH_METRES * i, STREET_METRES / 2 + PITCH_METRES * j, math.radians(90.0 * k))
        for i in range(columns) for j in range(rows) for k in range(4)
    ]

    def has_landmark_ahead(x: float, y: float, yaw: float) -> bool:
        probe = Pose(x, y, 0.0, yaw, 0.0)
        for obj in landmarks:
            centre = obj.centre
            distance = math.hypot(centre[0] - x, centre[1] - y)
            if 30.0 <= distance <= 150.0 and abs(egocentric_bearing(probe, centre)) < 35.0:
                return True
        return False

    preferred = [c for c in candidates if has_landmark_ahead(*c)]
    for pool in (preferred, candidates):
        for _ in range(100 if pool else 0):
            x, y, yaw = pool[int(rng.integers(len(pool)))]
            pose = Pose(x, y, float(rng.uniform(14.0, 35.0)), yaw, -math.radians(2 * DRONE_STEPS.pitch_degrees))
            if drone_pose_is_free(scene, pose):
                return pose
    raise ValueError(f"city {scene.scene_id}: no free start pose over an intersection")


def drone_path(
    scene: Scene, num_steps: int, rng: np.random.Generator, steps_per_segment_unit: int = 1,
    landmark_ids: set[int] | None = None,
) -> tuple[list[Pose], list[str | None], list[Segment]]:
    """A random drone flight of `num_steps` steps (segments of one repeated action, as `random_path`), starting
    with one of `landmark_ids` (default: any object) ahead where possible."""
    start = drone_start_pose(scene, rng, landmark_ids)
    return random_path(
        scene, num_steps, rng, steps_per_segment_unit, start=start, steps=DRONE_STEPS, is_free=drone_pose_is_free,
        action_weights=DRONE_ACTION_WEIGHTS,
    )
