"""The manifest: a parquet table of records (one question per row), written atomically and read back with every
malformed row reported by id and reason instead of crashing."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from embodied_data.atomic import atomic_path
from embodied_data.categories import category_problem
from embodied_data.records import Record, SkipReport, is_missing_value_text

RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("video", pa.string()),
        ("question", pa.string()),
        ("choices", pa.list_(pa.string())),
        ("answer", pa.string()),
        ("numeric", pa.bool_()),
        ("category", pa.string()),
        ("scene", pa.string()),
        ("split", pa.string()),
        ("source", pa.string()),
    ]
)
REQUIRED_COLUMNS = ("id", "video", "question", "choices", "answer", "category", "scene")
METADATA_KEY = b"embodied_data"
GT_CAPTION_COLUMN = "gt_caption"
# Skipped rows logged one by one when a manifest is read; the rest are counted in one line (a manifest kept with
# --keep-missing-videos can miss thousands of videos).
_LOG_SKIPPED = 5

log = logging.getLogger(__name__)


def write_table_atomically(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write a parquet file beside its final name, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        pq.write_table(table, temp)
    return path


def write_manifest(
    records: list[Record],
    path: str | os.PathLike,
    extra_columns: dict[str, list] | None = None,
    metadata: dict | None = None,
) -> Path:
    """Write records (plus optional extra columns, one value per record, and JSON metadata) to a parquet file."""
    rows = [r.to_row() for r in records]
    columns = {name: [row[name] for row in rows] for name in RECORD_SCHEMA.names}
    table = pa.table(columns, schema=RECORD_SCHEMA)
    for name, values in (extra_columns or {}).items():
        if name in RECORD_SCHEMA.names:
            raise ValueError(f"extra column {name!r} would overwrite a record column")
        if len(values) != len(records):
            raise ValueError(f"extra column {name!r} has {len(values)} values for {len(records)} records")
        table = table.append_column(name, pa.array(values))
    if metadata is not None:
        table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})
    return write_table_atomically(table, path)


def read_manifest_metadata(path: str | os.PathLike) -> dict | None:
    """The JSON metadata `write_manifest` stored, or None."""
    schema = pq.read_schema(path)
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else None


def resolve_video(video: str, base: Path) -> str:
    """A video path as records carry it after reading: absolute, relative paths taken from the manifest's folder."""
    candidate = Path(video)
    return str(candidate if candidate.is_absolute() else (base / candidate).resolve())


def _row_problem(row: dict) -> str | None:
    for name in REQUIRED_COLUMNS:
        value = row.get(name)
        if value is None:
            return f"missing value: column {name!r} is empty"
        if isinstance(value, str) and name != "answer" and not value.strip():
            return f"missing value: column {name!r} is blank"
        # A table that went through pandas carries a missing value as the text "nan" (a numeric answer of NaN is
        # left to the finiteness check).
        if isinstance(value, str) and name != "answer" and is_missing_value_text(value):
            return f"missing value: column {name!r} is {value.strip()!r}, a missing value written as text"
    return None


def read_manifest(path: str | os.PathLike, allow_missing_videos: bool = False) -> tuple[list[Record], SkipReport]:
    """Records of a manifest, video paths resolved against its folder; bad rows are reported and skipped.

    A row is skipped (with its id, or its row number when the id is missing) when a required value is missing (or is
    "nan" and the like, a missing value written as text), the answer does not fit the choices, two choices are the
    same, a numeric answer is not a finite number, the category is unknown (embodied_data/categories.py; case and
    separators do not matter), the id repeats an earlier row, or the video file does not exist (unless
    `allow_missing_videos`).  A file without the required columns raises.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"manifest {path} does not exist")
    table = pq.read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"manifest {path}: missing columns {missing}; it has {table.column_names}")
    base = path.parent.resolve()
    report = SkipReport(log_each=False)
    records: list[Record] = []
    seen: set[str] = set()
    for position, row in enumerate(table.to_pylist()):
        record_id = str(row["id"]) if row.get("id") not in (None, "") else f"row {position}"
        problem = _row_problem(row)
        if problem is None:
            try:
                record = Record.from_row(row)
            except (ValueError, TypeError) as error:
                problem = f"malformed row: {error}"
        if problem is None and record.is_numeric and not math.isfinite(float(record.answer)):
            problem = f"malformed row: numeric answer {record.answer!r} is not finite"
        if problem is None and (unknown := category_problem(record.category)) is not None:
            problem = f"unknown category: {unknown}"
        if problem is None and record.id in seen:
            problem = "duplicate id: an earlier row has the same id"
        if problem is None:
            video = resolve_video(record.video, base)
            if not allow_missing_videos and not Path(video).is_file():
                problem = f"missing video: {video}"
        if problem is not None:
            report.add(record_id, problem)
            continue
        seen.add(record.id)
        records.append(dataclasses.replace(record, video=video))
    for record_id, reason in report.skipped[:_LOG_SKIPPED]:
        log.warning("%s: skipped record %s: %s", path, record_id, reason)
    if len(report) > _LOG_SKIPPED:
        log.warning("%s: ... and %d more: %s", path, len(report) - _LOG_SKIPPED, report.summary())
    return records, report


def records_of_split(records: list[Record], split: str, manifest: str | os.PathLike,
                     skipped: SkipReport | None = None) -> list[Record]:
    """The records of `split` ("all": every record), or a ValueError that says which splits the manifest has and,
    when rows were skipped on reading (a missing video, most often), how many, why and where the videos were looked
    for -- so "no records" is never mistaken for an empty manifest."""
    chosen = list(records) if split == "all" else [r for r in records if r.split == split]
    if chosen:
        return chosen
    counts = ", ".join(f"{name} {n}" for name, n in sorted(Counter(r.split for r in records).items()))
    message = f"{manifest} has no usable records in split {split!r} (usable records by split: {counts or 'none'})"
    if skipped is not None and len(skipped):
        first = "; ".join(f"{record_id}: {reason}" for record_id, reason in skipped.skipped[:3])
        message += f"; {skipped.summary()} on reading it, first: {first}"
        if skipped.counts_by_reason().get("missing video"):
            message += (". A video is looked for at the path named (a relative path in the manifest is taken from the "
                        "manifest's folder): put the videos there, or rebuild the manifest with "
                        "`embodied-r data build-manifest FORMAT PATH --videos DIR`")
    raise ValueError(message)


def read_gt_captions(path: str | os.PathLike) -> dict[str, str]:
    """Resolved video path -> ground-truth caption (privileged simulator text), for manifests that have one."""
    path = Path(path)
    table = pq.read_table(path, columns=["video", GT_CAPTION_COLUMN]) if GT_CAPTION_COLUMN in pq.read_schema(path).names else None
    if table is None:
        return {}
    base = path.parent.resolve()
    captions: dict[str, str] = {}
    for video, caption in zip(table.column("video").to_pylist(), table.column(GT_CAPTION_COLUMN).to_pylist()):
        if video and caption:
            captions[resolve_video(video, base)] = caption
    return captions
