"""Reads the policy's answer strictly from inside its first well-formed `<answer>...</answer>` pair and parses it as
an option letter or a number.

Nothing outside the `<answer>` tags is ever read: the released Embodied-R code searched the whole completion
case-insensitively, so "answer carefully" read as C, "e.g." as G and the article "a" as A. Inside the tags the
parsers are conservative too: an answer that could mean two things parses as None (scored 0 by the caller), never as
a guess.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

# The first <answer>...</answer> pair whose content holds no other <answer> tag ("well-formed"), so that
# "<answer> <answer>B</answer>" yields "B" and a stray open tag cannot swallow text up to a later close tag.
_ANSWER_RE = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.DOTALL)
_THINK_RE = re.compile(r"<think>((?:(?!<think>).)*?)</think>", re.DOTALL)

# A letter answer: "C", "(C)", "[C]", "C.", "C)", "C:", optionally followed by more text ("C. left").
#   bracketed: "(C)" / "[C]";  bare: the letter, then punctuation or whitespace or the end.
_LETTER_RE = re.compile(
    r"""^(?:[(\[](?P<bracketed>[A-Za-z])[)\]]       # (C) or [C]
        |(?P<bare>[A-Za-z])(?![A-Za-z0-9]))           # C not followed by a word character ("Cat", "C3" are not letters)
        (?P<punct>[.):,;]?)                           # optional punctuation right after the letter
        (?P<rest>.*)$""",
    re.DOTALL | re.VERBOSE,
)

# Numbers: 1,234.5 (thousands separators), 3.5, .5, 3 — with an optional sign.
_NUMBER_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+|\.\d+|\d+)")
_NUMBER_WORDS = {
    word: float(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}


def extract_answer(completion: str) -> str | None:
    """The stripped text of the first well-formed `<answer>...</answer>` pair, or None when there is none or it is empty."""
    match = _ANSWER_RE.search(completion)
    if match is None:
        return None
    text = match.group(1).strip()
    return text or None


def extract_think(completion: str) -> str | None:
    """The stripped text of the first well-formed `<think>...</think>` pair, or None when there is none or it is empty."""
    match = _THINK_RE.search(completion)
    if match is None:
        return None
    text = match.group(1).strip()
    return text or None


def _normalise_option(text: str) -> str:
    """Case-folded, whitespace-collapsed, without trailing sentence punctuation: how two option texts are compared."""
    return " ".join(text.strip().rstrip(".!;,").split()).casefold()


def _letter_for_option_text(answer_text: str, letters: str, choices: Sequence[str]) -> str | None:
    """The letter whose option text equals `answer_text` exactly (modulo case and spacing); None if none or several."""
    wanted = _normalise_option(answer_text)
    if not wanted:
        return None
    hits = [letter for letter, option in zip(letters, choices) if _normalise_option(option) == wanted]
    return hits[0] if len(hits) == 1 else None


def parse_choice_letter(answer_text: str | None, letters: str, choices: Sequence[str] | None = None) -> str | None:
    """The option letter that `answer_text` (the inside of `<answer>`) names, or None when it names none or is ambiguous.

    Accepted: "C", "C.", "(C)", "[C]", "C)", "c" (a lone letter in either case); "C. left", "c) left" (a letter and
    punctuation, then text, either case); "C left" (upper-case letter and a space) only when the text after it is
    option C's own text, since "A chair ..." is an article, not option A; and, when `choices` are given, the exact text
    of one option ("left"). A letter whose following text is exactly a *different* option's text ("C. right" when
    right is B) contradicts itself and is None, as is a letter outside `letters` or an abbreviation such as "e.g.".
    """
    if answer_text is None:
        return None
    text = answer_text.strip()
    if not text:
        return None
    letters = letters.upper()
    if choices is not None and len(choices) != len(letters):
        raise ValueError(f"{len(choices)} choices but {len(letters)} letters ({letters})")

    by_text = _letter_for_option_text(text, letters, choices) if choices else None
    match = _LETTER_RE.match(text)
    if match is None:
        return by_text
    letter_char = match.group("bracketed") or match.group("bare")
    letter = letter_char.upper()
    marked = bool(match.group("bracketed") or match.group("punct"))  # "(C)", "C.", "C)": clearly a letter
    rest = match.group("rest")
    if not rest.strip():
        return letter if letter in letters else None  # "C", "c", "C.", "(C)"
    if letter not in letters:
        return by_text
    if marked and (rest[0].isspace() or match.group("bracketed")):
        # "C. left", "(C) left": the letter counts unless the text names a different option.
        named = _letter_for_option_text(rest, letters, choices) if choices else None
        return None if named not in (None, letter) else letter
    if not marked and rest[0].isspace() and letter_char.isupper() and choices:
        # "C left": upper case and a space is a letter only when the text is that letter's own option.
        if _normalise_option(rest) == _normalise_option(choices[letters.index(letter)]):
            return letter
    # "e.g.", "C.left", "a chair", "A door is ...": an abbreviation or an article, not a letter.
    return by_text


def parse_number(answer_text: str | None) -> float | None:
    """The first number in `answer_text` ("3.5 m" -> 3.5, "about 2 meters" -> 2.0, "1,250" -> 1250.0), or a lone number
    word ("three" -> 3.0); None when there is none or it is not finite."""
    if answer_text is None:
        return None
    match = _NUMBER_RE.search(answer_text)
    if match is not None:
        value = float(match.group(0).replace(",", ""))
        return value if math.isfinite(value) else None
    word = answer_text.strip().rstrip(".!").strip().casefold()
    return _NUMBER_WORDS.get(word)
