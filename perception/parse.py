"""Turns the VLM's answers into FrameDescriptions: any text at all yields a usable description, never an exception.

Differential answers are read as numbered items ("1. <action>", "2. <new spatial information>", "3. <question-related
objects>"), with markdown decorations ("### 1.", "**1.**", "(1)", "1)") allowed.  An item marker must be a number
1-3 followed by ".", ")" or ":" and *not* by a digit, so "1.5 m" or "2.0 metres" never starts an item; markers at
line starts are preferred, inline ones ("... forward. 2. A red ...") are the fallback.  Missing items stay empty;
text outside the items is kept as the observation when item 2 is missing; a short label such as "Action:" is
dropped.  With no numbered item at all, the whole text is the observation (this is what a random-weight VLM's
gibberish becomes), unless its first line is just an action.

Actions: the raw text of item 1 is kept in `action_text`; `action` is the listed action (prompts.ACTIONS) it names
when that is obvious -- exactly one listed action phrase in it ("Move forward.", "The agent moved to the left"), or,
failing that, exactly one unambiguous synonym ("turned left" -> rotate left, "ascended" -> move upward, "looked down"
-> tilt downward, a bare "Forward").  Several different actions ("move forward and rotate left") or none -> None.
"""

from __future__ import annotations

import re
import unicodedata

from perception.prompts import ACTIONS
from perception.types import FrameDescription

# "1." / "1)" / "1:" / "(1)" not followed by a digit, optionally after markdown ("###", "**", "-", ">").
_NUMBER = r"(?:\((?P<a>[1-3])\)|(?P<b>[1-3])[.):](?!\d))"
_LINE_MARKER = re.compile(r"(?m)^[ \t]*(?:[#>*\-][#>*\- \t]*)?" + _NUMBER + r"(?:\*\*)?")
_INLINE_MARKER = re.compile(r"(?:(?<=\s)|^)(?:\*\*)?" + _NUMBER + r"(?:\*\*)?(?=\s)")
_LABEL = re.compile(
    r"^\W*(?P<label>[A-Za-z][A-Za-z /'\-]{0,48}?)\W*:\W*",
)
_LABEL_WORDS = ("action", "movement", "motion", "new", "observ", "spatial", "information", "object", "question",
                "related", "description", "view", "change")

_DIRECTION = r"(?:to\s+the\s+)?"
# Exact forms of the listed actions (with inflections), each -> its listed action.
_EXACT: list[tuple[re.Pattern, str]] = [
    (re.compile(rf"\bmov(?:e|es|ed|ing)\s+{_DIRECTION}{word}s?\b"), f"move {canonical}")
    for word, canonical in [("forward", "forward"), ("backward", "backward"), ("left", "left"), ("right", "right"),
                            ("upward", "upward"), ("downward", "downward"), ("up", "upward"), ("down", "downward"),
                            ("back", "backward")]
] + [
    (re.compile(rf"\brotat(?:e|es|ed|ing)\s+{_DIRECTION}{side}\b"), f"rotate {side}") for side in ("left", "right")
] + [
    (re.compile(rf"\btilt(?:s|ed|ing)?\s+{word}(?:wards?)?\b"), f"tilt {word}ward") for word in ("down", "up")
]
_VERB = r"(?:go|goes|went|going|fly|flies|flew|flying|travel\w*|head\w*|proceed\w*|shift\w*|strafe\w*|slid\w*|translat\w*|step\w*|drift\w*)"
_SYNONYMS: list[tuple[re.Pattern, str]] = [
    (re.compile(rf"\b{_VERB}\s+(?:straight\s+)?(?:forwards?|ahead|straight)\b"), "move forward"),
    (re.compile(r"\badvanc\w*\b"), "move forward"),
    (re.compile(rf"\b{_VERB}\s+back(?:wards?)?\b"), "move backward"),
    (re.compile(r"\bretreat\w*\b|\breversed?\b"), "move backward"),
    (re.compile(rf"\b{_VERB}\s+{_DIRECTION}left\b"), "move left"),
    (re.compile(rf"\b{_VERB}\s+{_DIRECTION}right\b"), "move right"),
    (re.compile(rf"\b(?:{_VERB}|rise|rises|rose|rising|climb\w*|elevat\w*)\s+up(?:wards?)?\b|\bascen\w*\b"), "move upward"),
    (re.compile(rf"\b(?:{_VERB}|drop\w*|sink\w*|lower\w*)\s+down(?:wards?)?\b|\bdescen\w*\b"), "move downward"),
    (re.compile(rf"\b(?:turn\w*|yaw\w*|pan\w*|spin\w*|swivel\w*)\s+{_DIRECTION}left\b"), "rotate left"),
    (re.compile(rf"\b(?:turn\w*|yaw\w*|pan\w*|spin\w*|swivel\w*)\s+{_DIRECTION}right\b"), "rotate right"),
    (re.compile(r"\b(?:look\w*|pitch\w*|angl\w*|point\w*|camera)\s+down(?:wards?)?\b"), "tilt downward"),
    (re.compile(r"\b(?:look\w*|pitch\w*|angl\w*|point\w*|camera)\s+up(?:wards?)?\b"), "tilt upward"),
]
# A bare direction is an action only when it is (almost) all the text says: "Forward." / "Upward".
_BARE = {"forward": "move forward", "forwards": "move forward", "backward": "move backward",
         "backwards": "move backward", "upward": "move upward", "upwards": "move upward",
         "downward": "move downward", "downwards": "move downward", "ascend": "move upward", "descend": "move downward"}

def parse_first_frame(text: str) -> FrameDescription:
    """Key frame 0: the whole answer is the observation."""
    return FrameDescription(observation=clean_text(text), action=None, raw=text)


def parse_differential(text: str) -> FrameDescription:
    """Key frame i > 0: action (item 1), newly observed spatial information (item 2), question-related objects (item 3)."""
    items, outside = split_numbered_items(text)
    if not items:
        first_line, _, rest = text.strip().partition("\n")
        action = _bare_action(first_line)
        if action is not None:
            return FrameDescription(observation=clean_text(rest), action=action, action_text=clean_text(first_line), raw=text)
        return FrameDescription(observation=clean_text(text), action=None, raw=text)
    action_text = items.get(1, "")
    observation = items.get(2, "")
    if not observation:
        # Item 2 missing: an action item that runs on over several lines carries the observation after its first line.
        first_line, _, rest = action_text.strip().partition("\n")
        if rest.strip():
            action_text, observation = first_line, rest
        observation = " ".join(part for part in (observation, outside) if part.strip())
    return FrameDescription(
        observation=clean_text(_strip_label(observation)),
        action=match_action(_strip_label(action_text)),
        related_objects=clean_text(_strip_label(items.get(3, ""))),
        action_text=clean_text(_strip_label(action_text)),
        raw=text,
    )


def split_numbered_items(text: str) -> tuple[dict[int, str], str]:
    """Items 1-3 of a numbered answer (by number) and the text outside them; ({}, text) when there are none."""
    at_line_starts = _increasing_markers(_LINE_MARKER, text)
    inline = _increasing_markers(_INLINE_MARKER, text)
    # Line-start markers win unless they find a single item where inline markers find several (a one-line answer).
    # An inline "2." alone is too weak a signal (it may end a sentence), so inline needs two markers.
    if len(at_line_starts) >= 2 or (at_line_starts and len(inline) < 2):
        chosen = at_line_starts
    elif len(inline) >= 2:
        chosen = inline
    else:
        return {}, text
    items = {}
    for k, (number, _, end) in enumerate(chosen):
        stop = chosen[k + 1][1] if k + 1 < len(chosen) else len(text)
        items[number] = text[end:stop].strip()
    return items, text[: chosen[0][1]].strip()


def _increasing_markers(pattern: re.Pattern, text: str) -> list[tuple[int, int, int]]:
    """(number, start, end) of the markers whose numbers strictly increase, in order of appearance."""
    chosen: list[tuple[int, int, int]] = []
    for match in pattern.finditer(text):
        number = int(match.group("a") or match.group("b"))
        if not chosen or number > chosen[-1][0]:
            chosen.append((number, match.start(), match.end()))
    return chosen


def match_action(text: str) -> str | None:
    """The listed action `text` obviously names, else None (see the module docstring)."""
    normalized = _normalize(text)
    if not normalized:
        return None
    for table in (_EXACT, _SYNONYMS):
        found = {action for pattern, action in table if pattern.search(normalized)}
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            return None  # several actions named: not obvious which one
    return _bare_action(text)


def clean_text(text: str) -> str:
    """One line of printable text: control characters dropped, markdown emphasis removed, whitespace collapsed."""
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    text = text.replace("**", "").replace("__", "")
    return " ".join(text.split())


def _bare_action(text: str) -> str | None:
    words = _normalize(text).split()
    if len(words) == 2 and " ".join(words) in ACTIONS:
        return " ".join(words)
    if 1 <= len(words) <= 2 and words[-1] in _BARE and (len(words) == 1 or words[0] in ("the", "agent", "move")):
        return _BARE[words[-1]]
    return None


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^a-z]+", " ", text.lower()).split())


def _strip_label(item: str) -> str:
    """Drops a leading label such as "**Action:**" or "Newly observed spatial information:"."""
    match = _LABEL.match(item)
    if match and any(word in match.group("label").lower() for word in _LABEL_WORDS):
        return item[match.end():]
    return item
