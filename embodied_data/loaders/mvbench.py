"""Load an MVBench task file (json/<task>.json: {video, question, candidates, answer}) into multiple-choice Records;
the paper's out-of-distribution set is its Egocentric Navigation task, videos under video/vlnqa/."""

from __future__ import annotations

import json
from pathlib import Path

from embodied_data.loaders.common import find_video, finish_loading, missing_video_reason
from embodied_data.records import LETTERS, Record, SkipReport, option_key

# Task file stem -> (category, the folder under MVBench's video/ holding its videos), as MVBench's evaluation lists it.
MVBENCH_TASKS: dict[str, tuple[str, str]] = {"egocentric_navigation": ("Egocentric Navigation", "vlnqa")}
DEFAULT_TASK = "egocentric_navigation"


def mvbench_task_paths(root: str | Path, task: str = DEFAULT_TASK) -> tuple[Path, Path]:
    """(json/<task>.json, video/<source>/) of an MVBench download at `root`; raises ValueError for an unknown task."""
    if task not in MVBENCH_TASKS:
        raise ValueError(f"MVBench task {task!r} is not supported; supported: {sorted(MVBENCH_TASKS)}")
    root = Path(root)
    return root / "json" / f"{task}.json", root / "video" / MVBENCH_TASKS[task][1]


def load_mvbench(
    json_path: str | Path,
    video_dir: str | Path | None = None,
    allow_missing_videos: bool = False,
    task: str = DEFAULT_TASK,
    split: str = "test",
    verbose: bool = True,
) -> tuple[list[Record], SkipReport]:
    """Records of one MVBench task file; videos at `video_dir/<video>` (MVBench: video/<source>/, see MVBENCH_TASKS).

    MVBench items have no id: a record's id is `mvbench_<task>_<position in the file>`.  An item is skipped with that
    id and the reason when a value is missing, there are fewer than 2 or more than 10 candidates or two read the same,
    the answer is not one of the candidates (compared as `option_key` does: case, spaces and a final full stop do not
    matter), or its video is missing (unless `allow_missing_videos`).  Every record is `split` (default "test").
    """
    if task not in MVBENCH_TASKS:
        raise ValueError(f"MVBench task {task!r} is not supported; supported: {sorted(MVBENCH_TASKS)}")
    json_path = Path(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(f"MVBench task file {json_path} does not exist")
    try:
        items = json.loads(json_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{json_path}: not valid JSON: {error}") from None
    if not isinstance(items, list):
        raise ValueError(f"{json_path}: expected a JSON list of questions, got {type(items).__name__}")
    category = MVBENCH_TASKS[task][0]
    report = SkipReport(log_each=False)
    records: list[Record] = []
    for position, item in enumerate(items):
        record_id = f"mvbench_{task}_{position}"
        if not isinstance(item, dict):
            report.add(record_id, f"malformed item: expected an object, got {type(item).__name__}")
            continue
        absent = [k for k in ("video", "question", "candidates", "answer") if item.get(k) in (None, "", [])]
        if absent:
            report.add(record_id, f"missing value: keys {absent}")
            continue
        candidates = item["candidates"]
        if not isinstance(candidates, list) or not 2 <= len(candidates) <= len(LETTERS):
            report.add(record_id, f"malformed row: candidates must be a list of 2..{len(LETTERS)} options, got {candidates!r}")
            continue
        choices = tuple(" ".join(str(c).split()) for c in candidates)
        keys = [option_key(c) for c in choices]
        answer_key = option_key(str(item["answer"]))
        if answer_key not in keys:
            report.add(record_id, f"malformed row: answer {item['answer']!r} is not one of the candidates {list(choices)}")
            continue
        video = str(item["video"])
        found = find_video(video_dir, [video])
        if found is None and not allow_missing_videos:
            report.add(record_id, missing_video_reason(video, video_dir))
            continue
        try:
            records.append(
                Record(
                    id=record_id,
                    video=str(found) if found else video,
                    question=str(item["question"]).strip(),
                    choices=choices,
                    answer=LETTERS[keys.index(answer_key)],
                    category=category,
                    scene=Path(video).stem,
                    source="mvbench",
                )
            )
        except (ValueError, TypeError) as error:
            report.add(record_id, f"malformed row: {error}")
    return finish_loading(f"mvbench/{task}", json_path, records, report, split=split, verbose=verbose)
