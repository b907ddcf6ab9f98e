"""Reads the policy's final answer -- the one `<answer>...</answer>` pair after its reasoning -- and parses it as one
option letter or one number, scoring anything that could name more than one (or none) as None.

Nothing outside the final answer is ever read: the released Embodied-R code searched the whole completion
case-insensitively, so "answer carefully" read as C, "e.g." as G and the article "a" as A, and an `<answer>` written
inside `<think>` counted. Inside the tags the parsers accept one reading or none, never a guess: "A, B, C, D" names
every option and so none of them, and "1e309" is not "1".

The final answer: the text after the last `</think>` (the whole completion when it has no think tag at all) must hold
exactly one `<answer>` followed by exactly one `</answer>` and no `<think>`. A completion whose `<think>` never closes,
or with two answer pairs after its reasoning ("<answer>A</answer><answer>B</answer>"), has no final answer.

Number grammar (the whole stripped answer, nothing else):
    answer   := number [ space* unit ]
    number   := sign? ( digits [ "." digits? ] | "." digits ) [ ("e" | "E") sign? digits ]
    sign     := "+" | "-"          digits := one or more of 0-9 (ASCII only)
    unit     := one of UNITS below (case-insensitive; not converted: the number must be in the question's unit)
So "3", "-2.5", ".5", "4.", "1e2", "1.5E-3", "1e+06", "3.5 m", "250cm", "12 square meters" parse; "about 3", "3 or 4",
"3,5", "1,250", "1_000", "0x3", "1/2", "three", "inf", "nan", "3 chairs" do not. A value float() cannot hold is rejected
too: overflow to infinity ("1e309") and a non-zero literal that underflows to 0 ("1e-400").
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

_THINK_RE = re.compile(r"<think>((?:(?!<think>).)*?)</think>", re.DOTALL)

# A letter answer: "C", "(C)", "[C]", "C.", "C)", "C:", optionally followed by more text ("C. left"), which the parser
# then checks is that letter's own option text.
#   bracketed: "(C)" / "[C]";  bare: the letter, then punctuation or whitespace or the end.
_LETTER_RE = re.compile(
    r"""^(?:[(\[](?P<bracketed>[A-Za-z])[)\]]       # (C) or [C]
        |(?P<bare>[A-Za-z])(?![A-Za-z0-9]))           # C not followed by a word character ("Cat", "C3" are not letters)
        (?P<punct>[.):,;]?)                           # optional punctuation right after the letter
        (?P<rest>.*)$""",
    re.DOTALL | re.VERBOSE,
)

# The number grammar of the module docstring; [0-9], not \d, because \d (and float()) also accept other scripts' digits.
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NUMBER_ANSWER_RE = re.compile(rf"(?P<number>{_NUMBER})(?:\s*(?P<unit>\S.*))?", re.DOTALL)
# Units of VSI-Bench's numeric questions (distances in meters, sizes in centimeters, room areas in square meters) and
# their usual spellings; tolerated after the number, never converted.
UNITS = frozenset(
    """m meter meters metre metres cm centimeter centimeters centimetre centimetres mm millimeter millimeters millimetre
    millimetres km kilometer kilometers kilometre kilometres ft foot feet in inch inches
    m2 m^2 m\u00b2 sqm""".split()
    + ["sq m", "square meter", "square meters", "square metre", "square metres",
       "ft2", "ft^2", "ft\u00b2", "sq ft", "square foot", "square feet"]
)


def extract_answer(completion: str) -> str | None:
    """The stripped text of the final answer (module docstring), or None when there is none or it is empty."""
    close = completion.rfind(THINK_CLOSE)
    if close >= 0:
        region = completion[close + len(THINK_CLOSE) :]
    elif THINK_OPEN in completion:
        return None  # the reasoning never closed: an <answer> in it is part of the thinking
    else:
        region = completion
    if THINK_OPEN in region or region.count(ANSWER_OPEN) != 1 or region.count(ANSWER_CLOSE) != 1:
        return None
    begin = region.index(ANSWER_OPEN) + len(ANSWER_OPEN)
    end = region.index(ANSWER_CLOSE)
    if end < begin:
        return None
    text = region[begin:end].strip()
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


def _letter_reading(text: str, letters: str, choices: Sequence[str] | None) -> str | None:
    """The letter `text` names by letter syntax: a lone letter ("C", "c", "C.", "(C)"), or a letter followed by that
    same letter's own option text ("C. left", "(C) left", "C left"); None for anything else."""
    match = _LETTER_RE.match(text)
    if match is None:
        return None
    letter_char = match.group("bracketed") or match.group("bare")
    letter = letter_char.upper()
    if letter not in letters:
        return None
    rest = match.group("rest")
    if not rest.strip():
        return letter  # "C", "c", "C.", "(C)"
    if choices is None:
        return None  # the text after the letter cannot be checked against its option, so it could name another
    if _normalise_option(rest) != _normalise_option(choices[letters.index(letter)]):
        return None  # "A, B, C, D", "A. left, B. right", "(A) or (B)", "C, because ...": not one option's own words
    bracketed, punct = bool(match.group("bracketed")), bool(match.group("punct"))
    if bracketed or (punct and rest[0].isspace()):
        return letter  # "(C) left", "(C)left", "C. left", "c) left"
    if not punct and rest[0].isspace() and letter_char.isupper():
        return letter  # "C left"; lower case "a left" reads as an article, "C.left" as an abbreviation
    return None


def parse_choice_letter(answer_text: str | None, letters: str, choices: Sequence[str] | None = None) -> str | None:
    """The one option letter that `answer_text` (the final answer's text) names, or None when it names none or could
    name more than one.

    Two readings, which must agree when both exist: by letter, a lone letter in either case ("C", "c", "C.", "(C)",
    "[C]", "C)", "C:"), or the letter followed by its own option text ("C. left", "c) left", "(C) left", and "C left"
    in upper case only, since "a left" is an article); by text (only when `choices` are given), the exact text of one
    option ("left", modulo case, spacing and trailing punctuation). Anything else is None: a second letter or option
    ("A, B", "A; B", "(A) or (B)", "A. left, B. right"), a letter with another option's text ("C. right"), a letter
    with any words that are not its option's text ("C, because ...", or any text at all without `choices`), a letter
    outside `letters`, an abbreviation ("e.g."), prose ("I think C").
    """
    if answer_text is None:
        return None
    text = answer_text.strip()
    if not text:
        return None
    letters = letters.upper()
    if choices is not None and len(choices) != len(letters):
        raise ValueError(f"{len(choices)} choices but {len(letters)} letters ({letters})")
    by_letter = _letter_reading(text, letters, choices)
    by_text = _letter_for_option_text(text, letters, choices) if choices else None
    if by_letter is not None and by_text is not None and by_letter != by_text:
        return None  # e.g. option B's text is "A": "A" could be either
    return by_letter or by_text


def parse_number(answer_text: str | None) -> float | None:
    """The number that `answer_text` is, by the grammar of the module docstring (a number, optionally followed by one
    unit word); None when the text is anything else or the value is not a finite float."""
    if answer_text is None:
        return None
    match = _NUMBER_ANSWER_RE.fullmatch(answer_text.strip())
    if match is None:
        return None
    unit = match.group("unit")
    if unit is not None and " ".join(unit.split()).casefold() not in UNITS:
        return None
    literal = match.group("number")
    value = float(literal)
    if not math.isfinite(value):
        return None  # "1e309" overflows to infinity
    mantissa = re.split("[eE]", literal)[0]
    if value == 0.0 and any(digit in "123456789" for digit in mantissa):
        return None  # "1e-400" underflows to 0: float cannot hold it, and 0 is not what it says
    return value
