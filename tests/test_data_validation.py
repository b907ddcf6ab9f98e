"""Records that are holes or mistakes in their source -- a question "nan", an unknown category, two identical options --
are reported by the loaders and the manifest reader with their id and the reason, never loaded, never a crash."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embodied_data.categories import (
    KNOWN_CATEGORIES,
    URBANVIDEO_BENCH_CATEGORIES,
    VSI_BENCH_CATEGORIES,
    canonical_category,
    category_problem,
)
from embodied_data.loaders import load_embodied_r_json, load_urbanvideo, load_vsi_bench
from embodied_data.manifest import read_manifest, write_manifest
from embodied_data.records import Record, duplicate_choices



def mc(record_id: str = "r1", question: str = "Which is closest?", choices: tuple[str, ...] = ("lamp", "tv", "sofa"),
       answer: str = "A", category: str = "object_rel_distance") -> Record:
    return Record(record_id, "v.mp4", question, choices, answer, category, "s", "synthetic")


def test_a_question_that_is_a_missing_value_is_refused_naming_the_record():
    for text in ("nan", " NaN ", "None", "<NA>"):
        with pytest.raises(ValueError, match=r"record r1: the question is .* a missing value written as text"):
            mc(question=text)
    assert mc(question="Is the nan bread on the table?").question  # the word inside a question is fine


def test_duplicate_choices_are_refused_naming_the_letters():
    with pytest.raises(ValueError, match=r"record r1: duplicate choices: A and C are both 'Lamp\.'$"):
        mc(choices=("lamp", "tv", "Lamp.", "sofa"), answer="B")
    with pytest.raises(ValueError, match="the answer C is one of them"):
        mc(choices=("left", "right", "left"), answer="C")
    assert duplicate_choices(("a  b", "A B.", "c", "c")) == [(0, 1), (2, 3)]
    assert duplicate_choices(("front-left", "front-right", "left")) == []
    assert mc(choices=("left", "right")).choices == ("left", "right")


def test_the_categories_the_generator_and_the_benchmarks_use_are_known():
    from embodied_data.synthetic.city_questions import CITY_GENERATORS
    from embodied_data.synthetic.questions import GENERATORS, PRIMARY_CATEGORIES
    from embodied_data.synthetic.real_layout import GEOMETRIC_CATEGORIES

    generated = set(GENERATORS) | set(CITY_GENERATORS) | set(PRIMARY_CATEGORIES) | set(GEOMETRIC_CATEGORIES)
    assert "Progress Evaluation" in generated
    assert all(canonical_category(name) == name for name in generated), sorted(generated - set(KNOWN_CATEGORIES))
    assert len(VSI_BENCH_CATEGORIES) == 10 and len(URBANVIDEO_BENCH_CATEGORIES) == 16
    assert len(set(KNOWN_CATEGORIES)) == len(KNOWN_CATEGORIES) == 27


def test_a_category_spelled_with_other_case_or_separators_is_the_same_one():
    assert canonical_category("landmark_position") == "Landmark Position"
    assert canonical_category("start-end position") == "Start/End Position"
    assert canonical_category("OBJECT_REL_DIRECTION_EASY") == "object_rel_direction_easy"
    for unknown in ("Landmark Positon", "relative_direction", "nan", ""):
        assert canonical_category(unknown) is None
    for unknown in ("Landmark Positon", "relative_direction", "nan", "", None, float("nan")):  # not even text
        assert "is not a VSI-Bench, UrbanVideo-Bench or Embodied-R category" in category_problem(unknown)
    assert category_problem("route_planning") is None


def test_every_category_of_the_real_files_is_known(realdata):
    vsi = set(pq.read_table(realdata / "vsi_bench" / "test-00000-of-00001.parquet", columns=["question_type"]).column(0).to_pylist())
    urban = set(pq.read_table(realdata / "urbanvideo_bench" / "MCQ.parquet", columns=["question_category"]).column(0).to_pylist())
    demo = {item["question_category"] for item in json.loads((realdata / "embodied_r" / "data_demo.json").read_text())}
    assert vsi == set(VSI_BENCH_CATEGORIES) and urban == set(URBANVIDEO_BENCH_CATEGORIES)
    assert all(category_problem(name) is None for name in vsi | urban | demo), demo


def test_vsi_bench_rows_with_a_nan_question_an_unknown_type_or_repeated_options_are_reported(tmp_path):
    rows = [
        # id, question_type, question, ground_truth, options
        (0, "object_rel_distance", "Which is closest to the bed?", "A", ["A. lamp", "B. tv", "C. sofa"]),
        (1, "object_rel_distance", "nan", "A", ["A. lamp", "B. tv", "C. sofa"]),
        (2, "relative_direction", "Is the lamp to my left?", "A", ["A. left", "B. right"]),
        (3, "object_rel_distance", "Which is closest to the bed?", "B", ["A. lamp", "B. tv", "C. lamp"]),
        (4, None, "How many chairs?", "3", None),
        (5, "object_counting", "How many chairs?", "3", None),
    ]
    table = pa.table({
        "id": [r[0] for r in rows], "dataset": ["scannet"] * len(rows), "scene_name": ["scene0001_00"] * len(rows),
        "question_type": [r[1] for r in rows], "question": [r[2] for r in rows], "ground_truth": [r[3] for r in rows],
        "options": pa.array([r[4] for r in rows], type=pa.list_(pa.string())),
    })
    pq.write_table(table, tmp_path / "vsi.parquet")
    records, report = load_vsi_bench(tmp_path / "vsi.parquet", allow_missing_videos=True, split_seed=None, verbose=False)
    assert [r.id for r in records] == ["vsi_0", "vsi_5"]
    reasons = dict(report.skipped)
    assert set(reasons) == {"vsi_1", "vsi_2", "vsi_3", "vsi_4"}
    assert reasons["vsi_1"] == "malformed row: record vsi_1: the question is 'nan', a missing value written as text"
    assert reasons["vsi_2"].startswith("unknown category: 'relative_direction' is not a VSI-Bench")
    assert reasons["vsi_3"] == "malformed row: record vsi_3: duplicate choices: A and C are both 'lamp'"
    assert reasons["vsi_4"].startswith("unknown category: None is not")
    assert report.counts_by_reason() == {"malformed row": 2, "unknown category": 2}


def test_urbanvideo_rows_with_a_nan_question_an_unknown_category_or_repeated_options_are_reported(tmp_path):
    question = "Question: Where is the tower?\nChoices:\nA. Left.\nB. Right.\nC. Behind."
    rows = {
        "Question_id": [1, 2, 3, 4, 5],
        "video_id": ["a.mp4"] * 5,
        "question_category": ["Landmark Position", "Landmark Position", "nan", "Landmark Positon", "Landmark Position"],
        "question": [question, "nan", question, question, question.replace("C. Behind.", "C. left")],
        "answer": ["A", "A", "A", "A", "C"],
    }
    pq.write_table(pa.table(rows), tmp_path / "mcq.parquet")
    records, report = load_urbanvideo(tmp_path / "mcq.parquet", allow_missing_videos=True, verbose=False)
    assert [r.id for r in records] == ["urban_1"]
    reasons = dict(report.skipped)
    assert "no options found" in reasons["urban_2"], "a question 'nan' has no options either"
    assert reasons["urban_3"].startswith("unknown category: 'nan' is not")
    assert reasons["urban_4"].startswith("unknown category: 'Landmark Positon' is not")
    assert reasons["urban_5"] == ("malformed row: record urban_5: duplicate choices: A and C are both 'left'; "
                                  "the answer C is one of them")
    assert len(report) == 4


def test_embodied_r_records_of_an_unknown_category_are_reported(tmp_path):
    question = "Question: Which way?\nChoices:\nA. left\nB. right"
    items = [
        {"Question_id": 1, "video_id": "v.mp4", "question_category": "object_rel_direction", "question": question, "answer": "A"},
        {"Question_id": 2, "video_id": "v.mp4", "question_category": "rel_dir", "question": question, "answer": "A"},
    ]
    (tmp_path / "data.json").write_text(json.dumps(items))
    records, report = load_embodied_r_json(tmp_path / "data.json", allow_missing_videos=True, verbose=False)
    assert [r.id for r in records] == ["embodied_r_1"]
    assert dict(report.skipped)["embodied_r_2"].startswith("unknown category: 'rel_dir' is not")


def test_the_manifest_reports_nan_text_unknown_categories_and_repeated_options(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"not really a video")
    good = mc("good").to_row()
    rows = [
        good,
        {**mc("spelled", category="landmark_position").to_row()},  # another spelling of a known category: kept
        {**good, "id": "nan_question", "question": "nan"},
        {**good, "id": "nan_scene", "scene": "nan"},
        {**good, "id": "odd_category", "category": "relative_direction"},
        {**good, "id": "repeated", "choices": ["lamp", "tv", "lamp"]},
    ]
    pq.write_table(pa.table({name: [row[name] for row in rows] for name in good}), tmp_path / "m.parquet")
    records, report = read_manifest(tmp_path / "m.parquet")
    assert [r.id for r in records] == ["good", "spelled"] and records[1].category == "landmark_position"
    reasons = dict(report.skipped)
    assert reasons["nan_question"] == "missing value: column 'question' is 'nan', a missing value written as text"
    assert reasons["nan_scene"].startswith("missing value: column 'scene' is 'nan'")
    assert reasons["odd_category"].startswith("unknown category: 'relative_direction' is not")
    assert reasons["repeated"] == "malformed row: record repeated: duplicate choices: A and C are both 'lamp'; the answer A is one of them"
    assert len(report) == 4 and "4 records skipped" in report.summary()
    # What the project writes reads back whole.
    back, clean = read_manifest(write_manifest(records, tmp_path / "again.parquet"))
    assert [r.id for r in back] == ["good", "spelled"] and len(clean) == 0
