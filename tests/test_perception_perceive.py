"""`embodied-r perceive` (cluster/perceive_cmd.py) on a real Ray perception pool: a manifest of real videos (plus a
corrupt and a missing one) described with the tiny VLM into the run's cache, the counts it prints, resuming from the
cache, the --config form, and errors that say what to pass."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from cluster.perceive_cmd import register
from embodied_data.manifest import write_manifest
from embodied_data.records import Record
from perception.config import KeyframeConfig
from perception.keyframes import extract_keyframes

ray = pytest.importorskip("ray")

SETTINGS = ["perception.vlm.max_new_tokens=6", "perception.num_cpus_per_replica=0.5", "perception.torch_threads=1"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, realdata) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("data")
    videos = realdata / "urbanvideo_bench" / "videos"
    first = str(videos / "AerialVLN_0_30BUDKLTXMTIKYKFIPPOXCMISXQE5S.mp4")
    second = str(videos / "AerialVLN_1_30BUDKLTXMTIKYKFIPPOXCMISXQE5S.mp4")
    corrupt = folder / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)

    def record(id_: str, video: str, split: str = "train") -> Record:
        return Record(id=id_, video=video, question=f"Where is the tower ({id_})?", choices=("left", "right"),
                      answer="A", category="landmark_position", scene="s", source="urbanvideo_bench", split=split)

    records = [record("q1", first), record("q2", first), record("q3", second), record("bad", str(corrupt)),
               record("gone", str(folder / "missing.mp4")), record("t1", second, split="test")]
    path = write_manifest(records, folder / "manifest.parquet")
    return path, {"first": first, "second": second}


def run_perceive(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["perceive", *argv])
    return args.func(args)


def printed_count(out: str, pattern: str) -> int:
    match = re.search(pattern, out)
    assert match, f"{pattern!r} not in:\n{out}"
    return int(match.group(1))


def read_texts(path: Path) -> dict[str, str]:
    return {row["id"]: row["video_text"] for row in map(json.loads, path.read_text().splitlines())}


@pytest.mark.slow
def test_perceive_describes_a_manifest_into_the_cache_and_resumes(ray_local, tiny_vlm, manifest, tmp_path, capsys):
    path, videos = manifest
    run = tmp_path / "run"
    texts = tmp_path / "texts.jsonl"
    keyframes = {name: len(extract_keyframes(video, KeyframeConfig()).indices) for name, video in videos.items()}

    argv = ["--manifest", str(path), "--out", str(run), "--vlm", tiny_vlm, "--texts", str(texts), *SETTINGS]
    assert run_perceive(argv) == 0
    out = capsys.readouterr().out
    # Two distinct videos in the train split (q1 and q2 share one): one VLM request per key frame of each.
    assert printed_count(out, r"VLM requests made: (\d+)") == keyframes["first"] + keyframes["second"]
    assert printed_count(out, r"(\d+) of 4 records described") == 3
    assert "skipped bad: bad video" in out and "corrupt.mp4" in out
    assert "unusable row gone: missing video" in out
    described = read_texts(texts)
    assert set(described) == {"q1", "q2", "q3"}, "the test split and the failed records are not there"
    assert described["q1"] == described["q2"], "one description per video, shared by its questions"
    assert described["q3"].count("Frame ") == keyframes["second"]
    assert list((run / "perception_cache").glob("shard-*.parquet")), "descriptions are in the run's cache"

    # Again: everything from the cache, no VLM request, the same texts.
    assert run_perceive(argv) == 0
    out = capsys.readouterr().out
    assert printed_count(out, r"VLM requests made: (\d+)") == 0
    assert printed_count(out, r"described: (\d+) from the cache") == 3
    assert read_texts(texts) == described

    # The --config form, all splits: the test record's video is already described, so still no VLM request.
    config = tmp_path / "perceive.yaml"
    config.write_text(f"run_dir: {run}\ndata:\n  source: manifest\n  manifest: {path}\nmodels:\n  vlm: {tiny_vlm}\n"
                      "perception:\n  vlm:\n    max_new_tokens: 6\n  num_cpus_per_replica: 0.5\n")
    assert run_perceive(["--config", str(config), "--split", "all", "--texts", str(texts)]) == 0
    out = capsys.readouterr().out
    assert printed_count(out, r"VLM requests made: (\d+)") == 0
    everything = read_texts(texts)
    assert set(everything) == {"q1", "q2", "q3", "t1"} and everything["t1"] == described["q3"]


def test_perceive_errors_say_what_to_pass(manifest, tmp_path, capsys):
    path, _ = manifest
    assert run_perceive(["--manifest", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--vlm PATH" in err and str(tmp_path / "run" / "models" / "vlm") in err
    assert run_perceive(["--manifest", str(tmp_path / "none.parquet"), "--vlm", "x", "--out", str(tmp_path)]) == 2
    assert "none.parquet does not exist" in capsys.readouterr().err
    assert run_perceive(["--manifest", str(path), "--vlm", "x", "--out", str(tmp_path), "--split", "val"]) == 2
    err = capsys.readouterr().err
    assert "no usable records in split 'val'" in err and "test 1" in err and "train 4" in err
    assert run_perceive(["--manifest", str(path), "--vlm", str(tmp_path / "no_model"), "--out", str(tmp_path)]) == 2
    assert "cannot be loaded" in capsys.readouterr().err
