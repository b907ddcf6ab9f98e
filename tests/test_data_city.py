"""The synthetic city: drone flights render videos ORB can track, never enter a building, and the UrbanVideo
questions' answers agree with an independent computation; same seed, same bytes."""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from embodied_data.actions import ACTIONS
from embodied_data.manifest import read_gt_captions, read_manifest
from embodied_data.synthetic.camera import Pose
from embodied_data.synthetic.city import (
    ALTITUDE_LIMITS,
    CLEARANCE_METRES,
    LANDMARKS,
    drone_path,
    drone_pose_is_free,
    generate_city,
)
from embodied_data.synthetic.city_questions import (
    generate_city_questions,
    next_drone_action,
)
from embodied_data.synthetic.dataset import generate_dataset
from embodied_data.synthetic.groundtruth import frame_truth
from embodied_data.synthetic.render import Renderer
from embodied_data.synthetic.video import read_video

torch.set_num_threads(1)
cv2.setNumThreads(1)


@pytest.fixture(scope="module")
def city_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("city") / "a"
    generate_dataset(str(out), num_scenes=3, seed=11, questions_per_scene=6, progress=False, world="city")
    return out


def test_city_dataset_videos_truth_and_questions(city_dir: Path) -> None:
    records, report = read_manifest(city_dir / "manifest.parquet")
    assert not len(report) and records
    assert {r.category for r in records} <= {"Action Generation", "Landmark Position", "Progress Evaluation", "Counterfactual"}
    assert len({r.category for r in records}) >= 3
    expected_options = {"Action Generation": 7, "Landmark Position": 5, "Progress Evaluation": 5, "Counterfactual": 3}
    for r in records:
        assert len(r.choices) == expected_options[r.category], r
    frames = read_video(records[0].video)
    assert len(frames) == 16 and frames[0].shape == (224, 224, 3)
    truth = json.loads((city_dir / "videos" / f"{records[0].scene}.json").read_text())
    assert truth["world"] == "city"
    names = {f"{o['colour']} {o['category']}" for o in truth["objects"] if "description" in o}
    assert 4 <= len(names) <= len(LANDMARKS) and names <= set(LANDMARKS)
    # The ground-truth captioner runs unchanged: it names what the drone sees.
    captions = read_gt_captions(city_dir / "manifest.parquet")
    assert all(c.startswith("Frame 0: Observe: a ") for c in captions.values())
    assert any("building" in c for c in captions.values())


def test_orb_matches_consecutive_city_frames(city_dir: Path) -> None:
    orb = cv2.ORB_create()
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    counts = []
    for video in sorted((city_dir / "videos").glob("*.mp4")):
        descriptors = [orb.detectAndCompute(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), None)[1] for f in read_video(video)]
        for a, b in zip(descriptors, descriptors[1:]):
            counts.append(len(matcher.match(a, b)) if a is not None and b is not None else 0)
    assert len(counts) == 3 * 15
    assert sum(c > 10 for c in counts) >= 0.9 * len(counts), counts


def _inside(point: np.ndarray, lo: np.ndarray, hi: np.ndarray, margin: float = 0.0) -> bool:
    return bool(np.all(point >= lo - margin) and np.all(point <= hi + margin))


def test_drone_never_enters_a_building() -> None:
    seen_actions: Counter[str] = Counter()
    for seed in range(4):
        city = generate_city(seed)
        boxes = [(np.asarray(p.lo), np.asarray(p.hi)) for o in city.scene.objects for p in o.parts]
        poses, actions, _ = drone_path(city.scene, 80, np.random.default_rng(seed), 2)
        assert len(poses) == 81 and actions[0] is None and set(actions[1:]) <= set(ACTIONS)
        seen_actions.update(actions[1:])
        for a, b in zip(poses, poses[1:]):
            assert ALTITUDE_LIMITS[0] - 1e-6 <= b.z <= ALTITUDE_LIMITS[1] + 1e-6
            # Every point of the straight flight between two frames stays out of every box, with room to spare.
            for t in np.linspace(0.0, 1.0, 6):
                point = (1 - t) * a.position + t * b.position
                assert not any(_inside(point, lo, hi, 1.0) for lo, hi in boxes), (seed, point)  # 1 m to spare at least
    # The flights use the drone's actions: vertical moves and camera tilts, not only walking and turning.
    for action in ("move forward", "move upward", "move downward", "rotate left", "rotate right"):
        assert seen_actions[action] > 0, seen_actions
    assert seen_actions["tilt upward"] + seen_actions["tilt downward"] > 0, seen_actions


def test_renderer_sees_a_tall_landmark_straight_ahead() -> None:
    """From 80 m away at 58 m altitude, above every ordinary roof, a landmark taller than 60 m is in the middle of
    the frame, straight ahead in the ground truth, and the world's box around the city leaves no pixel empty."""
    city = generate_city(5)
    tall = [o for o in city.scene.objects if o.object_id in city.descriptions and o.bounds.hi[2] > 60]
    assert tall, "seed 5 has a red tower or a glass skyscraper"
    tower = tall[0]
    centre = tower.centre
    renderer = Renderer(city.scene, size=128, faces=city.faces)
    for dx, dy in ((-56.6, -56.6), (56.6, -56.6), (-56.6, 56.6), (56.6, 56.6)):
        x, y = centre[0] + dx, centre[1] + dy
        # Heading (-sin yaw, cos yaw) must point from (x, y) to the tower.
        pose = Pose(x, y, 58.0, math.atan2(dx, -dy), 0.0)
        if drone_pose_is_free(city.scene, pose):
            break
    image, ids = renderer.render(pose)
    truth = frame_truth(city.scene, pose, ids, 0, 2.0, None)
    seen = {v.object_id: v for v in truth.visible}
    assert tower.object_id in seen, [v.name for v in truth.visible]
    assert abs(seen[tower.object_id].bearing_deg) < 1.0 and ids[64, 64] == tower.object_id
    assert (ids >= 0).all() and image.min(axis=2).max() > 0


# ---- the answers, checked against an independent computation ----

SECTORS = (("directly in front of me", 0, 12), ("ahead of me, to the {side}", 25, 60), ("on my {side}", 75, 115), ("behind me", 150, 180))


def independent_bearing(pose: Pose, point: np.ndarray) -> float:
    """Bearing in degrees (positive right) from the camera's own axes: the rotation's right and forward rows."""
    rotation = pose.rotation()
    right, forward = rotation[0].copy(), rotation[2].copy()
    right[2] = forward[2] = 0.0
    offset = point - pose.position
    return math.degrees(math.atan2(float(offset @ right), float(offset @ forward)))


def independent_next_move(scene, pose: Pose, target) -> str | None:
    """Turn when off-axis by 35 degrees; when within 12 and farther than 20 m, sample the straight line every 0.25 m
    over the next 25 m: rise when a building (widened by the clearance) on it reaches the flight altitude."""
    bearing = independent_bearing(pose, target.centre)
    horizontal = float(np.hypot(*(target.centre[:2] - pose.position[:2])))
    if abs(bearing) >= 35:
        return "rotate right" if bearing > 0 else "rotate left"
    if abs(bearing) > 12 or horizontal <= 20:
        return None
    direction = (target.centre[:2] - pose.position[:2]) / horizontal
    steps = np.arange(0.0, min(25.0, horizontal) + 1e-9, 0.02)
    points = pose.position[:2] + steps[:, None] * direction  # samples x 2
    tops = [-math.inf]
    for obj in scene.objects:
        if obj.object_id == target.object_id:
            continue
        for part in obj.parts:
            lo, hi = np.asarray(part.lo[:2]) - CLEARANCE_METRES, np.asarray(part.hi[:2]) + CLEARANCE_METRES
            if np.any(np.all((points >= lo) & (points <= hi), axis=1)):
                tops.append(part.hi[2])
    needed = max(tops) + CLEARANCE_METRES
    if needed > pose.z + 2.0:
        return "move upward"
    if needed > pose.z - 2.0:
        return None
    return "move forward"


WORDS = {"I turn left.": "rotate left", "I turn right.": "rotate right", "I move forward.": "move forward", "I rise.": "move upward"}


def _flight_questions(seed: int):
    city = generate_city(seed)
    poses, actions, segments = drone_path(city.scene, 27, np.random.default_rng(100 + seed), 2, set(city.descriptions))
    renderer = Renderer(city.scene, size=96, faces=city.faces)
    frames = [frame_truth(city.scene, p, renderer.render(p)[1], i, 2.0, a) for i, (p, a) in enumerate(zip(poses, actions))]
    video = frames[:16]
    questions = generate_city_questions(city.scene, video, np.random.default_rng(seed), 40, segments, frames)
    return city, video, questions


def test_landmark_position_and_action_generation_agree_with_independent_geometry() -> None:
    checked: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    for seed in range(8):
        city, video, questions = _flight_questions(seed)
        last = video[-1].pose
        by_name = {o.name: o for o in city.scene.objects}
        seen = {v.object_id for f in video for v in f.visible}
        for q in questions:
            chosen = q.choices["ABCDEFG".index(q.answer)]
            if q.category not in ("Landmark Position", "Action Generation"):
                continue
            name = re.search(r"navigate to the (.+?)\.", q.question).group(1)
            target = by_name[name]
            assert target.object_id in seen  # asked only about what the video shows
            if q.category == "Landmark Position":
                bearing = independent_bearing(last, target.centre)
                words = next(w for w, lo, hi in SECTORS if lo <= abs(bearing) <= hi)
                assert chosen == f"The {name} is {words.format(side='right' if bearing > 0 else 'left')}.", (q, bearing)
            else:
                assert WORDS[chosen] == independent_next_move(city.scene, last, target), q
                answers[chosen] += 1
            checked[q.category] += 1
    assert checked["Landmark Position"] >= 4 and checked["Action Generation"] >= 4, checked
    assert len(answers) >= 2, answers  # not one answer every time


def test_next_drone_action_agrees_with_sampling_on_random_poses() -> None:
    """Over random free poses and every landmark: the same answer as the sampled computation, and every answer
    (turn left, turn right, fly forward, rise) occurs."""
    answers: Counter[str | None] = Counter()
    for seed in range(3):
        city = generate_city(seed)
        rng = np.random.default_rng(seed)
        landmarks = [o for o in city.scene.objects if o.object_id in city.descriptions]
        room = city.scene.room
        for _ in range(150):
            pose = Pose(float(rng.uniform(5, room.width - 5)), float(rng.uniform(5, room.depth - 5)),
                        float(rng.uniform(*ALTITUDE_LIMITS)), float(rng.uniform(-math.pi, math.pi)), 0.0)
            if not drone_pose_is_free(city.scene, pose):
                continue
            for target in landmarks:
                expected = independent_next_move(city.scene, pose, target)
                assert next_drone_action(city.scene, pose, target) == expected, (seed, pose, target.name)
                answers[expected] += 1
    for action in ("rotate left", "rotate right", "move forward", "move upward"):
        assert answers[action] >= 3, answers


def test_counterfactual_and_progress_questions_on_flights() -> None:
    kinds: Counter[str] = Counter()
    for seed in range(6):
        _, video, questions = _flight_questions(seed)
        for q in questions:
            chosen = q.choices["ABCDEFG".index(q.answer)]
            if q.category == "Counterfactual":
                kinds["blocked" if "cannot reach" in chosen else "longer" if "longer" in chosen else "less"] += 1
            if q.category == "Progress Evaluation":
                # The correct phrase is the action of the segment the last frame belongs to.
                assert chosen.startswith(f"I {video[-1].action} until "), (q, video[-1].action)
                kinds["progress"] += 1
    assert kinds["progress"] >= 1 and sum(kinds[k] for k in ("blocked", "longer", "less")) >= 3, kinds
    assert sum(1 for k in ("blocked", "longer", "less") if kinds[k]) >= 2, kinds


def test_same_seed_same_bytes_mixed_world_and_cli(city_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    again = tmp_path / "b"
    generate_dataset(str(again), num_scenes=3, seed=11, questions_per_scene=6, progress=False, world="city")
    for path in sorted(city_dir.rglob("*")):
        if path.is_file():
            assert (again / path.relative_to(city_dir)).read_bytes() == path.read_bytes(), path
    mixed = generate_dataset(str(tmp_path / "m"), num_scenes=2, seed=3, num_frames=6, size=64, progress=False, world="mixed")
    assert {r.scene for r in mixed} == {"synth3_0000", "city3_0001"}
    with pytest.raises(ValueError, match="unknown world"):
        generate_dataset(str(tmp_path / "x"), num_scenes=1, seed=0, world="moon", progress=False)

    from embodied_data.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "synth", "--out", str(tmp_path / "c"), "--scenes", "1", "--seed", "2", "--frames", "6", "--size", "64", "--world", "city"])
    args.func(args)
    records, _ = read_manifest(tmp_path / "c" / "manifest.parquet")
    assert records and all(r.scene == "city2_0000" for r in records)
    assert f"{len(records)} questions" in capsys.readouterr().out
    assert parser.parse_args(["data", "synth", "--out", "o", "--scenes", "1"]).world == "room"
