"""cluster/plots.py: the training run's PNGs from metrics rows (which plots, which series, gaps for missing values,
atomic writes) and the 0..1 bar charts (bar length proportional to the value)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cluster import plots


def _rows(steps: int, with_eval: bool) -> list[dict]:
    rows = []
    for s in range(1, steps + 1):
        row = {"step": s, "epoch": 0, "reward/total": 0.1 * s, "reward/format": 0.9, "reward/accuracy": 0.05 * s,
               "reward/judged": 12.0, "reward/judge_latency_s": 0.3, "reward/weights/format": 0.7,
               "kl": None if s == 2 else 0.001 * s, "response/length": 40.0 + s, "time/step": 2.0, "time/rollout": 1.2,
               "reward/accuracy/object_counting": 0.5}
        if s % 2:
            row["reward/accuracy/route_planning"] = 0.25  # a category absent from some steps' batches
        if with_eval and s % 2 == 0:
            row.update({"eval/accuracy": 0.4, "eval/format": 1.0, "eval/accuracy/route_planning": 0.3})
        rows.append(row)
    return rows


def test_training_plots_write_one_png_per_group_atomically(tmp_path):
    written = plots.training_plots(_rows(6, with_eval=True), tmp_path / "plots")
    assert sorted(p.name for p in written) == sorted(
        ["rewards.png", "accuracy_by_category.png", "response_length.png", "kl.png", "time.png", "eval.png"])
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (900, 480)
    assert not list((tmp_path / "plots").glob(".*"))  # no temp files left


def test_a_run_without_evaluation_or_kl_gets_no_empty_plot(tmp_path):
    rows = [{k: v for k, v in row.items() if k != "kl"} for row in _rows(3, with_eval=False)]
    names = {p.name for p in plots.training_plots(rows, tmp_path)}
    assert "eval.png" not in names and "kl.png" not in names and "rewards.png" in names
    assert plots.training_plots([], tmp_path / "none") == []


def test_series_are_the_reward_terms_and_the_categories_with_gaps_not_zeros():
    rows = _rows(4, with_eval=True)
    assert plots._names(rows, plots._is_reward_term) == ["reward/accuracy", "reward/format", "reward/total"]
    assert plots._names(rows, plots._category("eval/accuracy/")) == ["eval/accuracy/route_planning"]
    assert plots._points(rows, "kl") == ([1, 3, 4], [0.001, 0.003, 0.004])  # the null step is a gap
    assert plots._points(rows, "reward/accuracy/route_planning") == ([1, 3], [0.25, 0.25])


def test_plot_run_reads_the_run_dirs_metrics(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(3, with_eval=False)))
    assert (tmp_path / "plots" / "rewards.png") in plots.plot_run(tmp_path)


def test_accuracy_bars_are_proportional_to_the_value(tmp_path):
    def blue_pixels(accuracy: float) -> int:
        path = plots.accuracy_bars([{"category": "c", "kind": "multiple_choice", "accuracy": accuracy}], tmp_path / f"{accuracy}.png", "t")
        return int((np.asarray(Image.open(path).convert("RGB")) == (66, 118, 180)).all(axis=-1).sum())

    full, half = blue_pixels(1.0), blue_pixels(0.5)
    assert full > 1000 and half / full == pytest.approx(0.5, abs=0.02)
    assert blue_pixels(0.0) == 0


def test_run_plots_draw_in_the_background_and_finish_with_every_row(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in _rows(2, with_eval=False)))
    run_plots = plots.RunPlots(tmp_path)
    run_plots.request()  # drawn from the 2 rows read now
    metrics.write_text("".join(json.dumps(r) + "\n" for r in _rows(4, with_eval=True)))
    written = {p.name for p in run_plots.finish()}
    assert "eval.png" in written and (tmp_path / "plots" / "rewards.png").is_file()
    assert plots.RunPlots(tmp_path / "off", enabled=False).finish() == [] and not (tmp_path / "off").exists()
