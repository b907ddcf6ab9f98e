"""UrbanVideo-style Counterfactual questions of the synthetic world: wording, three options, and answers that agree
with an independent computation of where the target would be after the alternative action."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from embodied_data.synthetic import questions as Q
from embodied_data.synthetic.camera import STEP_YAW_DEGREES, Pose, random_path
from embodied_data.synthetic.groundtruth import FrameTruth, VisibleObject, frame_truth
from embodied_data.synthetic.render import Renderer
from embodied_data.synthetic.scene import Scene, generate_scene
from tests.hand_rooms import by_category, room_with

QUESTION = re.compile(
    r"If you do not (turn left|turn right|move to the left|move to the right|move forward|move backward) "
    r"(at the start|when the [a-z ]+ is [a-z -]+|[\d.]+ seconds into the video), but choose to "
    r"(turn left|turn right|move to the left|move to the right|move forward|move backward) instead for the same "
    r"time, can you still reach the ([a-z]+ [a-z]+)\? How does the time of the alternative route compare\?"
)


def small_room() -> Scene:
    """6 m x 6 m: a lamp in the east, a plant in the west, a tv in the north, a cabinet by the east wall south."""
    return room_with("cf", [
        ("lamp", "yellow", 5.3, 2.8, (0.4, 0.4, 1.5)),
        ("plant", "green", 0.3, 2.8, (0.4, 0.4, 1.0)),
        ("tv", "black", 2.4, 5.3, (1.2, 0.4, 1.2)),
        ("cabinet", "white", 4.2, 0.8, (0.6, 0.6, 1.0)),
    ])


def frames_along(scene: Scene, start: Pose, actions: list[str]) -> list[FrameTruth]:
    """Frames of a path that (as far as the questions know) show every object in every frame."""
    visible = tuple(VisibleObject(o.object_id, o.category, o.colour, 0.0, 0.0, 1.0, 0.05, (0, 0, 1, 1)) for o in scene.objects)
    frames, pose = [FrameTruth(0, 0.0, start, None, visible)], start
    for i, action in enumerate(actions, start=1):
        pose = pose.apply(action)
        frames.append(FrameTruth(i, i / 2, pose, action, visible))
    return frames


def test_outcomes_on_a_hand_placed_room() -> None:
    scene = small_room()
    lamp, plant, tv, cabinet = (by_category(scene, c) for c in ("lamp", "plant", "tv", "cabinet"))
    facing_north = Pose(3.0, 2.5, 1.5, 0.0, 0.0)
    # Turning right instead of left (by 40 degrees) turns towards the lamp in the east and away from the plant.
    assert Q.counterfactual_outcome(scene, facing_north, "rotate left", 2, lamp) == "less"
    assert Q.counterfactual_outcome(scene, facing_north, "rotate left", 2, plant) == "longer"
    assert Q.counterfactual_outcome(scene, facing_north, "rotate right", 2, plant) == "less"
    # The tv is straight ahead: either turn takes it 40 degrees off, so both routes take the same time: not asked.
    assert Q.counterfactual_outcome(scene, facing_north, "rotate left", 2, tv) is None
    # Walking: moving backward (south) instead of forward leaves the tv 1 m further away (4 steps more).
    assert Q.counterfactual_outcome(scene, facing_north, "move forward", 2, tv) == "longer"
    # Near the east wall, moving right instead of left runs into the wall; near the cabinet, into the cabinet.
    by_the_wall = Pose(5.2, 4.3, 1.5, 0.0, 0.0)
    assert Q.counterfactual_outcome(scene, by_the_wall, "move left", 2, plant) == "blocked:wall"
    north_of_cabinet = Pose(4.5, 2.0, 1.5, 0.0, 0.0)
    assert Q.counterfactual_outcome(scene, north_of_cabinet, "move forward", 2, tv) == "blocked:white cabinet"
    # Running into the target itself reaches it: not asked as "cannot reach".
    assert Q.counterfactual_outcome(scene, north_of_cabinet, "move forward", 2, cabinet) is None
    with pytest.raises(KeyError):
        Q.counterfactual_outcome(scene, facing_north, "tilt upward", 2, tv)


def test_action_segments_are_runs_of_one_action() -> None:
    scene = small_room()
    frames = frames_along(scene, Pose(3.0, 2.5, 1.5, 0.0, 0.0), ["rotate left"] * 2 + ["move forward"] * 3 + ["rotate right"])
    segments = Q.action_segments(frames)
    assert [(s.action, s.steps, s.start) for s in segments] == [("rotate left", 2, 1), ("move forward", 3, 3), ("rotate right", 1, 6)]


def test_turn_questions_agree_with_an_independent_bearing_computation() -> None:
    """For a turn segment the position does not change, so the alternative takes longer exactly when the target
    ends up further off the heading than after the actual turn (by more than the margin)."""
    scene = small_room()
    start = Pose(3.0, 2.5, 1.5, math.radians(30), 0.0)
    frames = frames_along(scene, start, ["rotate left"] * 2 + ["move forward"] * 2)
    kinds = set()
    for seed in range(40):
        question = Q.counterfactual(Q.QuestionContext(scene, frames, np.random.default_rng(seed)))
        assert question is not None and question.category == "Counterfactual"
        match = QUESTION.fullmatch(question.question)
        assert match, question.question
        done, moment, alternative, target_name = match.groups()
        assert len(question.choices) == 3 and len(set(question.choices)) == 3 and question.answer in "ABC"
        answer = question.choices["ABC".index(question.answer)]
        assert all(c.startswith(f"If I {alternative}, I ") for c in question.choices)
        target = next(o for o in scene.objects if o.name == target_name)
        if done == "turn left":
            assert moment == "at the start" and alternative == "turn right"
            to_target = target.centre[:2] - start.position[:2]
            target_yaw = math.atan2(-to_target[0], to_target[1])

            def off_heading(yaw: float) -> float:
                return abs((math.degrees(target_yaw - yaw) + 180) % 360 - 180)

            actual = off_heading(start.yaw + math.radians(2 * STEP_YAW_DEGREES))
            other = off_heading(start.yaw - math.radians(2 * STEP_YAW_DEGREES))
            assert abs(other - actual) >= Q.COUNTERFACTUAL_MARGIN_STEPS * STEP_YAW_DEGREES
            expected = "take longer" if other > actual else "less time"
            assert expected in answer, (question.question, answer, actual, other)
        kinds.add("cannot" if "cannot" in answer else ("longer" if "longer" in answer else "less"))
    assert {"longer", "less"} <= kinds  # answers are not all of one kind


def test_counterfactual_questions_on_rendered_walks() -> None:
    """Generated with the other categories on rendered random walks: about one per video, answers of every kind."""
    answers, asked = [], 0
    for seed in range(6):
        scene = generate_scene(seed)
        poses, actions, _ = random_path(scene, 11, np.random.default_rng(seed), steps_per_segment_unit=2)
        renderer = Renderer(scene, size=64)
        frames = [frame_truth(scene, p, renderer.render(p)[1], i, 2.0, a) for i, (p, a) in enumerate(zip(poses, actions))]
        questions = Q.generate_questions(scene, frames, np.random.default_rng(100 + seed), count=20)
        for q in (q for q in questions if q.category == "Counterfactual"):
            asked += 1
            match = QUESTION.fullmatch(q.question)
            assert match, q.question
            assert len(q.choices) == 3
            # The answer follows from the geometry: recompute it from the segment it names.
            segment = next(
                s for s in Q.action_segments(frames)
                if Q.COUNTERFACTUAL_WORDS.get(s.action) == match.group(1) and Q._moment_words(frames[s.start - 1]) == match.group(2)
            )
            target = next(o for o in scene.objects if o.name == match.group(4))
            outcome = Q.counterfactual_outcome(scene, frames[segment.start - 1].pose, segment.action, segment.steps, target)
            answer = q.choices["ABC".index(q.answer)]
            words = {"longer": "take longer", "less": "less time"}.get(outcome, "cannot reach")
            assert words in answer, (q.question, answer, outcome)
            answers.append(outcome.split(":")[0])
    assert asked >= 5 and len(set(answers)) >= 2
