"""The synthetic world: geometry of the answers on a hand-placed room, camera actions, rendering that ORB can track,
the ground-truth captioner, and byte-for-byte determinism of the generated dataset."""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from embodied_data.manifest import read_gt_captions, read_manifest
from embodied_data.synthetic import questions as Q
from embodied_data.synthetic.camera import ACTIONS, STEP_METRES, STEP_YAW_DEGREES, Pose, pose_is_free, random_path
from embodied_data.synthetic.captioner import ground_truth_caption
from embodied_data.synthetic.dataset import generate_dataset, one_fps_indices
from embodied_data.synthetic.groundtruth import FrameTruth, VisibleObject, frame_truth
from embodied_data.synthetic.render import Renderer
from embodied_data.synthetic.scene import Scene, box_distance, generate_scene
from embodied_data.synthetic.video import read_video
from tests.hand_rooms import by_category, room_with

cv2.setNumThreads(1)


def hand_placed_scene() -> Scene:
    """A 6 m x 6 m room: a stool in the middle, the tv north of it, a lamp east, a plant west, a bookshelf south,
    a cabinet in the north-east corner and two chairs in the south-east; all sizes fixed."""
    return room_with("hand", [
        ("stool", "red", 2.8, 2.8, (0.4, 0.4, 0.5)),
        ("tv", "black", 2.4, 5.3, (1.2, 0.4, 1.2)),
        ("lamp", "yellow", 5.3, 2.8, (0.4, 0.4, 1.5)),
        ("plant", "green", 0.3, 2.8, (0.4, 0.4, 1.0)),
        ("bookshelf", "brown", 2.5, 0.3, (1.0, 0.4, 1.8)),
        ("cabinet", "white", 5.0, 5.0, (0.6, 0.6, 1.0)),
        ("chair", "blue", 4.0, 0.4, (0.5, 0.5, 0.9)),
        ("chair", "red", 4.8, 0.4, (0.5, 0.5, 0.9)),
    ])


def frames_seeing_in_order(scene: Scene, order: list[int]) -> list[FrameTruth]:
    """Frames that reveal one object each, in `order`, and keep showing the earlier ones."""
    pose = Pose(3.0, 2.0, 1.5, 0.0, 0.0)
    frames, shown = [], []
    for index, object_id in enumerate(order):
        shown.append(object_id)
        obj = scene.objects[object_id - 1]
        visible = tuple(
            VisibleObject(o, scene.objects[o - 1].category, scene.objects[o - 1].colour, 0.0, 0.0, 1.0, 0.05, (0, 0, 1, 1))
            for o in shown
        )
        frames.append(FrameTruth(index, index / 2, pose, None if index == 0 else "rotate left", visible))
        assert obj.object_id == object_id
    return frames


# ---------------------------------------------------------------- geometry of the answers


def test_direction_answers_on_a_hand_placed_room() -> None:
    scene = hand_placed_scene()
    stool, tv, lamp, plant, shelf, cabinet = (by_category(scene, c) for c in ("stool", "tv", "lamp", "plant", "bookshelf", "cabinet"))
    # Standing by the stool facing the tv (north): east is right, west is left, south is behind.
    assert Q.direction_label(Q.standing_facing_angle(stool, tv, lamp), "medium") == "right"
    assert Q.direction_label(Q.standing_facing_angle(stool, tv, plant), "medium") == "left"
    assert Q.direction_label(Q.standing_facing_angle(stool, tv, shelf), "medium") == "back"
    assert Q.direction_label(Q.standing_facing_angle(stool, tv, cabinet), "hard") == "front-right"
    # Facing the lamp (east) instead: the tv is to the left, the bookshelf to the right, the plant behind.
    assert Q.direction_label(Q.standing_facing_angle(stool, lamp, tv), "medium") == "left"
    assert Q.direction_label(Q.standing_facing_angle(stool, lamp, shelf), "easy") == "right"
    assert Q.direction_label(Q.standing_facing_angle(stool, lamp, plant), "medium") == "back"
    # Facing the plant (west): the cabinet (north-east) is back-right.
    assert Q.direction_label(Q.standing_facing_angle(stool, plant, cabinet), "hard") == "back-right"
    # Boundary cases are not asked: the tv is straight ahead of the stool when facing the tv.
    assert Q.direction_label(Q.standing_facing_angle(stool, tv, tv), "medium") is None
    assert Q.direction_label(135.0, "medium") is None and Q.direction_label(90.0, "hard") is None


def _names_in(question: str) -> tuple[str, str, str]:
    match = re.match(r"If I am standing by the (\w+) and facing the (\w+), is the (\w+) to", question)
    assert match, question
    return match.group(1), match.group(2), match.group(3)


def test_generated_direction_questions_agree_with_an_independent_computation() -> None:
    scene = hand_placed_scene()
    frames = frames_seeing_in_order(scene, [o.object_id for o in scene.objects])
    checked = 0
    for seed in range(25):
        ctx = Q.QuestionContext(scene, frames, np.random.default_rng(seed))
        for kind in ("medium", "easy", "hard"):
            question = getattr(Q, f"object_rel_direction_{kind}")(ctx)
            assert question is not None
            a, b, c = (by_category(scene, n) for n in _names_in(question.question))
            # Independent: rotate the scene so that "facing" is +y, then read the target's quadrant off x and y.
            facing = b.centre[:2] - a.centre[:2]
            target = c.centre[:2] - a.centre[:2]
            theta = math.atan2(facing[0], facing[1])  # clockwise angle of the facing direction from +y
            x = target[0] * math.cos(theta) - target[1] * math.sin(theta)
            y = target[0] * math.sin(theta) + target[1] * math.cos(theta)
            side = "right" if x > 0 else "left"
            expected = {
                "easy": side,
                "medium": "back" if math.degrees(math.atan2(abs(x), y)) >= 135 else side,
                "hard": ("front-" if y > 0 else "back-") + side,
            }[kind]
            chosen = question.choices["ABCD".index(question.answer)]
            assert chosen == expected, (question.question, question.choices, question.answer)
            assert len(question.choices) == len(Q.DIRECTION_OPTIONS[kind])
            checked += 1
    assert checked == 75


def test_closest_object_counting_and_appearance_order_on_a_hand_placed_room() -> None:
    scene = hand_placed_scene()
    tv, cabinet = by_category(scene, "tv"), by_category(scene, "cabinet")
    # The cabinet is the nearest thing to the tv by closest points: 1.4 m apart (tv x <= 3.6, y >= 5.3).
    assert box_distance(tv.bounds, cabinet.bounds) == pytest.approx(math.hypot(5.0 - 3.6, 0.0), abs=1e-6)
    order = [o.object_id for o in scene.objects]
    frames = frames_seeing_in_order(scene, order)
    for seed in range(10):
        ctx = Q.QuestionContext(scene, frames, np.random.default_rng(seed))
        q = Q.object_rel_distance(ctx)
        assert q is not None and len(q.choices) == 4
        reference = re.search(r"is the closest to the (\w+)\?", q.question).group(1)
        listed = re.search(r"objects \(([^)]*)\)", q.question).group(1).split(", ")
        assert listed == list(q.choices)  # VSI lists the options in the question in option order
        groups = scene.by_category()
        ref_box = groups[reference][0].bounds
        nearest = min(listed, key=lambda c: min(box_distance(ref_box, o.bounds) for o in groups[c]))
        assert q.choices[ord(q.answer) - ord("A")] == nearest
        if reference == "tv" and "cabinet" in listed:
            assert q.choices[ord(q.answer) - ord("A")] == "cabinet"

        count = Q.object_counting(ctx)
        category = re.match(r"How many (\w+)\(s\) are in this room\?", count.question).group(1)
        assert count.choices == () and count.answer == float(len(groups[category]))

        appearance = Q.obj_appearance_order(ctx)
        asked = appearance.question.split("in the video: ")[1].rstrip("?").split(", ")
        first_frame = {scene.objects[i - 1].category: k for k, i in reversed(list(enumerate(order)))}
        assert appearance.choices[ord(appearance.answer) - ord("A")] == ", ".join(sorted(asked, key=first_frame.get))
        assert len(appearance.choices) == 4 and len(set(appearance.choices)) == 4
    # Both chairs were seen, so counting chairs is answerable and the answer is 2.
    ctx = Q.QuestionContext(scene, frames, np.random.default_rng(0))
    assert "chair" in ctx.fully_seen and len(ctx.fully_seen["chair"]) == 2


def test_action_generation_turns_towards_an_off_axis_target_and_walks_to_one_ahead() -> None:
    scene = hand_placed_scene()
    lamp, tv = by_category(scene, "lamp"), by_category(scene, "tv")
    facing_north = Pose(3.0, 2.0, 1.5, 0.0, 0.0)
    assert Q.next_action_towards(facing_north, lamp) == "rotate right"  # the lamp is east
    assert Q.next_action_towards(facing_north, tv) == "move forward"  # the tv is 3.3 m ahead
    facing_east = Pose(3.0, 2.0, 1.5, -math.pi / 2, 0.0)
    assert Q.next_action_towards(facing_east, tv) == "rotate left"


def test_route_planning_turns_and_landmark_position() -> None:
    scene = hand_placed_scene()
    stool, tv, lamp, cabinet, shelf = (by_category(scene, c) for c in ("stool", "tv", "lamp", "cabinet", "bookshelf"))
    north, east, south = np.array([0.0, 1.0]), np.array([1.0, 0.0]), np.array([0.0, -1.0])
    assert Q.turn_label(north, east) == "Turn Right" and Q.turn_label(east, north) == "Turn Left"
    assert Q.turn_label(north, south) == "Turn Back" and Q.turn_label(north, north) is None
    # stool -> tv (north), tv -> cabinet (east: right), cabinet -> lamp (south: right again).
    legs = [tv.centre - stool.centre, cabinet.centre - tv.centre, lamp.centre - cabinet.centre]
    assert [Q.turn_label(legs[0], legs[1]), Q.turn_label(legs[1], legs[2])] == ["Turn Right", "Turn Right"]
    frames = frames_seeing_in_order(scene, [o.object_id for o in scene.objects])
    for seed in range(10):
        q = Q.route_planning(Q.QuestionContext(scene, frames, np.random.default_rng(seed)))
        m = re.match(r"You are a robot beginning at the (\w+) facing the (\w+)\. You want to navigate to the (\w+)\.", q.question)
        a, b, d = (by_category(scene, n) for n in m.groups())
        c = by_category(scene, re.search(r"3\. Go forward until the (\w+)", q.question).group(1))
        expected = f"{Q.turn_label(b.centre - a.centre, c.centre - b.centre)}, {Q.turn_label(c.centre - b.centre, d.centre - c.centre)}"
        assert q.choices[ord(q.answer) - ord("A")] == expected and len(set(q.choices)) == 4
    # At the last frame the camera stands south of the stool facing north: the bookshelf is behind it.
    last = [FrameTruth(0, 0.0, Pose(3.0, 2.0, 1.5, 0.0, 0.0), None, frames[-1].visible)]
    checked = 0
    for seed in range(30):
        q = Q.landmark_position(Q.QuestionContext(scene, last, np.random.default_rng(seed)))
        answer = q.choices[ord(q.answer) - ord("A")]
        if "bookshelf" in answer:
            assert answer == "The brown bookshelf is behind me."
            checked += 1
        if "tv" in answer:
            assert answer == "The black tv is directly in front of me."
            checked += 1
        assert len(q.choices) == 5
    assert checked >= 3


# ---------------------------------------------------------------- camera, renderer and ground truth


def test_each_action_is_a_known_pose_change() -> None:
    pose = Pose(3.0, 3.0, 1.5, 0.0, 0.0)
    assert pose.apply("move forward").y > pose.y and pose.apply("move forward").x == pytest.approx(pose.x)
    assert pose.apply("move right").x > pose.x and pose.apply("move left").x < pose.x
    assert pose.apply("move upward").z > pose.z
    assert pose.apply("rotate left").yaw > pose.yaw  # counter-clockwise from above
    assert pose.apply("tilt upward").pitch > pose.pitch
    assert math.degrees(pose.apply("rotate right").yaw) == pytest.approx(-STEP_YAW_DEGREES)
    assert pose.apply("move forward").y - pose.y == pytest.approx(STEP_METRES)
    # Facing east (turned right by 90 degrees), forward is +x and left is +y.
    turned = Pose(3.0, 3.0, 1.5, -math.pi / 2, 0.0)
    assert turned.apply("move forward").x - turned.x == pytest.approx(STEP_METRES)
    assert turned.apply("move left").y - turned.y == pytest.approx(STEP_METRES)
    opposites = [("move forward", "move backward"), ("move left", "move right"), ("rotate left", "rotate right"), ("tilt upward", "tilt downward")]
    for a, b in opposites:
        back = pose.apply(a).apply(b)
        assert np.allclose([back.x, back.y, back.z, back.yaw, back.pitch], [pose.x, pose.y, pose.z, pose.yaw, pose.pitch])
    with pytest.raises(ValueError, match="unknown action"):
        pose.apply("jump")


def test_random_path_replays_its_actions_and_stays_free() -> None:
    scene = generate_scene(5)
    poses, actions, segments = random_path(scene, 20, np.random.default_rng(1), steps_per_segment_unit=2)
    assert len(poses) == 21 and actions[0] is None
    for i in range(1, len(poses)):
        assert actions[i] in ACTIONS
        assert poses[i] == poses[i - 1].apply(actions[i])
        assert pose_is_free(scene, poses[i])
    assert sum(s.steps for s in segments) == 20
    assert all(s.steps % 2 == 0 for s in segments[:-1])  # one action per 1-fps sample at 2 fps
    assert all(a.action != b.action for a, b in zip(segments, segments[1:]))


def test_renderer_and_ground_truth_see_what_is_in_front() -> None:
    scene = hand_placed_scene()
    renderer = Renderer(scene, size=224)
    pose = Pose(3.0, 1.6, 1.5, 0.0, math.radians(-8))  # south of the stool, facing north
    image, ids = renderer.render(pose)
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    assert (ids >= 0).all()  # the room encloses the camera: every pixel shows something
    truth = frame_truth(scene, pose, ids, 0, 2.0, None)
    names = {v.category: v for v in truth.visible}
    assert {"stool", "tv"} <= set(names)
    assert "bookshelf" not in names  # behind the camera
    assert abs(names["tv"].bearing_deg) < 5 and names["tv"].direction_words() == "straight ahead"
    if "cabinet" in names:
        assert names["cabinet"].bearing_deg > 0  # north-east: to the right
    assert names["tv"].distance_m == pytest.approx(math.hypot(5.3 - 1.6, 1.5 - 1.2), abs=1e-3)  # to its top edge
    # The stool (closer, lower) occludes part of the tv's stand but both are drawn; the tv fills the centre column.
    tv_id = by_category(scene, "tv").object_id
    assert (ids[:, 112] == tv_id).any()


def test_captioner_writes_the_vlm_shape_and_merges_actions() -> None:
    scene = generate_scene(3)
    poses, actions, _ = random_path(scene, 7, np.random.default_rng(0), steps_per_segment_unit=2)
    renderer = Renderer(scene, size=96)
    frames = [frame_truth(scene, p, renderer.render(p)[1], i, 2.0, a) for i, (p, a) in enumerate(zip(poses, actions))]
    text, pairs = ground_truth_caption(frames, one_fps_indices(8, 2.0))
    assert one_fps_indices(8, 2.0) == [0, 2, 4, 6]
    lines = text.splitlines()
    assert len(lines) == len(pairs) == 4
    assert lines[0].startswith("Frame 0: Observe: ") and pairs[0][0] is None
    for i, (line, (action, observation)) in enumerate(zip(lines[1:], pairs[1:]), start=1):
        assert line == f"Frame {i}: After {action}, Observe: {observation}"
        assert action == actions[2 * i]  # segments are whole seconds, so one action per second
    _, all_pairs = ground_truth_caption(frames, [0, 7])
    steps = [a for a in actions[1:]]
    assert all_pairs[1][0] == " and ".join(a for k, a in enumerate(steps) if k == 0 or steps[k - 1] != a)


# ---------------------------------------------------------------- the generated dataset


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth_a")
    generate_dataset(str(out), num_scenes=3, seed=7, progress=False)
    return out


def test_dataset_manifest_videos_and_captions(dataset_dir: Path) -> None:
    records, report = read_manifest(dataset_dir / "manifest.parquet")
    assert len(report) == 0 and len(records) >= 12
    assert {r.source for r in records} == {"synthetic"} and len({r.scene for r in records}) == 3
    for scene in {r.scene for r in records}:
        assert len({r.split for r in records if r.scene == scene}) == 1
    for r in records:
        assert Path(r.video).is_file()
        if r.category == "object_rel_direction_medium":
            assert len(r.choices) == 3
        if r.category in ("object_rel_distance", "obj_appearance_order", "object_rel_direction_hard"):
            assert len(r.choices) == 4
        if r.category == "Action Generation":
            assert len(r.choices) == 7
        if r.category in ("Progress Evaluation", "Landmark Position"):
            assert len(r.choices) == 5
        if r.category == "object_counting":
            assert r.is_numeric and r.answer >= 1
    captions = read_gt_captions(dataset_dir / "manifest.parquet")
    assert set(captions) == {r.video for r in records}
    assert all(c.startswith("Frame 0: Observe: ") for c in captions.values())
    frames = read_video(records[0].video)
    assert len(frames) == 16 and frames[0].shape == (224, 224, 3)


def test_orb_matches_consecutive_frames(dataset_dir: Path) -> None:
    """The textures are rich enough for the key-frame extractor: ORB + brute-force Hamming with cross check finds
    more than 10 matches between most consecutive frames of the encoded videos."""
    orb = cv2.ORB_create()
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    counts = []
    for video in sorted((dataset_dir / "videos").glob("*.mp4")):
        frames = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in read_video(video)]
        descriptors = [orb.detectAndCompute(f, None)[1] for f in frames]
        for a, b in zip(descriptors, descriptors[1:]):
            counts.append(len(matcher.match(a, b)) if a is not None and b is not None else 0)
    good = sum(c > 10 for c in counts)
    assert good >= 0.9 * len(counts), counts


def test_same_seed_same_bytes_and_reuse(dataset_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "synth_b"
    generate_dataset(str(other), num_scenes=3, seed=7, progress=False)
    names = sorted(p.relative_to(dataset_dir) for p in dataset_dir.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
    for name in names:
        assert (dataset_dir / name).read_bytes() == (other / name).read_bytes(), name
    # A complete dataset with the same parameters is reused, not rendered again.
    manifest = other / "manifest.parquet"
    stamp = manifest.stat().st_mtime_ns
    video = next((other / "videos").glob("*.mp4"))
    video_stamp = video.stat().st_mtime_ns
    generate_dataset(str(other), num_scenes=3, seed=7, progress=False)
    assert manifest.stat().st_mtime_ns == stamp and video.stat().st_mtime_ns == video_stamp
    # Other parameters regenerate; another seed gives other videos.
    generate_dataset(str(other), num_scenes=3, seed=8, progress=False)
    assert manifest.read_bytes() != (dataset_dir / "manifest.parquet").read_bytes()


def test_cli_synth_prints_counts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import argparse

    from embodied_data.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "synth", "--out", str(tmp_path / "d"), "--scenes", "2", "--seed", "1", "--frames", "8"])
    args.func(args)
    out = capsys.readouterr().out
    records, _ = read_manifest(tmp_path / "d" / "manifest.parquet")
    assert f"{len(records)} questions" in out and "by category:" in out and "by split:" in out
    for category in {r.category for r in records}:
        assert category in out
