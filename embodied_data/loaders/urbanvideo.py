"""Load UrbanVideo-Bench's MCQ.parquet into Records: the options are parsed out of the question text."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import pyarrow.parquet as pq

from embodied_data.loaders.common import counts_summary, find_video, split_question_and_options
from embodied_data.records import Record, SkipReport
from embodied_data.split import DEFAULT_RATIOS, assign_splits

log = logging.getLogger(__name__)

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

    A row is skipped with its id and reason when its options cannot be parsed, its answer is not one of their
    letters, or its video is not found (unless `allow_missing_videos`; the record then names the bare video_id).
    Scenes are flights (`trajectory_of`); with `split_seed` set the split is seeded by flight, else "test".
    """
    table = pq.read_table(parquet_path)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{parquet_path}: missing columns {missing}; it has {table.column_names}")
    report = SkipReport(log_each=False)  # thousands of rows may lack a video: one summary line, not one each
    records: list[Record] = []
    for position, row in enumerate(table.to_pylist()):
        record_id = f"urban_{row['Question_id']}" if row.get("Question_id") is not None else f"row {position}"
        video_id = row.get("video_id")
        if not video_id:
            report.add(record_id, "missing value: video_id is empty")
            continue
        found = find_video(video_dir, [video_id])
        if found is None and not allow_missing_videos:
            where = f"under {video_dir}" if video_dir is not None else "(no video folder given)"
            report.add(record_id, f"missing video: {video_id} {where}")
            continue
        try:
            question, options = split_question_and_options(str(row.get("question") or ""))
            answer = str(row.get("answer") or "").strip().rstrip(".").upper()
            records.append(
                Record(
                    id=record_id,
                    video=str(found) if found else video_id,
                    question=question,
                    choices=tuple(options),
                    answer=answer,
                    category=str(row["question_category"]),
                    scene=trajectory_of(video_id),
                    source="urbanvideo_bench",
                )
            )
        except (ValueError, TypeError) as error:
            report.add(record_id, f"malformed row: {error}")
    if split_seed is not None:
        records = assign_splits(records, split_seed, split_ratios)
    else:
        records = [dataclasses.replace(r, split="test") for r in records]
    if len(report):
        log.warning("%s: %s", parquet_path, report.summary())
    if verbose:
        print(counts_summary("urbanvideo_bench", records, report))
    return records, report
