"""Load the VSI-Bench test parquet (one question per row) into Records, videos looked up by scene name."""

from __future__ import annotations

import math
from pathlib import Path

from embodied_data.loaders.common import (
    check_row,
    finish_loading,
    read_parquet_rows,
    strip_letter_prefix,
)
from embodied_data.records import LETTERS, Record, SkipReport
from embodied_data.split import DEFAULT_RATIOS

REQUIRED_COLUMNS = ("id", "dataset", "scene_name", "question_type", "question", "ground_truth", "options")


def _record(row: dict, video: str) -> Record:
    """One row as a Record; raises ValueError naming what is wrong."""
    options = row.get("options")
    truth = row.get("ground_truth")
    if truth is None or not str(truth).strip():
        raise ValueError("empty ground_truth")
    truth = str(truth).strip()
    common = dict(
        id=f"vsi_{row['id']}",
        video=video,
        question=str(row["question"] or ""),
        category=str(row["question_type"]),
        scene=str(row["scene_name"]),
        source="vsi_bench",
    )
    if not options:
        try:
            value = float(truth)
        except ValueError:
            raise ValueError(f"numeric question with a non-numeric ground_truth {truth!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"ground_truth {truth!r} is not finite")
        return Record(choices=(), answer=value, **common)
    choices = []
    for position, option in enumerate(options):
        letter, text = strip_letter_prefix(str(option))
        if letter is not None and letter != LETTERS[position]:
            raise ValueError(f"option {position + 1} has letter {letter}, expected {LETTERS[position]}")
        choices.append(text)
    answer = strip_letter_prefix(truth)[0] or (truth if truth in LETTERS else None)
    if answer is None and truth in choices:  # some copies give the option text instead of its letter
        answer = LETTERS[choices.index(truth)]
    if answer is None:
        raise ValueError(f"ground_truth {truth!r} is neither a letter nor one of the options")
    return Record(choices=tuple(choices), answer=answer, **common)


def load_vsi_bench(
    parquet_path: str | Path,
    video_dir: str | Path | None = None,
    allow_missing_videos: bool = False,
    split_seed: int | None = 0,
    split_ratios: tuple[float, float, float] = DEFAULT_RATIOS,
    verbose: bool = True,
) -> tuple[list[Record], SkipReport]:
    """Records of VSI-Bench; videos are `video_dir/<dataset>/<scene>.mp4` or `video_dir/<scene>.mp4`.

    A row is skipped with its id and reason when a value is missing or malformed (a question "nan", duplicate options),
    its question_type is not a known category (embodied_data/categories.py), or its video is not found
    (unless `allow_missing_videos`, for question-only use: the record then names `<dataset>/<scene>.mp4`, relative).
    With `split_seed` set, records get a seeded scene-level train/val/test split; with None every record is "test".
    """
    report = SkipReport(log_each=False)  # thousands of rows may lack a video: one summary line, not one each
    records: list[Record] = []
    for position, row in enumerate(read_parquet_rows(parquet_path, REQUIRED_COLUMNS)):
        record_id = f"vsi_{row['id']}" if row.get("id") is not None else f"row {position}"
        scene, dataset = row.get("scene_name"), row.get("dataset")
        if not scene:
            report.add(record_id, "missing value: scene_name is empty")
            continue
        found, problem = check_row(
            row.get("question_type"), video_dir, [f"{dataset}/{scene}.mp4", f"{scene}.mp4"],
            f"{dataset}/{scene}.mp4 or {scene}.mp4", allow_missing_videos,
        )
        if problem is not None:
            report.add(record_id, problem)
            continue
        try:
            records.append(_record(row, str(found) if found else f"{dataset}/{scene}.mp4"))
        except (ValueError, TypeError) as error:
            report.add(record_id, f"malformed row: {error}")
    return finish_loading("vsi_bench", parquet_path, records, report, split_seed, split_ratios, verbose=verbose)
