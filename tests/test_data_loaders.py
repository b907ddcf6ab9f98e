"""The benchmark loaders on the real files: every row loads or is reported with its id and a reason."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embodied_data.loaders import load_embodied_r_json, load_urbanvideo, load_vsi_bench
from embodied_data.loaders.common import split_question_and_options, strip_letter_prefix
from embodied_data.loaders.urbanvideo import trajectory_of

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL = SHARED / "realdata"
VSI = REAL / "vsi_bench" / "test-00000-of-00001.parquet"
URBAN = REAL / "urbanvideo_bench" / "MCQ.parquet"
EMBODIED_R = REAL / "embodied_r" / "data_demo.json"

# UrbanVideo-Bench rows with two identical options (checked by hand against MCQ.parquet's question text).
DUPLICATE_CHOICE_ROWS = {f"urban_{n}" for n in (823, 1158, 1239, 1440, 2123, 2488, 2995, 2998, 3954, 3970, 4371)}

needs_real_data = pytest.mark.skipif(not REAL.is_dir(), reason=f"real benchmark data not found at {REAL}")


def test_option_parsing_handles_every_header_style() -> None:
    for header in ("choose:", "Choice:", "Choices:", "Choose:", "Options:"):
        text = f"Question: Where next?  \n{header}  \nA. I rise.  \nB. I descend.  \nC. I turn left.  "
        assert split_question_and_options(text) == ("Where next?", ["I rise.", "I descend.", "I turn left."])
    inline = "Question: Why?  \nChoices: A. To see.  \n         B. To land,\n  slowly.  \n         C. No reason.  "
    assert split_question_and_options(inline) == ("Why?", ["To see.", "To land, slowly.", "No reason."])
    headless = "Question: Which?\nA. left\nB. right"
    assert split_question_and_options(headless) == ("Which?", ["left", "right"])
    stray_answer = '"""\nQuestion: Where is the drone?\nchoose:\nAnswer: A. Above it.\nB. Behind it.\n\n"""'
    assert split_question_and_options(stray_answer) == ("Where is the drone?", ["Above it.", "Behind it."])
    with pytest.raises(ValueError, match="not A, B, C"):
        split_question_and_options("Question: x?\nChoices:\nA. one\nC. three")
    with pytest.raises(ValueError, match="no options found"):
        split_question_and_options("Question: how many chairs?")
    assert strip_letter_prefix("A. chair") == ("A", "chair") and strip_letter_prefix("B) 2.5 m") == ("B", "2.5 m")
    assert strip_letter_prefix("chair") == (None, "chair")


def test_flights_group_their_clips() -> None:
    assert trajectory_of("AerialVLN_0_35H6S234SJYE7JR0C76QLOU436G65H_3.mp4") == "AerialVLN_35H6S234SJYE7JR0C76QLOU436G65H"
    assert trajectory_of("AerialVLN_1_30BUDKLTXMTIKYKFIPPOXCMISXQE5S.mp4") == "AerialVLN_30BUDKLTXMTIKYKFIPPOXCMISXQE5S"
    assert trajectory_of("EmbodiedCity_10_2.mp4") == "EmbodiedCity_10" == trajectory_of("EmbodiedCity_10.mp4")
    assert trajectory_of("RealWorld_G1_3_4.mp4") == "RealWorld_G1_3"


@needs_real_data
def test_vsi_bench_every_row_loads_or_is_reported() -> None:
    total = pq.read_metadata(VSI).num_rows
    records, report = load_vsi_bench(VSI, allow_missing_videos=True, verbose=False)
    assert len(records) + len(report) == total == 5130
    assert len(report) == 0, report.summary()
    numeric = [r for r in records if r.is_numeric]
    assert len(numeric) == 2640 and all(isinstance(r.answer, float) for r in numeric)
    multiple_choice = [r for r in records if not r.is_numeric]
    assert len(multiple_choice) == 2490
    assert not any(re.match(r"^[A-J]\. ", c) for r in multiple_choice for c in r.choices)  # letter prefixes stripped
    by_id = {r.id: r for r in records}
    # Row 957: options ['A. front-left', 'B. back-right', 'C. back-left', 'D. front-right'], ground truth A.
    assert by_id["vsi_957"].choices == ("front-left", "back-right", "back-left", "front-right")
    assert by_id["vsi_957"].answer == "A" and by_id["vsi_957"].category == "object_rel_direction_hard"
    assert by_id["vsi_530"].answer == pytest.approx(26.4) and by_id["vsi_530"].scene == "41069025"
    assert by_id["vsi_0"].video == "arkitscenes/41069025.mp4"
    for scene in {r.scene for r in records}:
        assert len({r.split for r in records if r.scene == scene}) == 1


@needs_real_data
def test_vsi_bench_reports_missing_videos_per_record(tmp_path: Path) -> None:
    (tmp_path / "arkitscenes").mkdir()
    (tmp_path / "arkitscenes" / "41069025.mp4").write_bytes(b"x")
    records, report = load_vsi_bench(VSI, video_dir=tmp_path, verbose=False)
    assert records and {r.scene for r in records} == {"41069025"}
    assert all(r.video == str((tmp_path / "arkitscenes" / "41069025.mp4").resolve()) for r in records)
    assert len(records) + len(report) == 5130
    assert all(reason.startswith("missing video: ") for _, reason in report.skipped)
    assert report.counts_by_reason() == {"missing video": 5130 - len(records)}


@needs_real_data
def test_urbanvideo_every_row_loads_or_is_reported() -> None:
    raw = {f"urban_{r['Question_id']}": r for r in pq.read_table(URBAN).to_pylist()}
    records, report = load_urbanvideo(URBAN, allow_missing_videos=True, verbose=False)
    assert len(records) + len(report) == len(raw) == 5355
    # The only rows left out: 11 whose options repeat one another (6 of them repeat the answer, so two letters are
    # right), each reported with the two letters.
    reasons = dict(report.skipped)
    assert set(reasons) == DUPLICATE_CHOICE_ROWS, report.skipped[:5]
    assert all(reason.startswith(f"malformed row: record {rid}: duplicate choices: ") for rid, reason in reasons.items())
    assert sum("the answer" in reason for reason in reasons.values()) == 6
    assert "B and E are both 'An observation deck.'" in reasons["urban_823"]
    for record in records:
        assert record.answer == raw[record.id]["answer"]
        assert 2 <= len(record.choices) <= 8
        assert not record.question.startswith("Question") and "\nA." not in record.question
        assert not any(c.lower().startswith(("answer", "a. ")) for c in record.choices)
    with_answer_text = [r for r in records if "Answer:" in raw[r.id]["question"]]
    assert len(with_answer_text) == 11 and all(len(r.choices) == 5 for r in with_answer_text)
    action = next(r for r in records if r.id == "urban_835")
    assert action.choices[0] == "I rise." and action.answer == "G" and action.choices[6] == "I descend."


@needs_real_data
def test_urbanvideo_with_the_real_videos_folder() -> None:
    records, report = load_urbanvideo(URBAN, video_dir=REAL / "urbanvideo_bench" / "videos", verbose=False)
    assert sorted(int(r.id.split("_")[1]) for r in records) == [171, 172, 173, 174, 175, 176, 177]
    assert all(Path(r.video).is_file() for r in records)
    assert len(report) == 5355 - 7 and report.counts_by_reason() == {"missing video": 5348}


def test_urbanvideo_malformed_rows_are_reported(tmp_path: Path) -> None:
    rows = {
        "Question_id": [1, 2, 3, 4],
        "video_id": ["a.mp4", "a.mp4", None, "b.mp4"],
        "question_category": ["Proximity"] * 4,
        "question": [
            "Question: Closer?\nChoices:\nA. Yes.\nB. No.",
            "Question: Closer?\nChoices:\nA. Yes.\nB. No.",
            "Question: Closer?\nChoices:\nA. Yes.\nB. No.",
            "Question: How far is it?",
        ],
        "answer": ["B", "D", "A", "A"],
    }
    path = tmp_path / "mcq.parquet"
    pq.write_table(pa.table(rows), path)
    records, report = load_urbanvideo(path, allow_missing_videos=True, verbose=False)
    assert [r.id for r in records] == ["urban_1"]
    reasons = dict(report.skipped)
    assert "not one of the choice letters" in reasons["urban_2"]
    assert reasons["urban_3"].startswith("missing value")
    assert "no options found" in reasons["urban_4"]


@needs_real_data
def test_embodied_r_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    records, report = load_embodied_r_json(EMBODIED_R, allow_missing_videos=True)
    assert len(report) == 0 and [r.answer for r in records] == ["C", "C"]
    assert records[0].choices == ("left", "right", "back")
    assert records[0].question.startswith("If I am standing by the computer tower")
    assert records[1].choices == ("computer tower", "chair", "whiteboard", "telephone")
    assert "<video>" not in records[1].question and "Please assume" not in records[1].question
    assert "embodied_r: 2 loaded" in capsys.readouterr().out
    # Without the flag, a missing video is reported per record; with the video present it loads.
    _, report = load_embodied_r_json(EMBODIED_R, video_dir=tmp_path, verbose=False)
    assert [reason.split(":")[0] for _, reason in report.skipped] == ["missing video", "missing video"]
    (tmp_path / "1ada7a0617.mp4").write_bytes(b"x")
    records, report = load_embodied_r_json(EMBODIED_R, video_dir=tmp_path, verbose=False)
    assert len(records) == 2 and len(report) == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"Question_id": 1, "video_id": "v.mp4"}, "not an object"]))
    records, report = load_embodied_r_json(bad, allow_missing_videos=True, verbose=False)
    assert records == [] and [r.split(":")[0] for _, r in report.skipped] == ["missing value", "malformed item"]
