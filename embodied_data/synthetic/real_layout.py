"""Render real VSI-Bench room layouts (the annotated 3D boxes of meta_info) as egocentric walkthroughs and attach the
scene's real VSI-Bench questions whose ground truth follows from that geometry and whose objects the video shows.

Each annotated object is drawn as its oriented box (centroid, side lengths and full 3D rotation, exactly as
annotated), textured with a made-up colour; the room is a box around the objects, grown to the annotated floor
area when the objects span less.  The camera walks between a few viewpoints chosen to see most objects and turns a
full circle at each, with the paper's actions, so the ground-truth captioner and per-frame truth work as for the
procedural rooms.  The question text and ground truth are VSI-Bench's own, never recomputed.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from embodied_data.atomic import write_text_atomically
from embodied_data.manifest import GT_CAPTION_COLUMN, read_manifest, read_manifest_metadata, write_manifest
from embodied_data.records import Record, SkipReport
from embodied_data.split import DEFAULT_RATIOS, assign_splits
from embodied_data.synthetic.camera import STEP_METRES, STEP_YAW_DEGREES, Pose
from embodied_data.synthetic.captioner import ground_truth_caption
from embodied_data.synthetic.dataset import MANIFEST_NAME, one_fps_indices
from embodied_data.synthetic.groundtruth import MIN_PIXEL_FRACTION, FrameTruth, frame_truth
from embodied_data.synthetic.render import Face, Renderer, scene_faces
from embodied_data.synthetic.scene import COLOURS, Box, Room, Scene, SceneObject, make_room
from embodied_data.synthetic.textures import make_texture
from embodied_data.synthetic.video import write_video
from embodied_data.vsi.layout import VSIObject, VSISceneLayout, load_meta_dir

REAL_LAYOUT_VERSION = 1  # bump when the output of the same parameters changes
SOURCE = "vsi_real_layout"
SKIPPED_NAME = "skipped_questions.json"  # [[record id, reason], ...] of the questions not attached
# The VSI-Bench categories whose ground truth is a function of the boxes and the room's area alone (appearance
# order and route planning depend on the original video's camera path, so they are not attached).
GEOMETRIC_CATEGORIES = (
    "object_rel_direction_easy",
    "object_rel_direction_medium",
    "object_rel_direction_hard",
    "object_rel_distance",
    "object_counting",
    "object_abs_distance",
    "object_size_estimation",
    "room_size_estimation",
)
ROOM_MARGIN = 0.1  # metres between the objects' extent and a wall
MIN_ROOM_SIDE = 2.0  # metres: a room is at least this wide before it is grown to the annotated area
ROOM_AREA_TOLERANCE = 0.25  # room-size questions are kept when the drawn floor is within 25% of the annotated area
CAMERA_HEIGHT = 1.5  # metres above the floor
CAMERA_PITCH_DEGREES = -8.0  # slightly down, as a walker looks at the furniture
GRID_STEP = 0.25  # metres between candidate viewpoints
WALL_CLEARANCE = 0.45  # the camera keeps this far from walls ...
OBJECT_CLEARANCE_STEPS = (0.3, 0.15, 0.05)  # ... and this far from obstacles, relaxed in cluttered rooms
MAX_VIEWPOINTS = 3
SPIN_STEPS = int(round(360 / STEP_YAW_DEGREES))  # one full turn at each viewpoint
VISIBLE_RANGE = 6.0  # metres within which a viewpoint is credited with seeing an object
SHORTLIST = 16  # candidate viewpoints probed by coarse renders
PROBE_SIZE = 64  # pixels of those renders
PROBE_VIEWS = 6  # renders around the circle (60 degrees apart, under the 80-degree field of view)
RASTER_METRES = 0.05  # resolution of the top-down maps used to plan the walk
TEXTURE_TEXELS = 128  # smaller than the procedural rooms' textures: real scenes have up to ~100 objects


def default_realdata_dir() -> Path:
    """`<repo>/../shared/realdata`, where this project keeps the real benchmark files."""
    return Path(__file__).resolve().parents[3] / "shared" / "realdata"


@dataclass
class LayoutScene:
    """A real layout made renderable: the scene (objects as their axis-aligned bounds, for the ground truth), the
    faces the renderer draws (oriented boxes), and how the drawn room relates to the annotation."""

    layout: VSISceneLayout
    scene: Scene
    faces: list[Face] = field(repr=False)
    boxes: list[VSIObject] = field(repr=False)  # the layout's boxes moved into the room's frame, in object-id order
    drawn_area: float  # m^2 of the drawn floor


def _align_angle(layout: VSISceneLayout) -> float:
    """The yaw (radians) that turns the objects' dominant horizontal direction onto the x axis, so the room's box fits
    the furniture (most furniture stands parallel to a wall): the area-weighted circular mean of 4 x yaw, over 4."""
    if not layout.objects:
        return 0.0
    angles = np.array([4 * obj.yaw for obj in layout.objects])
    weights = np.array([max(obj.footprint_size[0] * obj.footprint_size[1], 1e-3) for obj in layout.objects])
    return float(math.atan2((weights * np.sin(angles)).sum(), (weights * np.cos(angles)).sum()) / 4)


def _moved(obj: VSIObject, turn: np.ndarray, offset: np.ndarray) -> VSIObject:
    return VSIObject(obj.category, obj.instance, turn @ obj.centroid + offset, obj.axes_lengths.copy(), turn @ obj.rotation)


def _shade_factor(normal: np.ndarray) -> float:
    """Brightness of a face by its outward normal: lit from above and a little from the east, in 0.05 steps so that
    a box needs only a few shaded copies of its texture."""
    factor = 0.77 + 0.23 * normal[2] + 0.08 * normal[0] - 0.04 * normal[1]
    return round(float(np.clip(factor, 0.5, 1.0)) * 20) / 20


def oriented_box_faces(
    box: VSIObject, texture: np.ndarray, object_id: int, shaded: dict[float, np.ndarray] | None = None
) -> list[Face]:
    """The six faces of an oriented box with outward normals, each with its texture shaded for its direction
    (`shaded`: shade factor -> shaded copy of this texture, shared between boxes of one texture to save memory)."""
    axes = [box.rotation[:, i] * box.half_extent[i] for i in range(3)]
    shaded = {} if shaded is None else shaded
    faces = []
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        if np.linalg.norm(axes[j]) < 1e-6 or np.linalg.norm(axes[k]) < 1e-6:
            continue  # a flat box has no side faces along this axis
        for sign in (-1.0, 1.0):
            centre = box.centroid + sign * axes[i]
            normal = sign * box.rotation[:, i]
            factor = _shade_factor(normal)
            if factor not in shaded:
                shaded[factor] = np.clip(texture.astype(np.float32) * factor, 0, 255).astype(np.uint8)
            faces.append(Face(centre - axes[j] - axes[k], 2 * axes[j], 2 * axes[k], normal, shaded[factor], object_id))
    return faces


def build_layout_scene(layout: VSISceneLayout, seed: int = 0) -> LayoutScene:
    """The renderable scene of one real layout: aligned to the x axis, floor at z = 0, walls around the objects."""
    if not layout.objects:
        raise ValueError(f"scene {layout.scene}: the layout has no objects to draw")
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(layout.scene.encode())]))
    angle = _align_angle(layout)
    c, s = math.cos(-angle), math.sin(-angle)
    turn = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    corners = np.concatenate([obj.corners for obj in layout.objects]) @ turn.T
    low, high = corners.min(axis=0), corners.max(axis=0)
    width, depth = (high[:2] - low[:2]) + 2 * ROOM_MARGIN
    width, depth = max(width, MIN_ROOM_SIDE), max(depth, MIN_ROOM_SIDE)
    if width * depth < layout.room_size:  # the objects span less than the room: grow it to the annotated area
        scale = math.sqrt(layout.room_size / (width * depth))
        width, depth = width * scale, depth * scale
    height = max(2.6, float(high[2] - low[2]) + 0.2)
    # Centre the objects' extent in the room, floor at z = 0.
    offset = np.array([width / 2, depth / 2, 0.0]) - np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]])
    boxes = [_moved(obj, turn, offset) for obj in layout.objects]
    room: Room = make_room(rng, float(width), float(depth), float(height))
    objects, faces = [], scene_faces(Scene(layout.scene, room, []))
    used: dict[str, set[str]] = {}
    textures: dict[str, np.ndarray] = {}
    shaded_by_colour: dict[str, dict[float, np.ndarray]] = {}
    palette = list(COLOURS)
    for object_id, box in enumerate(boxes, start=1):
        # Made-up colours, different within a category where possible, so captions can tell instances apart.
        taken = used.setdefault(box.category, set())
        free = [name for name in palette if name not in taken] or palette
        colour = free[int(rng.integers(len(free)))]
        taken.add(colour)
        if colour not in textures:  # one texture (and its shaded copies) per colour: scenes have up to ~100 objects
            textures[colour] = make_texture(rng, COLOURS[colour], "grain", size=TEXTURE_TEXELS)
            shaded_by_colour[colour] = {}
        texture = textures[colour]
        lo, hi = box.corners.min(axis=0), box.corners.max(axis=0)
        part = Box(tuple(float(v) for v in lo), tuple(float(v) for v in hi))
        objects.append(SceneObject(object_id, box.category, colour, [part], texture))
        faces.extend(oriented_box_faces(box, texture, object_id, shaded_by_colour[colour]))
    scene = Scene(scene_id=layout.scene, room=room, objects=objects)
    return LayoutScene(layout, scene, faces, boxes, float(width * depth))


# ---------------------------------------------------------------- the walkthrough


class FloorMap:
    """Top-down rasters of one layout (RASTER_METRES per pixel): how far each floor point is from a wall or an
    obstacle, and where tall objects hide what is behind them at eye height.

    Obstacles are the boxes a walker would bump into: reaching below head height and standing above the floor
    (rugs and ceiling lights are not obstacles).  Sight is blocked by boxes taller than the camera.
    """

    def __init__(self, built: LayoutScene) -> None:
        room = built.scene.room
        self.rows, self.cols = int(math.ceil(room.depth / RASTER_METRES)), int(math.ceil(room.width / RASTER_METRES))
        walkable = np.full((self.rows, self.cols), 255, np.uint8)
        self.tall = np.zeros((self.rows, self.cols), np.uint8)
        for box in built.boxes:
            bottom, top = float(box.corners[:, 2].min()), float(box.corners[:, 2].max())
            hull = cv2.convexHull(np.round(box.corners[:, :2] / RASTER_METRES).astype(np.int32))
            if bottom < CAMERA_HEIGHT + 0.2 and top > 0.05:
                cv2.fillConvexPoly(walkable, hull, 0)
            if top > CAMERA_HEIGHT and bottom < 1.0:
                cv2.fillConvexPoly(self.tall, hull, 1)
        to_obstacle = cv2.distanceTransform(walkable, cv2.DIST_L2, 5) * RASTER_METRES
        ys, xs = (np.mgrid[0 : self.rows, 0 : self.cols] + 0.5) * RASTER_METRES
        to_wall = np.minimum.reduce([xs, ys, room.width - xs, room.depth - ys]) - WALL_CLEARANCE
        self.clearance = np.minimum(to_obstacle, to_wall)

    def _index(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cells = np.floor(np.asarray(points, float) / RASTER_METRES).astype(int)
        return np.clip(cells[..., 1], 0, self.rows - 1), np.clip(cells[..., 0], 0, self.cols - 1)

    def clearance_at(self, points: np.ndarray) -> np.ndarray:
        """Metres from each (x, y) to the nearest obstacle or the wall margin (0 or less: not walkable)."""
        return self.clearance[self._index(points)]

    def line_is_free(self, a: np.ndarray, b: np.ndarray, required: float) -> bool:
        samples = a + np.linspace(0, 1, max(2, int(np.linalg.norm(b - a) / 0.1)))[:, None] * (b - a)
        return bool((self.clearance_at(samples) >= required).all())

    def sight_counts(self, cells: np.ndarray, built: LayoutScene, wanted: list[int], reach: float) -> np.ndarray:
        """For each cell, how many of the `wanted` object ids a full turn there would see: within `reach`, large
        enough to make out, and with no tall obstacle on the sight line (other than the target's own footprint)."""
        if not wanted:
            return np.zeros(len(cells), int)
        targets = np.array([built.boxes[i - 1].centroid[:2] for i in wanted])
        sizes = np.array([built.boxes[i - 1].longest_dimension for i in wanted])
        offsets = targets[None, :, :] - cells[:, None, :]  # cells x targets x 2
        distance = np.linalg.norm(offsets, axis=2)
        visible = (distance <= reach) & (sizes[None, :] / np.maximum(distance, 0.1) >= 0.05)
        own = np.array([self.tall[self._index(t)] for t in targets])  # a tall target does not hide itself
        for t in np.linspace(0.1, 0.8, 8):
            samples = cells[:, None, :] + t * offsets
            visible &= ~((self.tall[self._index(samples)] > 0) & ~((own[None, :] > 0) & (t > 0.5)))
        return visible.sum(axis=1)


class _CoarseProbe:
    """Which objects a turn in place would show, from PROBE_VIEWS coarse renders around the circle."""

    def __init__(self, built: LayoutScene) -> None:
        self.renderer = Renderer(built.scene, size=PROBE_SIZE, faces=built.faces)
        self.count = len(built.scene.objects)

    def newly_seen(self, pose: Pose, wanted: list[int]) -> set[int]:
        shown: set[int] = set()
        for k in range(PROBE_VIEWS):
            turned = Pose(pose.x, pose.y, pose.z, pose.yaw + 2 * math.pi * k / PROBE_VIEWS, pose.pitch)
            ids = self.renderer.render(turned)[1]
            fraction = np.bincount(ids.ravel().clip(min=0), minlength=self.count + 1) / ids.size
            # A margin over the full-size threshold: coarse pixels over-count thin slivers.
            shown.update(i for i in wanted if fraction[i] >= 1.5 * MIN_PIXEL_FRACTION)
        return shown


def _turn_towards(pose: Pose, target: np.ndarray) -> list[str]:
    """Rotation steps that bring the heading within half a step of the direction to `target`."""
    desired = math.atan2(-(target[0] - pose.x), target[1] - pose.y)  # heading (-sin yaw, cos yaw)
    difference = (desired - pose.yaw + math.pi) % (2 * math.pi) - math.pi
    steps = int(round(abs(math.degrees(difference)) / STEP_YAW_DEGREES))
    return [("rotate left" if difference > 0 else "rotate right")] * steps


@dataclass
class Walkthrough:
    poses: list[Pose]
    actions: list[str | None]  # the action leading to each pose (None for the first)
    images: list[np.ndarray] = field(repr=False)
    frames: list[FrameTruth] = field(repr=False)
    viewpoints: list[np.ndarray] = field(repr=False)
    clearance: float  # the obstacle clearance the walk keeps (relaxed in cluttered rooms)


def render_walkthrough(built: LayoutScene, size: int = 224, fps: float = 2.0) -> Walkthrough:
    """Turn a full circle at the free floor point that sees the most objects, then walk to the point that would
    see the most objects not yet seen in the rendered frames and turn again, up to MAX_VIEWPOINTS times.

    Viewpoints are free cells of a GRID_STEP grid reachable in a straight line; what counts as seen is what the
    renderer shows (the per-frame truth), so objects hidden behind low furniture are looked for again up close.
    """
    floor = FloorMap(built)
    room = built.scene.room
    grid = np.array([(x, y) for x in np.arange(GRID_STEP / 2, room.width, GRID_STEP) for y in np.arange(GRID_STEP / 2, room.depth, GRID_STEP)])
    clearances = floor.clearance_at(grid)
    required = next((c for c in OBJECT_CLEARANCE_STEPS if (clearances >= c).any()), None)
    if required is None:  # nowhere is free: stand where there is the most room, and only turn
        cells, required = grid[[int(np.argmax(clearances))]], float(clearances.max())
    else:
        cells = grid[clearances >= required]
    renderer = Renderer(built.scene, size=size, faces=built.faces)
    probe = _CoarseProbe(built)
    all_ids = [o.object_id for o in built.scene.objects]
    centre = np.array([room.width / 2, room.depth / 2])
    counts = floor.sight_counts(cells, built, all_ids, VISIBLE_RANGE)
    first = cells[int(np.lexsort((np.linalg.norm(cells - centre, axis=1), -counts))[0])]
    away = centre - first if np.linalg.norm(centre - first) > 0.5 else np.array([0.0, 1.0])
    pose = Pose(float(first[0]), float(first[1]), min(CAMERA_HEIGHT, room.height - 0.3),
                math.atan2(-away[0], away[1]), math.radians(CAMERA_PITCH_DEGREES))
    walk = Walkthrough([], [], [], [], [first], required)
    seen: set[int] = set()

    def show(new_pose: Pose, action: str | None) -> None:
        image, ids = renderer.render(new_pose)
        truth = frame_truth(built.scene, new_pose, ids, len(walk.poses), fps, action)
        seen.update(v.object_id for v in truth.visible)
        walk.poses.append(new_pose)
        walk.actions.append(action)
        walk.images.append(image)
        walk.frames.append(truth)

    def step(action: str) -> bool:
        nonlocal pose
        moved = pose.apply(action)
        if action.startswith("move") and floor.clearance_at(np.array([moved.x, moved.y])) < required:
            return False  # the quantised heading drifted towards an obstacle: stop here
        pose = moved
        show(pose, action)
        return True

    show(pose, None)
    while True:
        for _ in range(SPIN_STEPS):
            step("rotate left")
        unseen = [i for i in all_ids if i not in seen]
        if not unseen or len(walk.viewpoints) >= MAX_VIEWPOINTS:
            break
        here = np.array([pose.x, pose.y])
        reachable = np.array([np.linalg.norm(c - here) >= 1.0 and floor.line_is_free(here, c, required) for c in cells], bool)
        if not reachable.any():
            break
        options = cells[reachable]
        # Shortlist by the top-down estimate (and nearness to what is missing), then let a coarse render of a
        # turn at each shortlisted point decide: low furniture, monitors and shelves hide small things.
        gains = floor.sight_counts(options, built, unseen, VISIBLE_RANGE / 2)
        unseen_centres = np.array([built.boxes[i - 1].centroid[:2] for i in unseen])
        nearest_unseen = np.linalg.norm(options[:, None, :] - unseen_centres[None], axis=2).min(axis=1)
        shortlist = options[np.lexsort((nearest_unseen, -gains))[:SHORTLIST]]
        found = [len(probe.newly_seen(Pose(float(c[0]), float(c[1]), pose.z, 0.0, pose.pitch), unseen)) for c in shortlist]
        if max(found) == 0:
            break
        target = shortlist[int(np.argmax(found))]  # the shortlist is ordered, so ties go to the better estimate
        walk.viewpoints.append(target)
        for action in _turn_towards(pose, target):
            step(action)
        for _ in range(int(round(np.linalg.norm(target - here) / STEP_METRES))):
            if not step("move forward"):
                break
    return walk


# ---------------------------------------------------------------- questions


def mentioned_categories(text: str, categories: list[str], aliases: dict[str, str] | None = None) -> list[str]:
    """The scene's categories named in `text` (directly or by an alias: question name -> category), longest names
    first so that 'coffee table' is not also read as 'table'."""
    spellings = [(category, category) for category in categories]
    spellings += [(alias, category) for alias, category in (aliases or {}).items() if category in categories]
    found: list[str] = []
    remaining = text.lower()
    for spelling, category in sorted(spellings, key=lambda pair: len(pair[0]), reverse=True):
        pattern = r"(?<![a-z])" + r"\s+".join(re.escape(word) for word in spelling.lower().split()) + r"(?![a-z])"
        if re.search(pattern, remaining):
            if category not in found:
                found.append(category)
            remaining = re.sub(pattern, " ", remaining)
    return found


def question_problem(record: Record, raw_row: dict | None, built: LayoutScene, seen_ids: set[int], distances) -> str | None:
    """Why a real question cannot go with this walkthrough (None when it can): its type depends on the original
    camera path; its published answer does not follow from the annotated boxes (judged by `embodied_data.vsi`
    with VSI's own conventions); an object it names is not seen in the video (every instance, since counting and
    "closest" take all of them); the count differs from the boxes drawn; or the drawn floor is far from the
    annotated area."""
    from embodied_data.vsi.answers import CATEGORY_ALIASES, judge

    if record.category not in GEOMETRIC_CATEGORIES:
        return f"not geometric: {record.category} depends on the original video's camera path"
    if record.category == "room_size_estimation":
        real = built.layout.room_size
        if abs(built.drawn_area - real) > ROOM_AREA_TOLERANCE * real:
            return f"room area differs: drawn {built.drawn_area:.1f} m^2, annotated {real:.1f} m^2"
    else:
        groups = built.scene.by_category()
        named = mentioned_categories(" ".join([record.question, *record.choices]), list(groups), CATEGORY_ALIASES)
        if not named:
            return "no annotated object named in the question"
        for category in named:
            ids = [o.object_id for o in groups[category]]
            unseen = [i for i in ids if i not in seen_ids]
            if unseen:
                return f"not in video: {len(unseen)} of {len(ids)} {category} not seen"
        if record.category == "object_counting" and float(record.answer) != len(groups[named[0]]):
            return f"count differs: answer {record.answer:g}, {len(groups[named[0]])} {named[0]} boxes drawn"
    # Last, as it is the costly check (VSI's sampled closest-point distances).
    if raw_row is None:
        return "no parquet row: the question's id is not in the VSI-Bench file"
    verdict = judge(built.layout, raw_row, distances)
    if not (verdict.covered and verdict.agree):
        return f"not from geometry: {verdict.cause}"
    return None


# ---------------------------------------------------------------- the dataset


@dataclass
class RenderedLayout:
    built: LayoutScene
    walk: Walkthrough
    video: str  # relative to the output folder
    caption: str


def render_layout(built: LayoutScene, out_dir: Path, size: int, fps: float) -> RenderedLayout:
    """Render the walkthrough of one layout to `out_dir/videos/<scene>.mp4` with its ground truth beside it."""
    walk = render_walkthrough(built, size, fps)
    images, frames = walk.images, walk.frames
    video = f"videos/{built.layout.scene}.mp4"
    write_video(images, out_dir / video, fps)
    truth = {
        "scene": built.layout.scene,
        "dataset": built.layout.dataset,
        "room": {"width": built.scene.room.width, "depth": built.scene.room.depth, "height": built.scene.room.height,
                 "annotated_area": built.layout.room_size},
        "objects": [
            {"id": o.object_id, "category": o.category, "colour": o.colour, "centroid": box.centroid.tolist(),
             "axes_lengths": box.axes_lengths.tolist(), "rotation": box.rotation.tolist()}
            for o, box in zip(built.scene.objects, built.boxes)
        ],
        "frames": [f.to_dict() for f in frames],
    }
    write_text_atomically(out_dir / f"videos/{built.layout.scene}.json", json.dumps(truth, sort_keys=True, indent=1))
    caption, _ = ground_truth_caption(frames, one_fps_indices(len(frames), fps))
    return RenderedLayout(built, walk, video, caption)


def select_scenes(layouts: dict[str, VSISceneLayout], num_scenes: int | None, seed: int) -> list[str]:
    """`num_scenes` scene names (all when None) in a seeded order of the sorted names."""
    names = sorted(layouts)
    order = np.random.default_rng(seed).permutation(len(names))
    chosen = [names[i] for i in order]
    return chosen if num_scenes is None else chosen[:num_scenes]


def generate_real_layouts(
    out_dir: str | Path,
    num_scenes: int | None = None,
    seed: int = 0,
    size: int = 224,
    fps: float = 2.0,
    realdata_dir: str | Path | None = None,
    split_ratios: tuple[float, float, float] = DEFAULT_RATIOS,
    progress: bool = True,
) -> tuple[list[Record], SkipReport]:
    """Render a walkthrough of each chosen real layout into `out_dir/videos/` and write `out_dir/manifest.parquet`
    (the format of `generate_dataset`: record columns, scene-level split, `gt_caption`) with the scenes' real
    geometric VSI-Bench questions.  Questions that the walkthrough cannot support are reported with their reason
    (also kept in `out_dir/skipped_questions.json`).
    A complete output with the same parameters is reused.  Returns the records (absolute video paths) and the report.
    """
    from embodied_data.loaders import load_vsi_bench

    if (num_scenes is not None and num_scenes < 1) or fps <= 0 or size < 32:
        raise ValueError(f"need scenes >= 1, fps > 0, size >= 32; got {num_scenes}, {fps}, {size}")
    realdata = Path(realdata_dir) if realdata_dir is not None else default_realdata_dir()
    meta_dir, parquet = realdata / "vsi_bench" / "meta_info", realdata / "vsi_bench" / "test-00000-of-00001.parquet"
    for needed in (meta_dir, parquet):
        if not needed.exists():
            raise FileNotFoundError(f"real layouts need {needed} (VSI-Bench meta_info and test parquet)")
    layouts = load_meta_dir(meta_dir)
    scenes = select_scenes(layouts, num_scenes, seed)
    out = Path(out_dir)
    manifest_path = out / MANIFEST_NAME
    params = {
        "kind": "real_layouts",
        "version": REAL_LAYOUT_VERSION,
        "scenes": scenes,
        "seed": seed,
        "size": size,
        "fps": float(fps),
        "split_ratios": [float(r) for r in split_ratios],
    }
    report = SkipReport(log_each=False)
    skipped_path = out / SKIPPED_NAME
    if manifest_path.exists() and skipped_path.exists() and read_manifest_metadata(manifest_path) == params:
        records, read_report = read_manifest(manifest_path)
        if not len(read_report):
            report.skipped.extend((str(i), str(reason)) for i, reason in json.loads(skipped_path.read_text(encoding="utf-8")))
            return records, report
    from embodied_data.vsi.answers import CategoryDistances

    questions, _ = load_vsi_bench(parquet, allow_missing_videos=True, split_seed=None, verbose=False)
    # The raw rows too: the geometric judge reads the published answer as written ("2" and "2.0" differ in precision).
    raw_rows = {f"vsi_{row['id']}": row for row in pq.read_table(parquet).to_pylist()}
    by_scene: dict[str, list[Record]] = {}
    for record in questions:
        by_scene.setdefault(record.scene, []).append(record)
    out.mkdir(parents=True, exist_ok=True)
    records: list[Record] = []
    captions: dict[str, str] = {}
    for name in tqdm(scenes, desc="rendering real layouts", unit="scene", disable=not progress):
        rendered = render_layout(build_layout_scene(layouts[name], seed), out, size, fps)
        seen = {v.object_id for frame in rendered.walk.frames for v in frame.visible}
        captions[rendered.video] = rendered.caption
        distances = CategoryDistances(layouts[name])  # memoised per scene: VSI's sampled distances are costly
        for record in by_scene.get(name, []):
            problem = question_problem(record, raw_rows.get(record.id), rendered.built, seen, distances)
            if problem is not None:
                report.add(record.id, problem)
                continue
            records.append(Record(record.id, rendered.video, record.question, record.choices, record.answer,
                                  record.category, record.scene, SOURCE))
    if not records:
        raise RuntimeError(f"no question of the {len(scenes)} scene(s) could be attached: {report.summary()}")
    records = assign_splits(records, seed, split_ratios)
    # The questions left out, with their reasons, beside the manifest (written first: the manifest marks completion).
    write_text_atomically(skipped_path, json.dumps(report.skipped, indent=0))
    write_manifest(records, manifest_path, extra_columns={GT_CAPTION_COLUMN: [captions[r.video] for r in records]}, metadata=params)
    written, read_report = read_manifest(manifest_path)
    if len(read_report):
        raise RuntimeError(f"{manifest_path}: the manifest does not read back cleanly: {read_report.summary()}")
    return written, report
