"""The manifest round trip, malformed rows reported by id and reason, and the seeded scene-level split."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embodied_data.manifest import read_gt_captions, read_manifest, read_manifest_metadata, write_manifest
from embodied_data.records import Record
from embodied_data.split import assign_splits, split_scenes


def sample_records() -> list[Record]:
    return [
        Record("q1", "videos/a.mp4", "Is the tv to my left, right, or back?", ("left", "right", "back"), "B", "object_rel_direction_medium", "a", "synthetic", "train"),
        Record("q2", "videos/a.mp4", "How many chair(s) are in this room?", (), 3.0, "object_counting", "a", "synthetic", "train"),
        Record("q3", "videos/b.mp4", "Which is closest to the bed?", ("lamp", "tv", "sofa", "plant"), "D", "object_rel_distance", "b", "synthetic", "test"),
    ]


def touch_videos(folder: Path) -> None:
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    for name in ("a.mp4", "b.mp4"):
        (folder / "videos" / name).write_bytes(b"not really a video")


def test_round_trip_resolves_relative_videos_and_keeps_extras(tmp_path: Path) -> None:
    touch_videos(tmp_path)
    records = sample_records()
    path = write_manifest(records, tmp_path / "manifest.parquet", extra_columns={"gt_caption": ["cap a", "cap a", "cap b"]}, metadata={"k": 1})
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    back, report = read_manifest(path)
    assert len(report) == 0
    assert [r.id for r in back] == ["q1", "q2", "q3"]
    for original, read in zip(records, back):
        assert read.video == str((tmp_path / original.video).resolve())
        assert (read.question, read.choices, read.answer, read.category, read.scene, read.split, read.source) == (
            original.question, original.choices, original.answer, original.category, original.scene, original.split, original.source,
        )
    assert isinstance(back[1].answer, float) and back[1].is_numeric
    assert read_manifest_metadata(path) == {"k": 1}
    assert read_gt_captions(path) == {str((tmp_path / "videos/a.mp4").resolve()): "cap a", str((tmp_path / "videos/b.mp4").resolve()): "cap b"}
    with pytest.raises(ValueError, match="extra column 'x' has 1 values for 3 records"):
        write_manifest(records, tmp_path / "m2.parquet", extra_columns={"x": [1]})


def test_malformed_rows_are_reported_with_id_and_reason(tmp_path: Path) -> None:
    touch_videos(tmp_path)
    good = [r.to_row() for r in sample_records()]
    bad = [
        {**good[0], "id": "letter_out_of_range", "answer": "E"},
        {**good[0], "id": "no_question", "question": None},
        {**good[1], "id": "not_a_number", "answer": "three"},
        {**good[1], "id": "infinite", "answer": "inf"},
        {**good[0], "id": "q1"},  # duplicate of the first good row
        {**good[0], "id": "lost_video", "video": "videos/missing.mp4"},
        {**good[0], "id": None},
    ]
    rows = good + bad
    columns = {name: [row.get(name) for row in rows] for name in good[0]}
    path = tmp_path / "manifest.parquet"
    pq.write_table(pa.table(columns), path)
    records, report = read_manifest(path)
    assert [r.id for r in records] == ["q1", "q2", "q3"]
    reasons = dict(report.skipped)
    assert set(reasons) == {"letter_out_of_range", "no_question", "not_a_number", "infinite", "q1", "lost_video", "row 9"}
    assert "not one of the choice letters" in reasons["letter_out_of_range"]
    assert reasons["no_question"].startswith("missing value: column 'question'")
    assert reasons["not_a_number"].startswith("malformed row")
    assert "not finite" in reasons["infinite"]
    assert reasons["q1"].startswith("duplicate id")
    assert reasons["lost_video"].startswith("missing video") and "missing.mp4" in reasons["lost_video"]
    assert reasons["row 9"].startswith("missing value: column 'id'")
    assert len(report) == 7 and "7 records skipped" in report.summary()
    # Question-only use: a missing video is allowed when asked for.
    records, report = read_manifest(path, allow_missing_videos=True)
    assert "lost_video" in [r.id for r in records] and "lost_video" not in dict(report.skipped)


def test_a_manifest_without_required_columns_raises_naming_them(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": ["x"], "question": ["q"]}), path)
    with pytest.raises(ValueError, match=r"missing columns \['video', 'choices', 'answer', 'category', 'scene'\]"):
        read_manifest(path)
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "absent.parquet")


def test_scene_level_split_is_seeded_and_proportional() -> None:
    scenes = [f"s{i:02d}" for i in range(20)]
    split = split_scenes(scenes, seed=3)
    assert split == split_scenes(list(reversed(scenes)), seed=3)  # order of input does not matter
    counts = {name: sum(v == name for v in split.values()) for name in ("train", "val", "test")}
    assert counts == {"train": 15, "val": 1, "test": 4}
    assert split != split_scenes(scenes, seed=4)
    assert set(split_scenes(["x", "y"], seed=0).values()) == {"train", "test"}  # a tiny run still has a test scene
    with pytest.raises(ValueError, match="summing to 1"):
        split_scenes(scenes, seed=0, ratios=(0.5, 0.5, 0.5))


def test_all_questions_of_a_scene_share_a_split() -> None:
    records = [
        Record(f"{scene}-{k}", f"{scene}.mp4", "How many?", (), float(k), "object_counting", scene, "synthetic")
        for scene in (f"s{i}" for i in range(12))
        for k in range(4)
    ]
    split_records = assign_splits(records, seed=1)
    for scene in {r.scene for r in records}:
        assert len({r.split for r in split_records if r.scene == scene}) == 1
    assert {r.split for r in split_records} == {"train", "val", "test"}


def test_a_split_with_no_usable_record_names_the_skipped_rows_and_where_their_videos_were_looked_for(tmp_path: Path, caplog) -> None:
    from embodied_data.manifest import records_of_split

    many = [Record(f"m{i}", f"scans/s{i}.mp4", "How many chair(s) are in this room?", (), 3.0, "object_counting", f"s{i}", "vsi_bench", "train")
            for i in range(40)]
    path = write_manifest(many, tmp_path / "manifest.parquet")  # no video exists
    with caplog.at_level("WARNING", logger="embodied_data.manifest"):
        records, report = read_manifest(path)
    assert (records, len(report)) == ([], 40)
    # Each missing video is kept in the report, but the log names only the first few, then one count.
    assert 2 <= len(caplog.records) <= 10
    assert "m0" in caplog.text and "40 records skipped (40 x missing video)" in caplog.text
    with pytest.raises(ValueError) as refused:
        records_of_split(records, "train", path, report)
    message = str(refused.value)
    assert "no usable records in split 'train'" in message and "40 x missing video" in message
    assert str((tmp_path / "scans/s0.mp4").resolve()) in message and "--videos DIR" in message

    touch_videos(tmp_path)
    kept = write_manifest(sample_records(), tmp_path / "m2.parquet")
    records, report = read_manifest(kept)
    assert [r.id for r in records_of_split(records, "all", kept, report)] == ["q1", "q2", "q3"]
    assert [r.id for r in records_of_split(records, "test", kept, report)] == ["q3"]
    with pytest.raises(ValueError, match=r"split 'val' \(usable records by split: test 1, train 2\)"):
        records_of_split(records, "val", kept, report)
