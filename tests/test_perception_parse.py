"""The VLM prompts and the parser that turns any VLM answer into a usable FrameDescription."""

from __future__ import annotations

import random

import pytest

from perception.parse import match_action, parse_differential, parse_first_frame, split_numbered_items
from perception.prompts import ACTIONS, PROMPT_VERSION, differential_prompt, first_frame_prompt
from perception.types import FrameDescription, VideoDescription

QUESTION = "How far is the red building from the bridge?\nA. 1.5 m\nB. 20 m"


def test_prompts_question_aware_and_independent():
    assert PROMPT_VERSION
    aware_first, aware_diff = first_frame_prompt(QUESTION), differential_prompt(QUESTION)
    free_first, free_diff = first_frame_prompt(None), differential_prompt(None)
    for prompt in (aware_first, aware_diff):
        assert QUESTION in prompt and "don't answer this question" in prompt
    for prompt in (free_first, free_diff):
        assert "question:" not in prompt.lower() and "salient object" in prompt
    for prompt in (aware_diff, free_diff):
        assert "1. " in prompt and "2. " in prompt and "3. " in prompt and "before and after the action" in prompt
        for action in ACTIONS:
            assert action in prompt.lower(), action
    for prompt in (aware_first, free_first):
        assert "'to the left,' 'ahead-left,' or 'below,'" in prompt
    assert first_frame_prompt("{weird} {braces}").count("{weird} {braces}") == 1


@pytest.mark.parametrize(
    "text, action, observation, related",
    [
        ("1. Move forward.\n2. A red building 1.5 m ahead-left.\n3. The bridge is below.",
         "move forward", "A red building 1.5 m ahead-left.", "The bridge is below."),
        ("### 1. **Action:** Rotate left\n### 2. **Newly observed spatial information:** A bridge 2.0 metres to "
         "the right.\n### 3. **Question-related objects:** none", "rotate left",
         "A bridge 2.0 metres to the right.", "none"),
        ("1) tilt downward\n2) roads below\n3) cars", "tilt downward", "roads below", "cars"),
        ("(1) Ascending\n(2) rooftops below, 3.5 m\n(3) antenna", "move upward", "rooftops below, 3.5 m", "antenna"),
        ("1. move backward 2. a wall 1.5 m ahead 3. nothing", "move backward", "a wall 1.5 m ahead", "nothing"),
        ("Sure! Here is my analysis.\n1. The agent turned to the right.\n2. A tower appears ahead-right.",
         "rotate right", "A tower appears ahead-right.", ""),
        ("1. Move forward and rotate left\n2. A park ahead.", None, "A park ahead.", ""),
        ("1. Hover in place\n2. Same street.", None, "Same street.", ""),
        ("2. Trees to the left.\n3. The red car.", None, "Trees to the left.", "The red car."),
        ("1. Move upward\nThe city spreads below the agent.", "move upward", "The city spreads below the agent.", ""),
        ("Move forward.\nA red car to the left.", "move forward", "A red car to the left.", ""),
        ("1. Move left.\n2. The river is 1.5 m away.\n3. 2.0 m tall tree.\nExtra closing remark.", "move left",
         "The river is 1.5 m away.", "2.0 m tall tree. Extra closing remark."),
    ],
)
def test_parse_differential(text, action, observation, related):
    frame = parse_differential(text)
    assert frame.action == action
    assert frame.observation == observation
    assert frame.related_objects == related
    assert frame.raw == text


def test_unmapped_action_keeps_its_text():
    frame = parse_differential("1. Hover in place\n2. Same street.")
    assert frame.action is None and frame.action_text == "Hover in place"


def test_numbers_in_text_do_not_start_items():
    text = "The drone is 1.5 m above the road. 2.0 m to its left stands a 3.2 m lamp."
    assert split_numbered_items(text) == ({}, text)
    frame = parse_differential(text)
    assert frame.observation == text and frame.action is None


@pytest.mark.parametrize(
    "text, action",
    [("Move forward.", "move forward"), ("moving to the left", "move left"), ("The agent rotated right", "rotate right"),
     ("Tilt upward", "tilt upward"), ("tilted down", "tilt downward"), ("Forward", "move forward"),
     ("The camera looks down", "tilt downward"), ("descending", "move downward"), ("flew straight ahead", "move forward"),
     ("turn left", "rotate left"), ("Rotate left, then move forward", None), ("stay", None), ("", None),
     ("left", None), ("the building is to the left", None)],
)
def test_match_action(text, action):
    assert match_action(text) == action


def test_every_listed_action_maps_to_itself():
    for action in ACTIONS:
        assert match_action(action) == action
        assert match_action(action.capitalize() + ".") == action
        assert parse_differential(f"1. {action.title()}\n2. view").action == action


def test_gibberish_becomes_a_usable_description():
    rng = random.Random(0)
    alphabet = "abcdefghij 0123456789.\n\t)(#*-:\x00\x11\ufffd"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        for frame in (parse_first_frame(text), parse_differential(text)):
            assert isinstance(frame, FrameDescription)
            assert frame.action is None or frame.action in ACTIONS
            for field in (frame.observation, frame.related_objects, frame.action_text):
                assert "\n" not in field and "\x00" not in field and "\x11" not in field
    tiny_vlm_like = "V rotate behinve\x11dingigh Fft\ufffdQ ed8!\x11 ho"
    frame = parse_differential(tiny_vlm_like)
    assert frame.observation == "V rotate behinve dingigh Fft\ufffdQ ed8! ho" and frame.action is None


def test_first_frame_is_the_whole_answer_on_one_line():
    frame = parse_first_frame("A grey road ahead.\n\n**A red building** to the left.")
    assert frame.observation == "A grey road ahead. A red building to the left." and frame.action is None


def test_video_text_in_the_paper_shape():
    description = VideoDescription(
        video="v.mp4",
        frames=[parse_first_frame("A road ahead."), parse_differential("1. Move forward\n2. A bridge ahead.\n3. A car."),
                parse_differential("garbage")],
    )
    assert description.to_text().splitlines() == [
        "Frame 0: Observe: A road ahead.",
        "Frame 1: After move forward, Observe: A bridge ahead. A car.",
        "Frame 2: Observe: garbage",
    ]
