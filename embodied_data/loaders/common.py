"""Shared parts of the benchmark loaders: splitting option lists out of question text, and reporting counts."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from embodied_data.records import LETTERS, Record, SkipReport

_LETTER_PREFIX = re.compile(r"^\s*([A-J])\s*[.)]\s*")
# A header line before the options: "choose:", "Choice:", "Choices:", "Options:" (any case), possibly followed on the
# same line by the first option ("Choices: A. ..."), possibly with a stray "Answer:" before it.
_HEADER = re.compile(r"(?im)^[ \t]*(?:choose|choices?|options?)[ \t]*:[ \t]*")
_OPTION_START = re.compile(r"(?m)^[ \t]*(?:answer[ \t]*:[ \t]*)?([A-J])[ \t]*[.)][ \t]*")
_FENCE = re.compile(r'(?m)^[ \t]*(?:"""|```+|\'\'\')[ \t]*$')


def strip_letter_prefix(option: str) -> tuple[str | None, str]:
    """'A. chair' -> ('A', 'chair'); an option without a letter prefix -> (None, text)."""
    match = _LETTER_PREFIX.match(option)
    if not match:
        return None, option.strip()
    return match.group(1), option[match.end() :].strip()


def split_question_and_options(text: str) -> tuple[str, list[str]]:
    """Split a question whose options are written inside it into (question, option texts without letters).

    The options follow a header (choose:, Choice:, Choices:, Choose:, Options:) or start at a line beginning with
    "A."; each option runs until the next letter line, continuation lines joined by a space.  Raises ValueError when
    no option list A, B, C, ... in order is found.
    """
    cleaned = _FENCE.sub("", text).strip()
    header = _HEADER.search(cleaned)
    if header:
        question, block = cleaned[: header.start()], cleaned[header.end() :]
        block = "\n" + block  # the first option may sit on the header's line
    else:
        first = _OPTION_START.search(cleaned)
        if not first:
            raise ValueError("no options found: no header (choose:/Choices:/Options:) and no line starting with 'A.'")
        question, block = cleaned[: first.start()], "\n" + cleaned[first.start() :]
    starts = list(re.finditer(r"\n[ \t]*(?:answer[ \t]*:[ \t]*)?([A-J])[ \t]*[.)][ \t]*", block, flags=re.IGNORECASE))
    if not starts or block[: starts[0].start()].strip():
        raise ValueError("the option list does not start with 'A.' right after its header")
    letters = [m.group(1).upper() for m in starts]
    if "".join(letters) != LETTERS[: len(letters)]:
        raise ValueError(f"option letters {''.join(letters)} are not A, B, C, ... in order")
    options = []
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(block)
        options.append(" ".join(block[match.end() : end].split()))
    if any(not o for o in options):
        raise ValueError("an option is empty")
    if len(options) < 2:
        raise ValueError(f"only {len(options)} option found")
    question = re.sub(r"^\s*question\s*:\s*", "", question.strip(), flags=re.IGNORECASE).strip()
    if not question:
        raise ValueError("the question text before the options is empty")
    return question, options


def find_video(video_dir: str | Path | None, candidates: list[str]) -> Path | None:
    """The first of `candidates` (relative names) that exists under `video_dir`."""
    if video_dir is None:
        return None
    for name in candidates:
        path = Path(video_dir) / name
        if path.is_file():
            return path.resolve()
    return None


def counts_summary(name: str, records: list[Record], report: SkipReport) -> str:
    """'vsi_bench: 5130 loaded, 0 records skipped' and a line per category."""
    lines = [f"{name}: {len(records)} loaded, {report.summary()}"]
    for category, n in sorted(Counter(r.category for r in records).items()):
        lines.append(f"  {category:32s} {n:6d}")
    return "\n".join(lines)
