"""The reasoning prompt: the paper's system and role prompts, video text, question and choices through the chat
template, and truncation that drops the oldest frames first."""

from __future__ import annotations

import logging

import pytest

from cluster.tiny_models import train_tokenizer
from embodied_data.records import Record
from rollout.prompt import ROLE_PROMPT, SYSTEM_PROMPT, build_prompt, split_frames


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    texts = [f"Frame {i}: After move forward, Observe: a red chair is {side} of you, a table ahead." for i in range(40) for side in ("left", "right")]
    return AutoTokenizer.from_pretrained(train_tokenizer(texts, tmp_path_factory.mktemp("tok") / "tokenizer"))


def _record(**overrides) -> Record:
    fields = dict(
        id="scene7-q3",
        video="scene7.mp4",
        question="Where is the red chair relative to you now?",
        choices=("left", "right", "behind", "ahead"),
        answer="B",
        category="relative_direction",
        scene="scene7",
        source="synthetic",
    )
    fields.update(overrides)
    return Record(**fields)


def _video_text(num_frames: int) -> str:
    lines = ["Frame 0: Observe: a red chair to the left, a white table ahead."]
    for i in range(1, num_frames):
        lines.append(f"Frame {i}: After rotate left, Observe: view number {i} shows a lamp ahead-left and a door to the right.")
    return "\n".join(lines)


def test_prompt_holds_every_part_in_the_chat_template(tokenizer):
    video = _video_text(3)
    built = build_prompt(_record(), video, tokenizer, max_prompt_tokens=4096)
    assert not built.truncated and built.frames_dropped == 0
    text = built.text
    assert text.startswith("<|im_start|>system\n" + SYSTEM_PROMPT)
    assert text.endswith("<|im_start|>assistant\n")  # generation prompt
    user = text.split("<|im_start|>user\n", 1)[1]
    # order: role prompt, frames, question, choices
    positions = [user.index(part) for part in (ROLE_PROMPT, "Frame 0: Observe:", "Frame 2: After rotate left", "Question: Where is the red chair", "A. left\nB. right\nC. behind\nD. ahead")]
    assert positions == sorted(positions)
    assert "<think>" in SYSTEM_PROMPT and "<answer>" in SYSTEM_PROMPT
    assert built.token_ids == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_numeric_question_asks_for_a_number(tokenizer):
    record = _record(id="q-num", question="How far apart are the chair and the table, in meters?", choices=(), answer=2.5)
    built = build_prompt(record, _video_text(2), tokenizer, max_prompt_tokens=4096)
    assert "Answer with a single number" in built.text
    assert "Choices:" not in built.text and "A. " not in built.text


def test_too_long_prompt_drops_oldest_frames_first(tokenizer, caplog):
    record, video = _record(), _video_text(10)
    full = build_prompt(record, video, tokenizer, max_prompt_tokens=100_000)
    without_first_two = build_prompt(record, "\n".join(video.split("\n")[2:]), tokenizer, max_prompt_tokens=100_000)
    budget = len(without_first_two.token_ids)  # fits once exactly two frames are gone
    assert budget < len(full.token_ids)
    with caplog.at_level(logging.WARNING, logger="rollout.prompt"):
        built = build_prompt(record, video, tokenizer, max_prompt_tokens=budget)
    assert built.truncated and built.frames_dropped == 2
    assert len(built.token_ids) <= budget
    assert "Frame 0:" not in built.text and "Frame 1:" not in built.text
    assert "Frame 2: After rotate left" in built.text and "Frame 9: After rotate left" in built.text
    assert "Question: Where is the red chair" in built.text and "D. ahead" in built.text
    assert any("scene7-q3" in r.getMessage() and "dropped the 2 oldest" in r.getMessage() for r in caplog.records)


def test_prompt_that_cannot_fit_names_the_record(tokenizer):
    with pytest.raises(ValueError, match="record scene7-q3: the prompt without any video frame"):
        build_prompt(_record(), _video_text(4), tokenizer, max_prompt_tokens=20)


def test_multiline_observation_stays_with_its_frame():
    text = "Frame 0: Observe: a sofa\nand a rug below.\nFrame 1: After move forward, Observe: a door."
    assert split_frames(text) == ["Frame 0: Observe: a sofa\nand a rug below.", "Frame 1: After move forward, Observe: a door."]
