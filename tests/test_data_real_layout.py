"""Real VSI-Bench layouts rendered as walkthroughs: the geometry is the annotation's (moved rigidly, drawn as oriented
boxes), the attached questions are VSI-Bench's own with their real ground truth, and every object they name is seen
in the video."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from embodied_data.manifest import read_gt_captions, read_manifest, read_manifest_metadata
from embodied_data.synthetic.camera import Pose
from embodied_data.synthetic.real_layout import (
    GEOMETRIC_CATEGORIES,
    SOURCE,
    build_layout_scene,
    generate_real_layouts,
    mentioned_categories,
    oriented_box_faces,
    select_scenes,
)
from embodied_data.synthetic.render import Renderer
from embodied_data.synthetic.scene import Scene, generate_scene, make_room
from embodied_data.synthetic.video import read_video
from embodied_data.vsi.layout import VSIObject, VSISceneLayout, load_meta_dir

cv2.setNumThreads(1)

SEED = 4  # two small scenes first in this seeded order (ARKitScenes 45260928, ScanNet++ 5ee7c22ba0): fast


@pytest.fixture(scope="module")
def layouts(vsi_bench_dir) -> dict[str, VSISceneLayout]:
    return load_meta_dir(vsi_bench_dir / "meta_info")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory, layouts, realdata) -> tuple[Path, list, object]:
    out = tmp_path_factory.mktemp("real_layouts")
    records, report = generate_real_layouts(out, num_scenes=2, seed=SEED, size=128, realdata_dir=realdata, progress=False)
    return out, records, report


# ---------------------------------------------------------------- renderer pieces


def test_preselection_of_faces_changes_no_pixel() -> None:
    """The vectorised pre-selection only skips work: rendering with every face tested one by one gives the same
    bytes, for the procedural boxes and for oriented boxes, from ordinary and odd poses."""
    scene = generate_scene(4)
    room = make_room(np.random.default_rng(1), 5.0, 5.0, 2.7)
    turn = 0.6
    rotation = np.array([[math.cos(turn), -math.sin(turn), 0], [math.sin(turn), math.cos(turn), 0], [0, 0, 1.0]])
    box = VSIObject("box", 0, np.array([2.5, 3.5, 0.5]), np.array([1.2, 0.6, 1.0]), rotation)
    oriented = Scene("oriented", room, [])
    texture = np.full((64, 64, 3), 120, np.uint8)
    from embodied_data.synthetic.render import scene_faces

    cases = [(scene, None), (oriented, scene_faces(oriented) + oriented_box_faces(box, texture, 1))]
    rng = np.random.default_rng(0)
    for case_scene, faces in cases:
        fast = Renderer(case_scene, size=96, faces=faces)
        slow = Renderer(case_scene, size=96, faces=faces)
        slow._candidate_faces = lambda R, C: np.arange(len(slow.faces))  # every face through the per-face tests
        r = case_scene.room
        for _ in range(25):
            pose = Pose(float(rng.uniform(0.1, r.width - 0.1)), float(rng.uniform(0.1, r.depth - 0.1)),
                        float(rng.uniform(0.2, 2.5)), float(rng.uniform(-3.2, 3.2)), float(rng.uniform(-1.2, 1.2)))
            (a, ida), (b, idb) = fast.render(pose), slow.render(pose)
            assert a.tobytes() == b.tobytes() and ida.tobytes() == idb.tobytes()


def test_oriented_box_is_drawn_rotated_not_as_its_bounding_box() -> None:
    """A 45-degree box seen from above: its centre shows the box, the corners of its axis-aligned bounds do not."""
    room = make_room(np.random.default_rng(2), 6.0, 6.0, 3.0)
    rotation = np.array([[math.sqrt(0.5), -math.sqrt(0.5), 0], [math.sqrt(0.5), math.sqrt(0.5), 0], [0, 0, 1.0]])
    box = VSIObject("crate", 0, np.array([3.0, 3.0, 0.25]), np.array([1.0, 1.0, 0.5]), rotation)
    scene = Scene("r", room, [])
    from embodied_data.synthetic.render import intrinsics, scene_faces

    renderer = Renderer(scene, size=128, faces=scene_faces(scene) + oriented_box_faces(box, np.full((32, 32, 3), 90, np.uint8), 1))
    # Straight down from 2.5 m above the box's centre (pitch -90 degrees looks at the floor; heading north is up).
    pose = Pose(3.0, 3.0, 2.5, 0.0, -math.pi / 2)
    _, ids = renderer.render(pose)
    K = intrinsics(128)
    R = pose.rotation()

    def pixel(point: np.ndarray) -> tuple[int, int]:
        p = K @ (R @ (point - pose.position))
        return int(p[0] / p[2]), int(p[1] / p[2])

    u, v = pixel(np.array([3.0, 3.0, 0.5]))
    assert ids[v, u] == 1
    half_diagonal = math.sqrt(0.5)  # the bounds reach this far along x and y; the rotated box does not fill the corners
    for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        u, v = pixel(np.array([3.0 + 0.85 * half_diagonal * dx, 3.0 + 0.85 * half_diagonal * dy, 0.5]))
        assert ids[v, u] == 0, (dx, dy)
    # ... while points along the box's own axes, inside it, are the box.
    for axis in (rotation[:, 0], rotation[:, 1]):
        for sign in (1, -1):
            u, v = pixel(np.array([3.0, 3.0, 0.5]) + sign * 0.4 * axis)
            assert ids[v, u] == 1


def test_mentioned_categories_prefer_longest_names_and_aliases() -> None:
    text = "which of these objects (coffee table, chair, coat rack, tv) is the closest to the table?"
    found = mentioned_categories(text, ["table", "coffee table", "chair", "coat hanger", "tv", "lamp"], {"coat rack": "coat hanger"})
    assert sorted(found) == ["chair", "coat hanger", "coffee table", "table", "tv"]
    assert mentioned_categories("How many chair(s) are in this room?", ["chair", "armchair"]) == ["chair"]


# ---------------------------------------------------------------- real layouts


def test_layout_scene_is_the_annotation_moved_rigidly(layouts) -> None:
    for name in select_scenes(layouts, 6, SEED):
        layout = layouts[name]
        built = build_layout_scene(layout, seed=SEED)
        room = built.scene.room
        assert len(built.boxes) == len(layout.objects) == len(built.scene.objects)
        original = np.array([o.centroid for o in layout.objects])
        moved = np.array([b.centroid for b in built.boxes])
        # Distances between centroids, sizes and vertical extents are kept: every geometric answer still holds.
        assert np.allclose(np.linalg.norm(original[:, None] - original[None], axis=2), np.linalg.norm(moved[:, None] - moved[None], axis=2), atol=1e-9)
        assert np.allclose(moved[:, 2] - moved[:, 2].min(), original[:, 2] - original[:, 2].min(), atol=1e-9)
        for before, after in zip(layout.objects, built.boxes):
            assert np.array_equal(before.axes_lengths, after.axes_lengths)
            assert np.allclose(after.rotation.T @ after.rotation, before.rotation.T @ before.rotation, atol=1e-9)
        corners = np.concatenate([b.corners for b in built.boxes])
        assert corners[:, 2].min() == pytest.approx(0.0, abs=1e-9)  # on the floor
        assert (corners[:, 0] > 0).all() and (corners[:, 0] < room.width).all()
        assert (corners[:, 1] > 0).all() and (corners[:, 1] < room.depth).all() and corners[:, 2].max() < room.height
        assert built.drawn_area == pytest.approx(room.width * room.depth)
        assert built.drawn_area >= layout.room_size - 1e-6  # grown to the annotated area when the objects span less
        # Six faces per box (none is flat here), all with unit outward normals pointing away from the centroid.
        faces = [f for f in built.faces if f.object_id > 0]
        assert len(faces) == 6 * len(built.boxes)
        for face in faces:
            centre = face.origin + (face.u + face.v) / 2
            assert np.linalg.norm(face.normal) == pytest.approx(1.0)
            assert face.normal @ (centre - built.boxes[face.object_id - 1].centroid) > 0


def test_manifest_keeps_the_real_questions_and_answers(generated, vsi_bench_dir) -> None:
    out, records, report = generated
    read, read_report = read_manifest(out / "manifest.parquet")
    assert len(read_report) == 0 and len(read) == len(records) >= 10
    assert read_manifest_metadata(out / "manifest.parquet")["kind"] == "real_layouts"
    rows = {f"vsi_{r['id']}": r for r in pq.read_table(vsi_bench_dir / "test-00000-of-00001.parquet").to_pylist()}
    scenes = {r.scene for r in records}
    assert len(scenes) == 2
    for record in records:
        row = rows[record.id]
        assert record.source == SOURCE and record.category in GEOMETRIC_CATEGORIES
        assert record.scene == row["scene_name"] and record.category == row["question_type"]
        assert record.question == row["question"]  # the real text, untouched
        if record.choices:
            assert [f"{l}. {c}" for l, c in zip("ABCD", record.choices)] == list(row["options"])
            assert record.answer == row["ground_truth"]
        else:
            assert record.answer == float(row["ground_truth"])
        assert Path(record.video).is_file() and Path(record.video).stem == record.scene
    for scene in scenes:
        assert len({r.split for r in records if r.scene == scene}) == 1
    # Every geometric question of the two scenes is either attached or reported with a reason; the rest are the
    # camera-path categories, reported as such.
    asked = [rid for rid, row in rows.items() if row["scene_name"] in scenes]
    assert len(asked) == len(records) + len(report)
    for record_id, reason in report.skipped:
        assert rows[record_id]["scene_name"] in scenes
        if rows[record_id]["question_type"] not in GEOMETRIC_CATEGORIES:
            assert reason.startswith("not geometric")
    captions = read_gt_captions(out / "manifest.parquet")
    assert set(captions) == {r.video for r in records}
    assert all(c.startswith("Frame 0: Observe: ") for c in captions.values())


def test_every_named_object_is_seen_in_its_video(generated, layouts) -> None:
    out, records, _ = generated
    from embodied_data.vsi.answers import CATEGORY_ALIASES

    for scene in {r.scene for r in records}:
        truth = json.loads((out / "videos" / f"{scene}.json").read_text())
        frames = read_video(out / "videos" / f"{scene}.mp4")
        assert len(frames) == len(truth["frames"]) >= 19 and frames[0].shape == (128, 128, 3)
        assert truth["frames"][0]["action"] is None and all(f["action"] for f in truth["frames"][1:])
        seen = {v["category"] for f in truth["frames"] for v in f["visible"]}
        seen_ids = {v["object_id"] for f in truth["frames"] for v in f["visible"]}
        categories = sorted({o["category"] for o in truth["objects"]})
        for record in (r for r in records if r.scene == scene and r.category != "room_size_estimation"):
            named = mentioned_categories(" ".join([record.question, *record.choices]), categories, CATEGORY_ALIASES)
            assert named and set(named) <= seen, (record.question, named, seen)
            for category in named:
                assert {o["id"] for o in truth["objects"] if o["category"] == category} <= seen_ids


def test_reuse_and_cli(generated, realdata, capsys: pytest.CaptureFixture) -> None:
    out, records, report = generated
    manifest = out / "manifest.parquet"
    stamp = manifest.stat().st_mtime_ns
    from embodied_data.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "real-layouts", "--out", str(out), "--scenes", "2", "--seed", str(SEED),
                              "--size", "128", "--realdata", str(realdata)])
    args.func(args)  # same parameters: the complete output is reused, not rendered again
    assert manifest.stat().st_mtime_ns == stamp
    printed = capsys.readouterr().out
    assert f"{len(records)} questions" in printed and "by category:" in printed
    assert f"questions not attached: {report.summary()}" in printed  # the reasons are kept with the output
    with pytest.raises(FileNotFoundError, match="meta_info"):
        generate_real_layouts(out / "other", num_scenes=1, realdata_dir=out / "nowhere", progress=False)
