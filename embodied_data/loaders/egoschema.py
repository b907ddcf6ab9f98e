"""Load EgoSchema (questions.json plus the published answers, videos `<q_uid>.mp4`) into five-choice Records."""

from __future__ import annotations

import json
from pathlib import Path

from embodied_data.loaders.common import find_video, finish_loading, missing_video_reason
from embodied_data.records import LETTERS, Record, SkipReport

NUM_OPTIONS = 5
CATEGORY = "EgoSchema"
ANSWERS_FILE = "subset_answers.json"


def _read_json(path: Path, what: str) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"EgoSchema {what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from None


def _answer_letter(value: object) -> str:
    """An answer index 0..4 (int or digit text) as its letter A..E; raises ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"answer {value!r} is not an option index 0..{NUM_OPTIONS - 1}")
    text = str(value).strip()
    if not text.isdigit() or not 0 <= int(text) < NUM_OPTIONS:
        raise ValueError(f"answer {value!r} is not an option index 0..{NUM_OPTIONS - 1}")
    return LETTERS[int(text)]


def load_egoschema(
    questions_path: str | Path,
    video_dir: str | Path | None = None,
    allow_missing_videos: bool = False,
    answers_path: str | Path | None = None,
    split: str = "test",
    verbose: bool = True,
) -> tuple[list[Record], SkipReport]:
    """Records of EgoSchema's questions.json (a list of {q_uid, question, "option 0".."option 4", ...}) whose answer
    is in `answers_path` ({q_uid: option index}; default subset_answers.json beside questions.json); videos at
    `video_dir/<q_uid>.mp4`.

    A question is skipped with its id and reason when a value is missing, an option is blank or two read the same,
    its answer is not published (EgoSchema publishes the answers of a 500-question subset; the rest are scored by its
    server) or is not an index 0..4, its q_uid repeats, or its video is missing (unless `allow_missing_videos`).
    Every record is `split` (an out-of-distribution test set by default); the scene is the q_uid (one clip each).
    """
    questions_path = Path(questions_path)
    items = _read_json(questions_path, "questions file")
    if not isinstance(items, list):
        raise ValueError(f"{questions_path}: expected a JSON list of questions, got {type(items).__name__}")
    answers_path = Path(answers_path) if answers_path is not None else questions_path.parent / ANSWERS_FILE
    answers = _read_json(answers_path, "answers file")
    if not isinstance(answers, dict):
        raise ValueError(f"{answers_path}: expected a JSON object {{q_uid: answer index}}, got {type(answers).__name__}")
    report = SkipReport(log_each=False)  # most of the 5031 questions have no published answer: one summary line
    records: list[Record] = []
    seen: set[str] = set()
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            report.add(f"item {position}", f"malformed item: expected an object, got {type(item).__name__}")
            continue
        q_uid = str(item.get("q_uid") or "").strip()
        record_id = f"egoschema_{q_uid}" if q_uid else f"item {position}"
        option_keys = [f"option {i}" for i in range(NUM_OPTIONS)]
        absent = [k for k in ["q_uid", "question", *option_keys] if not str(item.get(k) or "").strip()]
        if absent:
            report.add(record_id, f"missing value: keys {absent}")
            continue
        if q_uid in seen:
            report.add(record_id, "duplicate id: an earlier question has the same q_uid")
            continue
        if q_uid not in answers:
            report.add(record_id, f"no published answer: q_uid not in {answers_path.name}")
            continue
        found = find_video(video_dir, [f"{q_uid}.mp4"])
        if found is None and not allow_missing_videos:
            report.add(record_id, missing_video_reason(f"{q_uid}.mp4", video_dir))
            continue
        try:
            record = Record(
                id=record_id,
                video=str(found) if found else f"{q_uid}.mp4",
                question=str(item["question"]).strip(),
                choices=tuple(" ".join(str(item[k]).split()) for k in option_keys),
                answer=_answer_letter(answers[q_uid]),
                category=CATEGORY,
                scene=q_uid,
                source="egoschema",
            )
        except (ValueError, TypeError) as error:
            report.add(record_id, f"malformed row: {error}")
            continue
        seen.add(q_uid)
        records.append(record)
    return finish_loading("egoschema", questions_path, records, report, split=split, verbose=verbose)
