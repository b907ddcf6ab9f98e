"""perception.ground_truth_frames (issue 11's key-frame ablation): ground-truth captions at the 1-fps frames (the
manifest's), at the key frames the extractor picks from the mp4, or at as many uniformly spread frames."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.config import ConfigError, load_config
from cluster.data import RunData
from cluster.perceive import describe_videos, truth_path, uniform_frames
from embodied_data.manifest import read_gt_captions, read_manifest
from embodied_data.synthetic.captioner import describe_frame
from embodied_data.synthetic.dataset import generate_dataset
from embodied_data.synthetic.groundtruth import frames_from_dicts
from perception.keyframes import extract_keyframes

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
NUM_FRAMES = 16


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gt_frames")
    generate_dataset(str(out), num_scenes=3, seed=5, questions_per_scene=2, num_frames=NUM_FRAMES, fps=2.0, size=64,
                     progress=False)
    return out


def run_data(out: Path) -> RunData:
    """Every record of the dataset (all splits), so all three videos are captioned."""
    manifest = out / "manifest.parquet"
    records, skipped = read_manifest(manifest)
    return RunData(records=records, manifest=str(manifest), gt_captions=read_gt_captions(manifest), skipped=skipped)


def config(mode: str, *overrides: str):
    return load_config(TINY, ["perception.source=ground_truth", f"perception.ground_truth_frames={mode}", *overrides])


def observations(caption: str) -> list[str]:
    """The observation of each `Frame i: [After ..., ]Observe: ...` line."""
    return [line.split("Observe: ", 1)[1] for line in caption.splitlines()]


def truth(video: str):
    import json

    return frames_from_dicts(json.loads(truth_path(video).read_text())["frames"])


def by_video(data: RunData, texts: dict[str, str]) -> dict[str, str]:
    captions: dict[str, str] = {}
    for record in data.records:
        assert captions.setdefault(record.video, texts[record.id]) == texts[record.id]  # one text per video
    return captions


def test_the_default_is_the_manifests_one_fps_caption(dataset):
    data = run_data(dataset)
    assert load_config(TINY).perception.ground_truth_frames == "one_fps"
    texts = describe_videos(config("one_fps"), data, vlm_path="unused")
    assert len(texts) == len(data.records)
    assert by_video(data, texts) == {r.video: data.gt_captions[r.video] for r in data.records}


# max_keyframes=5 clamps the extractor's picks (at 64 px every 1-fps sample is a key frame), so the key frames are a
# strict subset of the samples and differ from the uniform ones: both modes must follow the extractor's config.
@pytest.mark.parametrize("max_keyframes", [32, 5])
def test_keyframes_caption_exactly_the_extractors_frames_and_uniform_as_many_spread_evenly(dataset, max_keyframes):
    data = run_data(dataset)
    cfg_k = config("keyframes", f"perception.keyframes.max_keyframes={max_keyframes}")
    cfg_u = config("uniform", f"perception.keyframes.max_keyframes={max_keyframes}")
    keyed = by_video(data, describe_videos(cfg_k, data, vlm_path="unused"))
    spread = by_video(data, describe_videos(cfg_u, data, vlm_path="unused"))
    assert len(keyed) == len(spread) == 3
    if max_keyframes == 5:
        assert keyed != spread  # [0, 4, 8, 12, 15] against [0, 4, 8, 11, 15] on this dataset
    for video, caption in keyed.items():
        frames = truth(video)
        assert len(frames) == NUM_FRAMES
        picked = extract_keyframes(video, cfg_k.perception.keyframes).frames
        assert 4 <= len(picked) <= max_keyframes
        assert observations(caption) == [describe_frame(frames[i]) for i in picked]
        uniform = observations(spread[video])
        assert len(uniform) == len(picked)
        assert uniform[0] == describe_frame(frames[0]) and uniform[-1] == describe_frame(frames[-1])
        assert uniform == [describe_frame(frames[i]) for i in uniform_frames(NUM_FRAMES, len(picked))]


def test_uniform_frames_include_first_and_last_evenly_spaced():
    assert uniform_frames(16, 4) == [0, 5, 10, 15]
    assert uniform_frames(16, 16) == list(range(16))
    assert uniform_frames(9, 2) == [0, 8]
    with pytest.raises(ValueError, match="cannot spread 17 frames"):
        uniform_frames(16, 17)


def test_an_unknown_mode_is_refused_when_the_config_loads():
    with pytest.raises(ConfigError, match="ground_truth_frames"):
        config("everything")


def test_a_video_without_its_truth_json_is_named(dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    data = run_data(copy)
    gone = truth_path(data.records[0].video)
    gone.unlink()
    for mode in ("keyframes", "uniform"):
        with pytest.raises(FileNotFoundError, match=rf"{gone.name}.*ground_truth_frames=one_fps"):
            describe_videos(config(mode), data, vlm_path="unused")
    assert len(describe_videos(config("one_fps"), data, vlm_path="unused")) == len(data.records)  # needs no JSON


def test_a_manifest_without_ground_truth_is_refused_naming_the_mode(dataset):
    data = run_data(dataset)
    real = RunData(records=data.records, manifest="real/manifest.parquet", gt_captions={}, skipped=data.skipped)
    with pytest.raises(ValueError, match=r"real/manifest.parquet has none.*ground_truth_frames=keyframes needs a synthetic"):
        describe_videos(config("keyframes"), real, vlm_path="unused")
