"""Shared parts of the benchmark loaders: reading rows, splitting option lists out of question text, finding videos,
and finishing a load (split assignment, skip summary, counts)."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from embodied_data.categories import category_problem
from embodied_data.records import LETTERS, Record, SkipReport
from embodied_data.split import DEFAULT_RATIOS, assign_splits

log = logging.getLogger(__name__)

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


def read_parquet_rows(parquet_path: str | Path, required_columns: tuple[str, ...]) -> list[dict]:
    """The rows of a parquet file as dicts; raises ValueError naming the file and the missing columns."""
    table = pq.read_table(parquet_path)
    missing = [c for c in required_columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{parquet_path}: missing columns {missing}; it has {table.column_names}")
    return table.to_pylist()


def find_video(video_dir: str | Path | None, candidates: list[str]) -> Path | None:
    """The first of `candidates` (relative names) that exists under `video_dir`."""
    if video_dir is None:
        return None
    for name in candidates:
        path = Path(video_dir) / name
        if path.is_file():
            return path.resolve()
    return None


def missing_video_reason(wanted: str, video_dir: str | Path | None) -> str:
    """The skip reason of a record whose video `wanted` (the name(s) looked for) is not under `video_dir`."""
    where = f"under {video_dir}" if video_dir is not None else "(no video folder given)"
    return f"missing video: {wanted} {where}"


def check_row(
    category: object, video_dir: str | Path | None, candidates: list[str], wanted: str, allow_missing_videos: bool
) -> tuple[Path | None, str | None]:
    """A row's video (the first of `candidates` under `video_dir`, or None) and why the row is skipped (None when it is
    kept): its category is unknown, or its video is not found and `allow_missing_videos` is off (`wanted` names it)."""
    unknown = category_problem(category)
    if unknown is not None:
        return None, f"unknown category: {unknown}"
    found = find_video(video_dir, candidates)
    if found is None and not allow_missing_videos:
        return None, missing_video_reason(wanted, video_dir)
    return found, None


def record_with_inline_options(
    record_id: str, video: str, question_text: str, answer: object, category: str, scene: str, source: str
) -> Record:
    """A multiple-choice Record whose options are written inside `question_text` (UrbanVideo-Bench / Embodied-R
    style); the answer letter may carry spaces and a trailing '.'.  Raises ValueError naming what is wrong."""
    question, options = split_question_and_options(question_text)
    return Record(
        id=record_id,
        video=video,
        question=question,
        choices=tuple(options),
        answer=str(answer).strip().rstrip(".").upper(),
        category=category,
        scene=scene,
        source=source,
    )


def counts_summary(name: str, records: list[Record], report: SkipReport) -> str:
    """'vsi_bench: 5130 loaded, 0 records skipped' and a line per category."""
    lines = [f"{name}: {len(records)} loaded, {report.summary()}"]
    for category, n in sorted(Counter(r.category for r in records).items()):
        lines.append(f"  {category:32s} {n:6d}")
    return "\n".join(lines)


def finish_loading(
    name: str,
    source: str | Path,
    records: list[Record],
    report: SkipReport,
    split_seed: int | None = None,
    split_ratios: tuple[float, float, float] = DEFAULT_RATIOS,
    split: str = "test",
    verbose: bool = True,
) -> tuple[list[Record], SkipReport]:
    """The end of every loader: split the records, log the skip summary, print the counts when `verbose`.

    With `split_seed` set, records get a seeded scene-level train/val/test split; with None every record gets `split`.
    `name` labels the printed counts, `source` (the file read) the logged summary of skipped rows.
    """
    if split_seed is not None:
        records = assign_splits(records, split_seed, split_ratios)
    else:
        records = [dataclasses.replace(r, split=split) for r in records]
    if len(report):
        log.warning("%s: %s", source, report.summary())
    if verbose:
        print(counts_summary(name, records, report))
    return records, report
