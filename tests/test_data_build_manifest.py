"""`embodied-r data build-manifest`: EgoSchema and MVBench loaders on small files in their published layouts, and the
manifest written from the real VSI-Bench and UrbanVideo-Bench files, with the skip report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.cli import main
from embodied_data.build_manifest import build_manifest
from embodied_data.loaders import load_egoschema, load_mvbench
from embodied_data.manifest import read_manifest, read_manifest_metadata



def _question(q_uid: str, **overrides: str) -> dict:
    item = {"q_uid": q_uid, "google_drive_id": "x", "question": f"What is c doing in {q_uid}?"}
    item.update({f"option {i}": f"option text {i}" for i in range(5)})
    item.update(overrides)
    return item


@pytest.fixture
def egoschema(tmp_path: Path) -> Path:
    """An EgoSchema download: questions.json, subset_answers.json, videos/<q_uid>.mp4."""
    root = tmp_path / "EgoSchema"
    (root / "videos").mkdir(parents=True)
    questions = [
        _question("q-ok"),
        _question("q-novideo"),
        _question("q-unanswered"),
        _question("q-blank", **{"option 3": "  "}),
        _question("q-badanswer"),
        _question("q-dup", **{"option 4": "option text 0."}),
        "not an object",
        _question("q-ok"),
    ]
    (root / "questions.json").write_text(json.dumps(questions))
    answers = {"q-ok": 2, "q-novideo": 0, "q-blank": 1, "q-badanswer": 7, "q-dup": "4"}
    (root / "subset_answers.json").write_text(json.dumps(answers))
    for q_uid in ("q-ok", "q-unanswered", "q-blank", "q-badanswer", "q-dup"):
        (root / "videos" / f"{q_uid}.mp4").write_bytes(b"\0")
    return root


def test_egoschema_loader_keeps_answered_questions_and_names_every_skip(egoschema: Path):
    records, report = load_egoschema(egoschema / "questions.json", egoschema / "videos", verbose=False)
    assert [r.id for r in records] == ["egoschema_q-ok"]
    record = records[0]
    assert record.answer == "C" and len(record.choices) == 5 and record.category == "EgoSchema"
    assert record.split == "test" and record.video == str((egoschema / "videos" / "q-ok.mp4").resolve())
    reasons = dict(report.skipped)
    assert reasons["egoschema_q-novideo"].startswith("missing video: q-novideo.mp4")
    assert reasons["egoschema_q-unanswered"].startswith("no published answer")
    assert "option 3" in reasons["egoschema_q-blank"]
    assert "not an option index" in reasons["egoschema_q-badanswer"]
    assert "duplicate choices" in reasons["egoschema_q-dup"]
    assert reasons["item 6"].startswith("malformed item")
    assert len(report) == 7  # the repeated q-ok too
    kept, kept_report = load_egoschema(egoschema / "questions.json", egoschema / "videos", allow_missing_videos=True,
                                       verbose=False)
    assert [r.id for r in kept] == ["egoschema_q-ok", "egoschema_q-novideo"]
    assert kept[1].video == "q-novideo.mp4" and len(kept_report) == 6


def test_egoschema_without_answers_file_is_a_clear_error(tmp_path: Path):
    (tmp_path / "questions.json").write_text(json.dumps([_question("a")]))
    with pytest.raises(FileNotFoundError, match="subset_answers.json"):
        load_egoschema(tmp_path / "questions.json", verbose=False)


@pytest.fixture
def mvbench(tmp_path: Path) -> Path:
    """An MVBench download: json/egocentric_navigation.json, video/vlnqa/<video>."""
    root = tmp_path / "MVBench"
    (root / "json").mkdir(parents=True)
    (root / "video" / "vlnqa").mkdir(parents=True)
    nav = ["Move forward", "Stop", "Turn left", "Turn right"]
    items = [
        {"video": "a.mp4", "question": "This is a navigation video of an agent following instruction: \"walk to "
         "the sofa\" What is the next action it should take?", "candidates": nav, "answer": "turn left."},
        {"video": "b.mp4", "question": "What next?", "candidates": nav, "answer": "Fly up"},
        {"video": "missing.mp4", "question": "What next?", "candidates": nav, "answer": "Stop"},
        {"video": "a.mp4", "question": "What next?", "candidates": ["Stop", "stop"], "answer": "Stop"},
        {"video": "a.mp4", "question": "What next?", "candidates": ["Stop"], "answer": "Stop"},
        {"video": "a.mp4", "question": "", "candidates": nav, "answer": "Stop"},
    ]
    (root / "json" / "egocentric_navigation.json").write_text(json.dumps(items))
    for name in ("a.mp4", "b.mp4"):
        (root / "video" / "vlnqa" / name).write_bytes(b"\0")
    return root


def test_mvbench_loader_maps_answer_text_to_its_letter(mvbench: Path):
    records, report = load_mvbench(mvbench / "json" / "egocentric_navigation.json", mvbench / "video" / "vlnqa",
                                   verbose=False)
    assert [r.id for r in records] == ["mvbench_egocentric_navigation_0"]
    assert records[0].answer == "C" and records[0].category == "Egocentric Navigation" and records[0].scene == "a"
    reasons = dict(report.skipped)
    assert "'Fly up' is not one of the candidates" in reasons["mvbench_egocentric_navigation_1"]
    assert reasons["mvbench_egocentric_navigation_2"].startswith("missing video: missing.mp4")
    assert "duplicate choices" in reasons["mvbench_egocentric_navigation_3"]
    assert "2..10 options" in reasons["mvbench_egocentric_navigation_4"]
    assert reasons["mvbench_egocentric_navigation_5"].startswith("missing value")
    with pytest.raises(ValueError, match="not supported"):
        load_mvbench(mvbench / "json" / "egocentric_navigation.json", task="action_sequence", verbose=False)


def test_build_manifest_from_folders_uses_the_published_video_folders(egoschema: Path, mvbench: Path, tmp_path: Path):
    built = build_manifest("mvbench", mvbench, tmp_path / "mv.parquet")
    assert built.video_dir == mvbench / "video" / "vlnqa" and len(built.records) == 1
    records, report = read_manifest(tmp_path / "mv.parquet")
    assert [r.answer for r in records] == ["C"] and len(report) == 0
    built = build_manifest("egoschema", egoschema, tmp_path / "ego.parquet", keep_missing_videos=True)
    assert len(built.records) == 2 and [r.id for r in built.without_video] == ["egoschema_q-novideo"]
    assert built.without_video[0].video == str((egoschema / "videos" / "q-novideo.mp4").resolve())
    meta = read_manifest_metadata(tmp_path / "ego.parquet")
    assert meta["format"] == "egoschema" and meta["rows"] == 2 and meta["without_video"] == 1
    assert {r.split for r in read_manifest(tmp_path / "ego.parquet", allow_missing_videos=True)[0]} == {"test"}


def test_cli_prints_the_skip_report_and_refuses_an_empty_manifest(egoschema: Path, tmp_path: Path, capsys):
    out = tmp_path / "m.parquet"
    assert main(["data", "build-manifest", "egoschema", str(egoschema / "questions.json"), "--videos",
                 str(egoschema / "videos"), "--out", str(out), "--show-skipped", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: 1 rows" in printed and "7 records skipped" in printed
    assert "skipped egoschema_q-novideo: missing video" in printed and "... and 5 more" in printed
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "questions.json").write_text(json.dumps([_question("a")]))
    (empty / "subset_answers.json").write_text(json.dumps({}))
    assert main(["data", "build-manifest", "egoschema", str(empty), "--out", str(tmp_path / "e.parquet")]) == 2
    err = capsys.readouterr().err
    assert "no usable record" in err and "egoschema_a: no published answer" in err
    assert not (tmp_path / "e.parquet").exists()
    (empty / "questions.json").write_text("{not json")
    assert main(["data", "build-manifest", "egoschema", str(empty), "--out", str(tmp_path / "e.parquet")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_real_vsi_bench_without_videos_kept_by_the_flag(tmp_path: Path, capsys, vsi_bench_dir):
    out = tmp_path / "vsi.parquet"
    assert main(["data", "build-manifest", "vsi_bench", str(vsi_bench_dir), "--out", str(out)]) == 2
    assert "5130 x missing video" in capsys.readouterr().err and not out.exists()
    assert main(["data", "build-manifest", "vsi_bench", str(vsi_bench_dir), "--out", str(out),
                 "--keep-missing-videos"]) == 0
    printed = capsys.readouterr().out
    assert "5130 rows" in printed and "kept without a video file (--keep-missing-videos): 5130 rows, 288 videos" in printed
    records, report = read_manifest(out, allow_missing_videos=True)
    assert len(records) == 5130 and len(report) == 0
    assert {r.split for r in records} == {"train", "val", "test"}


def test_real_urbanvideo_bench_with_its_videos(tmp_path: Path, capsys, realdata):
    root = realdata / "urbanvideo_bench"
    out = tmp_path / "urban.parquet"
    assert main(["data", "build-manifest", "urbanvideo", str(root), "--videos", str(root / "videos"), "--out",
                 str(out), "--split", "test"]) == 0
    assert "5348 records skipped (5348 x missing video)" in capsys.readouterr().out
    records, report = read_manifest(out)
    assert sorted(r.id for r in records) == [f"urban_{i}" for i in range(171, 178)] and len(report) == 0
    assert {r.split for r in records} == {"test"} and all(Path(r.video).is_file() for r in records)


def test_merge_manifests_concatenates_and_reports_repeated_ids(egoschema: Path, mvbench: Path, tmp_path: Path, capsys):
    build_manifest("egoschema", egoschema, tmp_path / "a" / "ego.parquet", keep_missing_videos=True)
    build_manifest("mvbench", mvbench, tmp_path / "b" / "mv.parquet")
    out = tmp_path / "all.parquet"
    assert main(["data", "merge-manifests", str(tmp_path / "a" / "ego.parquet"), str(tmp_path / "b" / "mv.parquet"),
                 str(tmp_path / "b" / "mv.parquet"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: 3 rows from 3 manifests; skipped: 1 records skipped (1 x duplicate id)" in printed
    records, report = read_manifest(out, allow_missing_videos=True)
    assert [r.id for r in records] == ["egoschema_q-ok", "egoschema_q-novideo", "mvbench_egocentric_navigation_0"]
    assert all(Path(r.video).is_absolute() for r in records) and len(report) == 0
    assert read_manifest_metadata(out)["inputs"][0]["built"]["format"] == "egoschema"
