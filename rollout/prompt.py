"""Builds the reasoning model's prompt (Embodied-R's system prompt, role prompt, video text, question, choices), cut to a token budget by dropping the oldest frames."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from embodied_data.records import Record

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The User asks a question about a video, and the Assistant answers it. "
    "The Assistant first thinks about the reasoning process and then gives the answer. The reasoning process is "
    "enclosed within <think> </think> tags and the answer within <answer> </answer> tags, in exactly this form: "
    "<think> reasoning process here </think>\n<answer> answer here </answer>. "
    "The answer must follow logically from the reasoning process: never give an answer that the reasoning does not support."
)
ROLE_PROMPT = (
    "Please assume the role of an agent. The video represents your egocentric observations from the past to the present."
)
MULTIPLE_CHOICE_INSTRUCTION = "Answer with the letter of the correct option ({letters}) inside <answer> </answer>."
NUMERIC_INSTRUCTION = "Answer with a single number inside <answer> </answer>."

# A frame starts at a line beginning "Frame <i>:"; an observation may itself span several lines.
_FRAME_START = re.compile(r"(?m)^(?=Frame \d+:)")


@dataclass(frozen=True)
class PromptBuild:
    text: str  # the rendered chat prompt, generation prompt included
    token_ids: list[int]
    truncated: bool  # True when frames were dropped to fit max_prompt_tokens
    frames_dropped: int = 0


def split_frames(video_text: str) -> list[str]:
    """The video text as one string per key frame (`Frame i: ...`), in order; text before frame 0 is kept as its own part."""
    return [part.rstrip("\n") for part in _FRAME_START.split(video_text) if part.strip()]


def user_message(record: Record, frames: list[str]) -> str:
    """The user turn: role prompt, the video's frame lines, the question, the choices and how to answer."""
    lines = [ROLE_PROMPT, ""]
    if frames:
        lines += frames
        lines.append("")
    lines.append(f"Question: {record.question.strip()}")
    if record.is_numeric:
        lines.append(NUMERIC_INSTRUCTION)
    else:
        lines.append("Choices:")
        lines.append(record.choices_text())
        lines.append(MULTIPLE_CHOICE_INSTRUCTION.format(letters=", ".join(record.letters)))
    return "\n".join(lines)


def render_prompt(record: Record, frames: list[str], tokenizer) -> str:
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_message(record, frames)},
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _encode(tokenizer, text: str) -> list[int]:
    # The chat template already holds every special token the model needs; adding more (a BOS) would shift it.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def build_prompt(record: Record, video_text: str, tokenizer, max_prompt_tokens: int) -> PromptBuild:
    """Renders the prompt with the tokenizer's chat template; if it is longer than `max_prompt_tokens`, drops the oldest
    frames first (never the question or the choices) and logs a warning naming the record.

    Raises ValueError when even the prompt without any frame exceeds the budget.
    """
    if max_prompt_tokens <= 0:
        raise ValueError(f"max_prompt_tokens must be positive, got {max_prompt_tokens}")
    frames = split_frames(video_text)
    text = render_prompt(record, frames, tokenizer)
    token_ids = _encode(tokenizer, text)
    if len(token_ids) <= max_prompt_tokens:
        return PromptBuild(text=text, token_ids=token_ids, truncated=False)

    full_length = len(token_ids)
    # Binary search for the fewest dropped frames that fit: the length shrinks monotonically as frames go.
    low, high = 1, len(frames)
    best: tuple[int, str, list[int]] | None = None
    while low <= high:
        dropped = (low + high) // 2
        candidate_text = render_prompt(record, frames[dropped:], tokenizer)
        candidate_ids = _encode(tokenizer, candidate_text)
        if len(candidate_ids) <= max_prompt_tokens:
            best = (dropped, candidate_text, candidate_ids)
            high = dropped - 1
        else:
            low = dropped + 1
    if best is None:
        raise ValueError(
            f"record {record.id}: the prompt without any video frame is still longer than max_prompt_tokens="
            f"{max_prompt_tokens} ({len(_encode(tokenizer, render_prompt(record, [], tokenizer)))} tokens)"
        )
    dropped, text, token_ids = best
    log.warning(
        "record %s: prompt of %d tokens exceeds max_prompt_tokens=%d; dropped the %d oldest of %d frames (%d tokens left)",
        record.id, full_length, max_prompt_tokens, dropped, len(frames), len(token_ids),
    )
    return PromptBuild(text=text, token_ids=token_ids, truncated=True, frames_dropped=dropped)
