"""Load records in the Embodied-R input format (a JSON list like the released infer/data_demo.json) into Records."""

from __future__ import annotations

import json
import re
from pathlib import Path

from embodied_data.loaders.common import check_row, finish_loading, record_with_inline_options
from embodied_data.records import Record, SkipReport

REQUIRED_KEYS = ("Question_id", "video_id", "question_category", "question", "answer")
# The released format bakes the role prompt (and a "<video>" placeholder) into the question; the prompt builder adds
# its own, so it is removed here.
_ROLE_PROMPT = re.compile(r"(?s)^\s*(?:<video>)?\s*Please assume the role of an agent\..*?(?=Question\s*:)")


def load_embodied_r_json(
    json_path: str | Path,
    video_dir: str | Path | None = None,
    allow_missing_videos: bool = False,
    split: str = "test",
    verbose: bool = True,
) -> tuple[list[Record], SkipReport]:
    """Records of an Embodied-R JSON file; videos at `video_dir/<video_id>` or `video_dir/<videos>` (its own path).

    A record is skipped with its id and reason when a key is missing, the category is unknown
    (embodied_data/categories.py), the options cannot be parsed out of the question or two of them are the same, the
    answer is not one of their letters, or the video is missing (unless `allow_missing_videos`).
    """
    try:
        items = json.loads(Path(json_path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{json_path}: not valid JSON: {error}") from None
    if not isinstance(items, list):
        raise ValueError(f"{json_path}: expected a JSON list of records, got {type(items).__name__}")
    report = SkipReport(log_each=False)  # thousands of rows may lack a video: one summary line, not one each
    records: list[Record] = []
    for position, item in enumerate(items):
        record_id = f"embodied_r_{item.get('Question_id')}" if isinstance(item, dict) and item.get("Question_id") is not None else f"item {position}"
        if not isinstance(item, dict):
            report.add(record_id, f"malformed item: expected an object, got {type(item).__name__}")
            continue
        absent = [k for k in REQUIRED_KEYS if item.get(k) in (None, "")]
        if absent:
            report.add(record_id, f"missing value: keys {absent}")
            continue
        video_id = str(item["video_id"])
        candidates = [video_id] + ([str(item["videos"]), Path(str(item["videos"])).name] if item.get("videos") else [])
        found, problem = check_row(item["question_category"], video_dir, candidates, video_id, allow_missing_videos)
        if problem is not None:
            report.add(record_id, problem)
            continue
        try:
            records.append(
                record_with_inline_options(
                    record_id,
                    video=str(found) if found else video_id,
                    question_text=_ROLE_PROMPT.sub("", str(item["question"])),
                    answer=item["answer"],
                    category=str(item["question_category"]),
                    scene=Path(video_id).stem,
                    source="embodied_r",
                )
            )
        except (ValueError, TypeError) as error:
            report.add(record_id, f"malformed row: {error}")
    return finish_loading("embodied_r", json_path, records, report, split=split, verbose=verbose)
