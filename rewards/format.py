"""Format reward: 1.0 iff the whole completion is `<think>...</think>`, optional whitespace, `<answer>...</answer>`
and nothing else (surrounding whitespace allowed, no nested or repeated tags, a non-empty answer), else 0.0."""

from __future__ import annotations

import re

from rewards.answer import TAGS

_FORMAT_RE = re.compile(r"\A\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*\Z", re.DOTALL)


def format_reward(completion: str) -> float:
    match = _FORMAT_RE.match(completion)
    if match is None:
        return 0.0
    think, answer = match.group("think"), match.group("answer")
    # The lazy groups stop at the first closing tag, so any tag left inside a group is a nested or repeated one.
    if any(tag in think or tag in answer for tag in TAGS):
        return 0.0
    return 1.0 if answer.strip() else 0.0
