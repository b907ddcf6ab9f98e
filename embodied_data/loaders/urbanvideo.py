"""Load UrbanVideo-Bench's MCQ.parquet into Records: the options are parsed out of the question text."""

from __future__ import annotations

import re
from pathlib import Path

from embodied_data.loaders.common import (
    check_row,
    finish_loading,
    read_parquet_rows,
    record_with_inline_options,
)
from embodied_data.records import Record, SkipReport
from embodied_data.split import DEFAULT_RATIOS

REQUIRED_COLUMNS = ("Question_id", "video_id", "question_category", "question", "answer")
_ROUTE_HASH = re.compile(r"^[A-Z0-9]{20,}$")


def trajectory_of(video_id: str) -> str:
    """The flight a clip belongs to, so that clips of one flight share a split.

    AerialVLN_<n>_<route hash>[_<k>] -> AerialVLN_<route hash>; otherwise the name up to its first all-digit part:
    EmbodiedCity_0_2 -> EmbodiedCity_0, RealWorld_G1_3_4 -> RealWorld_G1_3, RealWorld_5 -> RealWorld_5.
    """
    parts = Path(video_id).stem.split("_")
    for part in parts[1:]:
        if _ROUTE_HASH.match(part):
            return f"{parts[0]}_{part}"
    for i, part in enumerate(parts[1:], start=1):
        if part.isdigit():
            return "_".join(parts[: i + 1])
    return Path(video_id).stem


def load_urbanvideo(
    parquet_path: str | Path,
    video_dir: str | Path | None = None,
    allow_missing_videos: bool = False,
    split_seed: int | None = 0,
    split_ratios: tuple[float, float, float] = DEFAULT_RATIOS,
    verbose: bool = True,
) -> tuple[list[Record], SkipReport]:
    """Records of UrbanVideo-Bench (answers A-G), videos at `video_dir/<video_id>`.

    A row is skipped with its id and reason when its options cannot be parsed or two of them are the same, its answer
    is not one of their letters, its category is unknown (embodied_data/categories.py), or its video is not found
    (unless `allow_missing_videos`; the record then names the bare video_id).
    Scenes are flights (`trajectory_of`); with `split_seed` set the split is seeded by flight, else "test".
    """
    report = SkipReport(log_each=False)  # thousands of rows may lack a video: one summary line, not one each
    records: list[Record] = []
    for position, row in enumerate(read_parquet_rows(parquet_path, REQUIRED_COLUMNS)):
        record_id = f"urban_{row['Question_id']}" if row.get("Question_id") is not None else f"row {position}"
        video_id = row.get("video_id")
        if not video_id:
            report.add(record_id, "missing value: video_id is empty")
            continue
        found, problem = check_row(row.get("question_category"), video_dir, [video_id], video_id, allow_missing_videos)
        if problem is not None:
            report.add(record_id, problem)
            continue
        try:
            records.append(
                record_with_inline_options(
                    record_id,
                    video=str(found) if found else video_id,
                    question_text=str(row.get("question") or ""),
                    answer=row.get("answer") or "",
                    category=str(row["question_category"]),
                    scene=trajectory_of(video_id),
                    source="urbanvideo_bench",
                )
            )
        except (ValueError, TypeError) as error:
            report.add(record_id, f"malformed row: {error}")
    return finish_loading("urbanvideo_bench", parquet_path, records, report, split_seed, split_ratios, verbose=verbose)
