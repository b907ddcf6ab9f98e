"""A procedural indoor room: textured floor, walls and ceiling, and named furniture placed without overlap, seeded.

World frame: x to the east, y to the north, z up, metres; the floor is z = 0 and the room spans
[0, width] x [0, depth] x [0, height].  Every object is a union of axis-aligned boxes ("parts").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from embodied_data.synthetic.textures import make_texture

# Named colours (BGR, as OpenCV draws) that the captions and questions use in words.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (40, 40, 200),
    "green": (60, 160, 50),
    "blue": (190, 90, 30),
    "yellow": (40, 210, 230),
    "white": (235, 235, 235),
    "black": (35, 35, 35),
    "gray": (128, 128, 128),
    "brown": (30, 70, 120),
    "orange": (20, 130, 240),
    "purple": (140, 40, 120),
    "pink": (180, 150, 240),
}


@dataclass(frozen=True)
class Category:
    """A kind of object: its footprint and height ranges (metres) and how it is built from boxes."""

    name: str
    width: tuple[float, float]  # along x before a quarter turn
    depth: tuple[float, float]  # along y before a quarter turn
    height: tuple[float, float]
    shape: str  # which part builder below
    colours: tuple[str, ...]
    max_count: int = 1  # how many of this category a room may hold


CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in [
        Category("chair", (0.45, 0.55), (0.45, 0.55), (0.85, 1.0), "chair", ("red", "blue", "black", "brown", "green"), 3),
        Category("table", (1.0, 1.6), (0.7, 1.0), (0.72, 0.78), "table", ("brown", "white", "black", "gray")),
        Category("sofa", (1.6, 2.2), (0.8, 0.95), (0.8, 0.95), "sofa", ("gray", "blue", "green", "red", "brown")),
        Category("bed", (1.4, 1.8), (1.9, 2.1), (0.5, 0.6), "bed", ("white", "blue", "pink", "gray")),
        Category("lamp", (0.3, 0.4), (0.3, 0.4), (1.4, 1.7), "lamp", ("yellow", "white", "orange")),
        Category("plant", (0.4, 0.6), (0.4, 0.6), (0.8, 1.3), "plant", ("green",), 2),
        Category("tv", (1.0, 1.3), (0.35, 0.45), (1.1, 1.3), "tv", ("black",)),
        Category("bookshelf", (0.8, 1.2), (0.3, 0.4), (1.6, 2.0), "box", ("brown", "white", "black")),
        Category("cabinet", (0.6, 1.0), (0.4, 0.55), (0.8, 1.1), "box", ("white", "gray", "brown", "blue")),
        Category("stool", (0.35, 0.45), (0.35, 0.45), (0.45, 0.65), "stool", ("orange", "red", "yellow", "purple"), 2),
    ]
}


@dataclass(frozen=True)
class Box:
    """An axis-aligned box: its minimum and maximum corners."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]


@dataclass
class SceneObject:
    """One placed object: a category, a colour name, and the boxes it is built from."""

    object_id: int  # 1-based: 0 is the room itself in the renderer's id map
    category: str
    colour: str
    parts: list[Box]
    texture: np.ndarray = field(repr=False)

    @property
    def bounds(self) -> Box:
        lo = np.min([p.lo for p in self.parts], axis=0)
        hi = np.max([p.hi for p in self.parts], axis=0)
        return Box(tuple(float(v) for v in lo), tuple(float(v) for v in hi))

    @property
    def centre(self) -> np.ndarray:
        b = self.bounds
        return (np.asarray(b.lo) + np.asarray(b.hi)) / 2

    @property
    def name(self) -> str:
        return f"{self.colour} {self.category}"

    def longest_dimension(self) -> float:
        b = self.bounds
        return float(max(np.asarray(b.hi) - np.asarray(b.lo)))


@dataclass
class Room:
    width: float  # x extent
    depth: float  # y extent
    height: float
    floor_texture: np.ndarray = field(repr=False)
    wall_textures: list[np.ndarray] = field(repr=False)  # south, east, north, west
    ceiling_texture: np.ndarray = field(repr=False)

    @property
    def area(self) -> float:
        return self.width * self.depth


@dataclass
class Scene:
    scene_id: str
    room: Room  # for a city ("kind" "city"): its ground extent and the sky's height, with no walls drawn
    objects: list[SceneObject]
    kind: str = "room"  # "room" (indoor walkthrough) or "city" (outdoor drone flight, see city.py)

    def by_category(self) -> dict[str, list[SceneObject]]:
        groups: dict[str, list[SceneObject]] = {}
        for obj in self.objects:
            groups.setdefault(obj.category, []).append(obj)
        return groups

    def unique_objects(self) -> list[SceneObject]:
        """Objects that are the only one of their category, so that "the <category>" names them unambiguously."""
        return [group[0] for group in self.by_category().values() if len(group) == 1]


def box_distance(a: Box, b: Box) -> float:
    """Distance between the closest points of two axis-aligned boxes (0 when they touch or overlap)."""
    gap = np.maximum(0.0, np.maximum(np.asarray(a.lo) - np.asarray(b.hi), np.asarray(b.lo) - np.asarray(a.hi)))
    return float(np.linalg.norm(gap))


def point_box_distance(point: np.ndarray, box: Box) -> float:
    """Distance from a point to the closest point of a box."""
    gap = np.maximum(0.0, np.maximum(np.asarray(box.lo) - point, point - np.asarray(box.hi)))
    return float(np.linalg.norm(gap))


def _box(x0: float, y0: float, z0: float, x1: float, y1: float, z1: float) -> Box:
    return Box((x0, y0, z0), (x1, y1, z1))


def build_parts(shape: str, x0: float, y0: float, w: float, d: float, h: float, facing_y: bool) -> list[Box]:
    """The boxes of one object whose footprint is [x0, x0+w] x [y0, y0+d]; `facing_y` puts backs on the +y side."""
    x1, y1 = x0 + w, y0 + d

    def back_slab(thickness: float, z0: float, z1: float) -> Box:
        # The backrest/headboard/screen sits on the far side of the footprint's shorter axis.
        if facing_y:
            return _box(x0, y1 - thickness, z0, x1, y1, z1)
        return _box(x1 - thickness, y0, z0, x1, y1, z1)

    if shape == "chair":
        seat = 0.45
        return [_box(x0, y0, 0.0, x1, y1, seat), back_slab(0.08, seat, h)]
    if shape == "table":
        inset = 0.25 * min(w, d)
        return [_box(x0 + inset, y0 + inset, 0.0, x1 - inset, y1 - inset, h - 0.05), _box(x0, y0, h - 0.05, x1, y1, h)]
    if shape == "sofa":
        seat = 0.45
        return [_box(x0, y0, 0.0, x1, y1, seat), back_slab(0.25, seat, h)]
    if shape == "bed":
        return [_box(x0, y0, 0.0, x1, y1, h), back_slab(0.1, h, h + 0.5)]
    if shape == "lamp":
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        return [_box(cx - 0.03, cy - 0.03, 0.0, cx + 0.03, cy + 0.03, h - 0.35), _box(x0, y0, h - 0.35, x1, y1, h)]
    if shape == "plant":
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        pot = 0.3
        return [_box(cx - w / 3, cy - d / 3, 0.0, cx + w / 3, cy + d / 3, pot), _box(x0, y0, pot, x1, y1, h)]
    if shape == "tv":
        stand = 0.5
        return [_box(x0, y0, 0.0, x1, y1, stand), back_slab(0.06, stand, h)]
    if shape == "stool":
        return [_box(x0, y0, 0.0, x1, y1, h)]
    if shape == "box":
        return [_box(x0, y0, 0.0, x1, y1, h)]
    raise ValueError(f"unknown shape {shape!r}")


def _footprints_overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float], margin: float) -> bool:
    return not (a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1])


def place_object(
    room: Room,
    category: Category,
    colour: str,
    object_id: int,
    x0: float,
    y0: float,
    rng: np.random.Generator,
    quarter_turn: bool = False,
    size: tuple[float, float, float] | None = None,
) -> SceneObject:
    """Build one object at a given footprint corner (used by the generator and by hand-placed test scenes)."""
    if size is None:
        size = (rng.uniform(*category.width), rng.uniform(*category.depth), rng.uniform(*category.height))
    w, d, h = size
    if quarter_turn:
        w, d = d, w
    parts = build_parts(category.shape, x0, y0, w, d, h, facing_y=not quarter_turn)
    texture = make_texture(rng, COLOURS[colour], "fabric" if category.name in ("sofa", "bed", "chair") else "grain")
    return SceneObject(object_id=object_id, category=category.name, colour=colour, parts=parts, texture=texture)


def make_room(rng: np.random.Generator, width: float, depth: float, height: float) -> Room:
    wall_colour = [(200, 210, 220), (170, 190, 200), (210, 200, 180), (190, 200, 170)][int(rng.integers(4))]
    return Room(
        width=width,
        depth=depth,
        height=height,
        floor_texture=make_texture(rng, (60, 110, 150), "wood"),
        wall_textures=[make_texture(rng, wall_colour, "wallpaper") for _ in range(4)],
        ceiling_texture=make_texture(rng, (225, 225, 225), "tiles"),
    )


def generate_scene(seed: int, scene_id: str | None = None, min_objects: int = 7, max_objects: int = 10) -> Scene:
    """A random room with furniture that neither overlaps nor blocks a free area around the room's centre."""
    rng = np.random.default_rng(seed)
    room = make_room(rng, float(rng.uniform(5.0, 7.0)), float(rng.uniform(5.0, 7.0)), float(rng.uniform(2.6, 3.0)))
    target = int(rng.integers(min_objects, max_objects + 1))
    names = list(CATEGORIES)
    # Free space for the camera: a disc around the centre that no footprint may enter.
    free_centre = np.array([room.width / 2, room.depth / 2])
    free_radius = 1.0
    footprints: list[tuple[float, float, float, float]] = []
    objects: list[SceneObject] = []
    counts: dict[str, int] = {}
    # Every category once (in a random order) before any repeats, so most objects are the only one of their kind
    # and "the <category>" names them; repeats come after, for counting questions.
    wishlist = [names[i] for i in rng.permutation(len(names))]
    for attempt in range(600):
        if len(objects) >= target:
            break
        if wishlist and attempt % 40 == 39:
            wishlist.pop(0)  # this one does not fit; move on
        category = CATEGORIES[wishlist[0] if wishlist else names[int(rng.integers(len(names)))]]
        if counts.get(category.name, 0) >= category.max_count:
            if wishlist:
                wishlist.pop(0)
            continue
        quarter_turn = bool(rng.integers(2))
        w, d, h = rng.uniform(*category.width), rng.uniform(*category.depth), rng.uniform(*category.height)
        fw, fd = (d, w) if quarter_turn else (w, d)
        x0 = float(rng.uniform(0.1, room.width - fw - 0.1))
        y0 = float(rng.uniform(0.1, room.depth - fd - 0.1))
        rect = (x0, y0, x0 + fw, y0 + fd)
        nearest = np.clip(free_centre, [rect[0], rect[1]], [rect[2], rect[3]])
        if np.linalg.norm(nearest - free_centre) < free_radius:
            continue
        if any(_footprints_overlap(rect, other, margin=0.3) for other in footprints):
            continue
        # Same category, different colours where possible, so captions can tell instances apart.
        used = {o.colour for o in objects if o.category == category.name}
        palette = [c for c in category.colours if c not in used] or list(category.colours)
        colour = palette[int(rng.integers(len(palette)))]
        objects.append(place_object(room, category, colour, len(objects) + 1, x0, y0, rng, quarter_turn, (w, d, h)))
        footprints.append(rect)
        counts[category.name] = counts.get(category.name, 0) + 1
        if wishlist:
            wishlist.pop(0)
    return Scene(scene_id=scene_id or f"scene_{seed}", room=room, objects=objects)
