"""VSI-Bench answers computed from the real meta_info 3D layouts agree with the published ground truth; the geometry
behind them (bearings, sectors, closest points, VSI's box samples) is checked on hand-built layouts."""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embodied_data.cli import main as data_main
from embodied_data.vsi import VSIObject, VSISceneLayout, compute_answer, judge, load_meta_info, parse_scene
from embodied_data.vsi.agreement import run_agreement, write_report
from embodied_data.vsi.answers import CategoryDistances, Uncovered, numeric_tolerance
from embodied_data.vsi.geometry import (
    _min_pair_distance,
    box_distance,
    ccw_bearings,
    easy_direction,
    fused_multiply_add,
    hard_direction,
    medium_direction,
    point_box_distance,
    sampled_distance,
    shell_samples,
)


# The published templates (as in the parquet), so the parsers are exercised on the real wording.
HARD = (
    "If I am standing by the {a} and facing the {b}, is the {c} to my front-left, front-right, back-left, or "
    "back-right?\nThe directions refer to the quadrants of a Cartesian plane (if I am standing at the origin and "
    "facing along the positive y-axis)."
)
MEDIUM = (
    "If I am standing by the {a} and facing the {b}, is the {c} to my left, right, or back?\nAn object is to my back "
    "if I would have to turn at least 135 degrees in order to face it."
)
EASY = "If I am standing by the {a} and facing the {b}, is the {c} to the left or the right of the {b}?"
ABS = "Measuring from the closest point of each object, what is the distance between the {a} and the {b} (in meters)?"
REL = "Measuring from the closest point of each object, which of these objects ({listed}) is the closest to the {ref}?"
SIZE = "What is the length of the longest dimension (length, width, or height) of the {a}, measured in centimeters?"
COUNT = "How many {a}(s) are in this room?"
ROOM = (
    "What is the size of this room (in square meters)? \nIf multiple rooms are shown, estimate the size of the combined "
    "space."
)


def make_box(category: str, centre, size, yaw_degrees: float = 0.0, instance: int = 0) -> VSIObject:
    c, s = math.cos(math.radians(yaw_degrees)), math.sin(math.radians(yaw_degrees))
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return VSIObject(category, instance, np.array(centre, float), np.array(size, float), rotation)


def make_layout(objects: list[VSIObject], room_size: float = 20.0) -> VSISceneLayout:
    counts: dict[str, int] = {}
    for obj in objects:
        counts[obj.category] = counts.get(obj.category, 0) + 1
    return VSISceneLayout("hand", "test", room_size, np.zeros(3), counts, tuple(objects))


# Standing by the sofa at the origin, facing the tv straight along +y: left is -x, right is +x, back is -y.
ROOM_OBJECTS = [
    make_box("sofa", (0, 0, 0.4), (2.0, 0.9, 0.8)),
    make_box("tv", (0, 4, 1.0), (1.2, 0.1, 0.7)),
    make_box("lamp", (-2, 1.5, 0.8), (0.3, 0.3, 1.6)),  # front-left, left
    make_box("plant", (2, -1.5, 0.5), (0.4, 0.4, 1.0)),  # back-right, right
    make_box("bin", (-1.0, -3.0, 0.3), (0.3, 0.3, 0.6)),  # back-left, back (bearing about 162 degrees)
    make_box("desk", (3, 2, 0.375), (1.4, 0.7, 0.75), yaw_degrees=30),  # front-right, right
]


@pytest.fixture()
def room() -> VSISceneLayout:
    return make_layout(list(ROOM_OBJECTS))


# --- bearings and sectors ----------------------------------------------------------------------------------------


def test_bearings_are_counter_clockwise_from_the_facing_direction() -> None:
    points = np.array([[0, 5, 0], [-5, 0, 0], [0, -5, 0], [5, 0, 0], [-1, 1, 9]])
    angles = ccw_bearings(np.zeros(3), np.array([0, 2, 0]), points)
    np.testing.assert_allclose(angles, [0, 90, 180, 270, 45], atol=1e-9)  # z plays no part
    # the same scene seen from elsewhere: standing at (1, 1) facing (1, 0) (i.e. -y), the point (0, 1) is to the right
    assert ccw_bearings(np.array([1, 1, 0]), np.array([1, 0, 0]), np.array([[0, 1, 0]]))[0] == pytest.approx(270)


def test_sectors_are_half_open_counter_clockwise_from_ahead() -> None:
    assert [hard_direction(a) for a in (0, 89.9, 90, 179.9, 180, 269.9, 270, 359.9)] == [
        "front-left", "front-left", "back-left", "back-left", "back-right", "back-right", "front-right", "front-right"
    ]
    medium = [medium_direction(a) for a in (10, 134.9, 135, 224.9, 225, 350)]
    assert medium == ["left", "left", "back", "back", "right", "right"]
    assert [easy_direction(a) for a in (10, 170, 190, 350)] == ["left", "left", "right", "right"]


def test_direction_questions_on_a_hand_built_room(room: VSISceneLayout) -> None:
    expected = {
        "lamp": ("front-left", "left", "left"),
        "plant": ("back-right", "right", "right"),
        "bin": ("back-left", "back", "left"),
        "desk": ("front-right", "right", "right"),
    }
    for target, (hard, medium, easy) in expected.items():
        ask = dict(a="sofa", b="tv", c=target)
        assert compute_answer(room, "object_rel_direction_hard", HARD.format(**ask)).value == hard
        assert compute_answer(room, "object_rel_direction_medium", MEDIUM.format(**ask)).value == medium
        assert compute_answer(room, "object_rel_direction_easy", EASY.format(**ask)).value == easy
    # turning round (standing by the tv facing the sofa, i.e. along -y) mirrors left and right; the lamp, between the
    # two, stays in front
    assert compute_answer(room, "object_rel_direction_hard", HARD.format(a="tv", b="sofa", c="lamp")).value == "front-right"


# --- distances ---------------------------------------------------------------------------------------------------


def test_box_distance_on_known_configurations() -> None:
    cube = make_box("a", (0, 0, 0), (1, 1, 1))
    assert box_distance(cube, make_box("b", (2, 0, 0), (1, 1, 1))) == pytest.approx(1.0)  # face to face
    assert box_distance(cube, make_box("b", (2, 2, 2), (1, 1, 1))) == pytest.approx(math.sqrt(3))  # corner to corner
    assert box_distance(cube, make_box("b", (0.8, 0.2, 0), (1, 1, 1), yaw_degrees=20)) == 0.0  # overlapping
    # a cube turned 45 degrees points a vertical edge at its neighbour: 2 - sqrt(0.5) - 0.5
    turned = make_box("b", (2, 0, 0), (1, 1, 1), yaw_degrees=45)
    assert box_distance(cube, turned) == pytest.approx(1.5 - math.sqrt(0.5))
    # edge to edge, crossed: a bar along x above a bar along y
    bar_x, bar_y = make_box("a", (0, 0, 0), (4, 0.2, 0.2)), make_box("b", (0, 0, 1), (0.2, 4, 0.2))
    assert box_distance(bar_x, bar_y) == pytest.approx(0.8)


def test_box_distance_is_the_closest_pair_of_points_on_random_boxes() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        boxes = []
        for _ in range(2):
            q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # any 3D rotation, not only about z
            boxes.append(VSIObject("x", 0, rng.uniform(-1, 1, 3), rng.uniform(0.2, 1.0, 3), q * np.sign(np.linalg.det(q))))
        exact = box_distance(*boxes)
        # a's surface on a 2 cm grid: its closest point to b is never closer than the exact distance, and within a
        # grid cell of it
        surface = shell_samples(boxes[0], spacing=0.02, crop=False)
        approx = point_box_distance(surface, boxes[1]).min()
        assert exact <= approx + 1e-9
        assert approx - exact < 0.03


def test_pruned_closest_pair_equals_brute_force() -> None:
    rng = np.random.default_rng(5)
    for _ in range(10):
        a = make_box("a", rng.uniform(-1, 1, 3), rng.uniform(0.1, 0.6, 3), rng.uniform(0, 360))
        b = make_box("b", rng.uniform(-1, 1, 3) + [1.5, 0, 0], rng.uniform(0.1, 0.6, 3), rng.uniform(0, 360))
        p, q = shell_samples(a), shell_samples(b)
        brute = np.sqrt(((p[:, None, :] - q[None, :, :]) ** 2).sum(axis=2)).min()
        assert _min_pair_distance(p, q, a, b) == brute


def test_fused_multiply_add_rounds_once() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=3000), rng.normal(size=3000)
    c = -a * b * (1 + rng.normal(scale=1e-9, size=3000))  # heavy cancellation, where one rounding matters most
    exact = np.array([float(Fraction(x) * Fraction(y) + Fraction(z)) for x, y, z in zip(a, b, c)])
    fused = fused_multiply_add(a, b, c)
    assert np.array_equal(fused, exact)
    assert not np.array_equal(a * b + c, exact)  # two roundings differ: the emulation is doing something


def test_shell_samples_follow_vsi_grid() -> None:
    box = make_box("shelf", (0, 0, 0), (0.3, 0.2, 0.1))  # 6 x 4 x 2 grid points; at the origin, unrotated: no rounding
    samples = shell_samples(box)
    local = samples - box.centroid
    assert len(samples) == 6 * 4 * 2  # no inner core: with 2 points along z every point is on a top or bottom face
    np.testing.assert_allclose(np.abs(local).max(axis=0), [0.15, 0.1, 0.05])
    thin = shell_samples(make_box("poster", (0, 0, 1), (0.6, 0.02, 0.4)))  # 2 cm deep: one layer, at -depth/2
    np.testing.assert_allclose(thin[:, 1], -0.01)
    big = shell_samples(make_box("bed", (0, 0, 0.3), (2.0, 1.6, 0.6)))
    core = np.all(np.abs(big - [0, 0, 0.3]) <= np.array([2.0, 1.6, 0.6]) / 4 - 1e-9, axis=1)
    assert not core.any() and len(big) < 40 * 32 * 12  # the core was removed


def test_crop_drops_only_rounded_face_points() -> None:
    box = make_box("desk", (1.3, -0.7, 0.4), (1.37, 0.71, 0.76), yaw_degrees=33)
    kept, every = shell_samples(box), shell_samples(box, crop=False)
    assert len(kept) < len(every)
    kept_points = {tuple(p) for p in kept}
    assert kept_points <= {tuple(p) for p in every}
    dropped = np.array([p for p in every if tuple(p) not in kept_points])
    local = np.abs((dropped - box.centroid) @ box.rotation)
    on_face = np.isclose(local, box.axes_lengths / 2, atol=1e-12, rtol=0)
    assert on_face.any(axis=1).all()  # only points on a face, pushed out by the last bit of rounding
    # so the measured distance can grow by up to a grid step, never shrink
    neighbour = make_box("chair", (3.2, -0.4, 0.45), (0.5, 0.5, 0.9), yaw_degrees=-12)
    assert sampled_distance(box, neighbour) >= sampled_distance(box, neighbour, crop=False)
    assert sampled_distance(box, neighbour) >= box_distance(box, neighbour) - 1e-12


def test_numeric_questions_on_a_hand_built_room(room: VSISceneLayout) -> None:
    assert compute_answer(room, "object_size_estimation", SIZE.format(a="desk")).value == pytest.approx(140.0)
    assert compute_answer(room, "room_size_estimation", ROOM).value == 20.0
    chairs = [make_box("chair", (1, 1 + i, 0.4), (0.5, 0.5, 0.8), instance=i) for i in range(2)]
    two_chairs = make_layout(list(ROOM_OBJECTS) + chairs)
    assert compute_answer(two_chairs, "object_counting", COUNT.format(a="chair")).value == 2.0
    # sofa (x in [-1, 1], y in [-0.45, 0.45]) to plant (x in [1.8, 2.2], y in [-1.7, -1.3]): corner gap (0.8, 0.85)
    distance = compute_answer(room, "object_abs_distance", ABS.format(a="sofa", b="plant")).value
    assert distance == pytest.approx(math.hypot(0.8, 0.85), abs=0.03)  # samples sit on the faces, 5 cm apart at most


def test_relative_distance_measures_to_the_closest_instance() -> None:
    layout = make_layout(
        [
            make_box("bed", (0, 0, 0.3), (2.0, 1.5, 0.6)),
            make_box("chair", (5, 0, 0.4), (0.5, 0.5, 0.8), instance=0),  # far...
            make_box("chair", (0, 1.5, 0.4), (0.5, 0.5, 0.8), instance=1),  # ...and right by the bed (0.5 m gap)
            make_box("table", (0, -2.2, 0.4), (1.0, 0.8, 0.8)),  # 1.05 m
            make_box("lamp", (2.5, 0, 0.8), (0.3, 0.3, 1.6)),  # 1.35 m
        ]
    )
    question = REL.format(listed="table, chair, lamp", ref="bed")
    answer = compute_answer(layout, "object_rel_distance", question, ["table", "chair", "lamp"])
    assert answer.value == "chair"
    assert answer.details["distances"]["chair"] == pytest.approx(0.5, abs=0.03)
    assert answer.details["repeated_options"] == 1
    # measured from the far chair alone, the table would be the closest
    far_only = make_layout([o for o in layout.objects if not (o.category == "chair" and o.instance == 1)])
    assert compute_answer(far_only, "object_rel_distance", question, ["table", "chair", "lamp"]).value == "table"


def test_unanswerable_questions_name_their_cause(room: VSISceneLayout) -> None:
    with pytest.raises(Uncovered, match="not annotated"):
        compute_answer(room, "object_rel_direction_hard", HARD.format(a="sofa", b="tv", c="piano"))
    two_lamps = make_layout(list(ROOM_OBJECTS) + [make_box("lamp", (1, 1, 0.8), (0.3, 0.3, 1.6), instance=1)])
    with pytest.raises(Uncovered, match="several instances"):
        compute_answer(two_lamps, "object_rel_direction_easy", EASY.format(a="lamp", b="tv", c="sofa"))
    with pytest.raises(Uncovered, match="needs the video"):
        compute_answer(room, "obj_appearance_order", "What will be the first-time appearance order of ...?")
    with pytest.raises(Uncovered, match="template"):
        compute_answer(room, "object_counting", "Count the chairs.")


def test_judge_compares_option_text_and_rounded_numbers(room: VSISceneLayout) -> None:
    assert numeric_tolerance("2.9") == pytest.approx(0.05) and numeric_tolerance("62") == pytest.approx(0.5)
    row = {"id": 1, "scene_name": "hand", "question_type": "object_rel_direction_medium",
           "question": MEDIUM.format(a="sofa", b="tv", c="bin"), "options": ["A. left", "B. back", "C. right"]}
    assert judge(room, {**row, "ground_truth": "B"}).agree
    wrong = judge(room, {**row, "ground_truth": "A"})
    assert wrong.covered and not wrong.agree and wrong.cause == "target in another sector"
    size = {"id": 2, "scene_name": "hand", "question_type": "object_size_estimation",
            "question": SIZE.format(a="desk"), "options": None}
    assert judge(room, {**size, "ground_truth": "140"}).agree
    assert judge(room, {**size, "ground_truth": "141"}).cause == "one rounding step shorter"
    assert judge(room, {**size, "ground_truth": "n/a"}).cause == "published ground truth is not a number"
    assert judge(None, {**size, "ground_truth": "140"}).cause == "scene not in meta_info"


def test_meta_info_errors_name_scene_and_field(tmp_path: Path) -> None:
    box = {"centroid": [0, 0, 0], "axesLengths": [1, 1, 1], "normalizedAxes": [1, 0, 0, 0, 1, 0, 0, 0, 1]}
    with pytest.raises(ValueError, match=r"scene s1: .*chair\[0\]: missing centroid"):
        parse_scene("s1", {"room_size": 10, "object_bbox": {"chair": [{"axesLengths": [1, 1, 1]}]}})
    with pytest.raises(ValueError, match="scene s2: .*normalizedAxes should be 9"):
        parse_scene("s2", {"room_size": 10, "object_bbox": {"tv": [{**box, "normalizedAxes": [1, 0, 0]}]}})
    with pytest.raises(ValueError, match="scene s3: room_size"):
        parse_scene("s3", {"room_size": -1, "object_bbox": {}})
    path = tmp_path / "scannet_meta_info_val.json"
    path.write_text(json.dumps(["not", "a", "dict"]))
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_meta_info(path)
    # a box listed twice is one object
    scene = {"room_size": 9.5, "object_counts": {"printer": 1}, "object_bbox": {"printer": [box, box]}}
    path.write_text(json.dumps({"s4": scene}))
    layout = load_meta_info(path)["s4"]
    assert len(layout.instances("printer")) == 1 and layout.duplicates_dropped == 1
    assert layout.unique_categories == ["printer"]


def test_cli_reports_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def raw(obj: VSIObject) -> dict:
        return {"centroid": obj.centroid.tolist(), "axesLengths": obj.axes_lengths.tolist(),
                "normalizedAxes": obj.rotation.T.reshape(-1).tolist()}

    bbox: dict[str, list] = {}
    for obj in ROOM_OBJECTS:
        bbox.setdefault(obj.category, []).append(raw(obj))
    meta = {"hand": {"room_size": 20.04, "room_center": [0, 0, 0], "dataset": "arkitscenes",
                     "object_counts": {c: len(v) for c, v in bbox.items()}, "object_bbox": bbox}}
    (tmp_path / "arkitscenes_meta_info_val.json").write_text(json.dumps(meta))
    rows = [  # ground truths written by hand from the layout above; the last one is deliberately wrong
        ("object_rel_direction_hard", HARD.format(a="sofa", b="tv", c="lamp"), "B",
         ["A. back-left", "B. front-left", "C. front-right", "D. back-right"]),
        ("object_rel_direction_easy", EASY.format(a="sofa", b="tv", c="plant"), "B", ["A. left", "B. right"]),
        ("room_size_estimation", ROOM, "20.0", None),
        ("object_size_estimation", SIZE.format(a="sofa"), "200", None),
        ("object_counting", COUNT.format(a="lamp"), "3", None),
        ("route_planning", "You are a robot beginning at the sofa facing the tv. ...", "A",
         ["A. Turn Left, Turn Left", "B. Turn Back, Turn Left"]),
    ]
    table = pa.table({
        "id": list(range(len(rows))), "dataset": ["arkitscenes"] * len(rows), "scene_name": ["hand"] * len(rows),
        "question_type": [r[0] for r in rows], "question": [r[1] for r in rows],
        "ground_truth": [r[2] for r in rows], "options": [r[3] for r in rows],
    })
    pq.write_table(table, tmp_path / "vsi.parquet")
    out = tmp_path / "out" / "agreement.json"
    parquet = str(tmp_path / "vsi.parquet")
    data_main(["data", "vsi-agreement", "--out", str(out), "--parquet", parquet, "--meta-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "object_rel_direction_hard" in printed and "covered" in printed and "disagrees (1)" in printed
    result = json.loads(out.read_text())
    assert {t: (v["total"], v["covered"], v["agree"]) for t, v in result.items()} == {
        "object_rel_direction_hard": (1, 1, 1),
        "object_rel_direction_easy": (1, 1, 1),
        "room_size_estimation": (1, 1, 1),
        "object_size_estimation": (1, 1, 1),
        "object_counting": (1, 1, 0),
        "route_planning": (1, 0, 0),
    }
    causes = result["object_counting"]["disagreement_causes"]
    assert causes == {"meta_info (object_counts and boxes) differs from the published count": 1}
    assert not list(out.parent.glob(".tmp-*"))  # written atomically, no temp file left behind


# --- the real benchmark --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_report(vsi_bench_dir):
    return run_agreement(vsi_bench_dir / "test-00000-of-00001.parquet", vsi_bench_dir / "meta_info",
                         compare_methods=("sampled", "box", "centroid"), progress=False)


@pytest.mark.parametrize(
    "question_type",
    [
        "object_rel_direction_easy",
        "object_rel_direction_medium",
        "object_rel_direction_hard",
        "object_counting",
        "room_size_estimation",
        # not required by the targets, but reached: VSI's own closest-point measure and size convention
        "object_abs_distance",
        "object_rel_distance",
        "object_size_estimation",
    ],
)
def test_real_answers_reproduce_published_ground_truth(real_report, question_type: str) -> None:
    stats = real_report.by_type[question_type]
    assert stats.total > 100
    assert stats.coverage >= 0.95, (question_type, dict(stats.not_covered))
    assert stats.agreement >= 0.99, (question_type, dict(stats.disagreements))


def test_vsi_closest_point_is_its_cropped_box_samples(real_report) -> None:
    absolute = real_report.by_type["object_abs_distance"].agree_by_method
    relative = real_report.by_type["object_rel_distance"].agree_by_method
    # exact box-to-box distances round differently from VSI's samples on many absolute distances; centroids never fit
    assert absolute["sampled"] > absolute["box"] > absolute["centroid"]
    assert absolute["box"] < 0.9 * real_report.by_type["object_abs_distance"].covered
    assert relative["sampled"] >= relative["box"] > relative["centroid"]


def test_every_question_is_accounted_for(real_report, vsi_bench_dir) -> None:
    table = pq.read_table(vsi_bench_dir / "test-00000-of-00001.parquet", columns=["question_type"]).column("question_type").to_pylist()
    assert sum(s.total for s in real_report.by_type.values()) == len(table)
    for question_type, stats in real_report.by_type.items():
        assert stats.total == table.count(question_type)
        assert sum(stats.not_covered.values()) == stats.total - stats.covered
        assert sum(stats.disagreements.values()) == stats.covered - stats.agree
        assert all(cause for cause in list(stats.not_covered) + list(stats.disagreements))
    for video_only in ("obj_appearance_order", "route_planning"):
        assert real_report.by_type[video_only].covered == 0


def test_published_hard_directions_use_half_open_counter_clockwise_quadrants(real_report) -> None:
    """VSI's generator skips hard targets within 10 degrees below a quadrant's upper boundary, but not above one:
    the published bearings (our convention) show exactly that one-sided gap."""
    angles = np.array([v.details["angle"] for v in real_report.verdicts if v.question_type == "object_rel_direction_hard"])
    assert (90 - angles % 90).min() >= 10
    assert (angles % 90).min() < 5


def test_report_json_has_the_agreed_keys(real_report, tmp_path: Path) -> None:
    written = json.loads(write_report(real_report, tmp_path / "agreement.json").read_text())
    for question_type, stats in written.items():
        assert {"total", "covered", "agree"} <= set(stats)
        assert stats["agree"] <= stats["covered"] <= stats["total"]
    assert written["object_abs_distance"]["agree_by_distance_method"]["sampled"] == written["object_abs_distance"]["agree"]


def test_distances_are_memoised_per_scene(room: VSISceneLayout) -> None:
    distances = CategoryDistances(room)
    first = distances.between("sofa", "desk")
    assert distances.between("desk", "sofa") == first and len(distances._pairs) == 1
    with pytest.raises(ValueError, match="unknown distance method"):
        CategoryDistances(room, "manhattan")


def test_object_pose_helpers_for_renderers() -> None:
    desk = make_box("desk", (3, 2, 0.375), (1.4, 0.7, 0.75), yaw_degrees=30)
    assert desk.yaw == pytest.approx(math.radians(30))
    assert desk.footprint_size == pytest.approx((1.4, 0.7, 0.75))
    assert desk.longest_dimension == pytest.approx(1.4)
    np.testing.assert_allclose(desk.corners[:, 2].min(), 0.0, atol=1e-12)
    np.testing.assert_allclose(desk.corners.mean(axis=0), desk.centroid)
