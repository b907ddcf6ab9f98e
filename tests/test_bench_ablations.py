"""bench/ablations.py: the variants' overrides are valid config keys, and the table reads the learning runs' summaries."""

from __future__ import annotations

import json

import pytest


from bench import ablations, learning_run  # noqa: E402
from cluster.config import load_config  # noqa: E402


@pytest.mark.parametrize("name", list(ablations.VARIANTS))
def test_every_variant_is_a_valid_learning_config(tmp_path, name):
    base, _, overrides = learning_run.load_bench_config(learning_run.DEFAULT_CONFIG, ablations.VARIANTS[name], tmp_path / "run")
    cfg = load_config(base, overrides)
    if name == "consistency_off":
        assert all(stage.consistency == 0 for stage in cfg.rewards.stages)
    if name in ("keyframes", "uniform"):
        assert str(cfg.perception.ground_truth_frames) == name and str(cfg.sft.trace_source) == "video_text"


def _summary(rl: float, consistency: float | None) -> dict:
    categories = {c: {"rl_accuracy": rl, "sft_accuracy": 0.3, "rl_consistency_rate": consistency} for c in "ab"}
    return {"categories": categories, "macro": {"start_accuracy": 0.25, "sft_accuracy": 0.3, "rl_accuracy": rl,
                                                 "constant_accuracy": 0.2, "rl_over_constant_points": 100 * (rl - 0.2)}}


def test_report_only_tabulates_the_variants_already_run(tmp_path, capsys):
    for name, rl, consistency in (("gt_captions_1fps", 0.5, 0.8), ("consistency_off", 0.4, None)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(_summary(rl, consistency)))
    assert ablations.main(["--out", str(tmp_path), "--report-only", "--variants", "gt_captions_1fps,consistency_off,uniform"]) == 0
    printed = capsys.readouterr().out
    assert "uniform: not run" in printed and "+30.0" in printed and "+20.0" in printed
    rows = json.loads((tmp_path / "ablations.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["gt_captions_1fps", "consistency_off"]
    assert rows[0]["rl_consistency_rate"] == 0.8 and rows[1]["rl_consistency_rate"] is None
    with pytest.raises(SystemExit):
        ablations.main(["--out", str(tmp_path), "--report-only", "--variants", "nope"])
