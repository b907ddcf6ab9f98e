"""Metrics tracking (cluster/tracking/): the same rows and names in metrics.jsonl, the TensorBoard event files (read back
with tensorboard's EventAccumulator) and W&B (a stand-in wandb module: no account, no network), rewinds included."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from cluster.config import TRACKING_BACKENDS, ConfigError, TrackingConfig, load_config
from cluster.metrics import read_metrics
from cluster.tracking import make_tracker


def _rows(steps, scale: float = 1.0) -> list[dict]:
    return [{"step": s, "epoch": 0, "reward/total": 0.1 * s * scale, "reward/accuracy/object_counting": 0.5 * scale,
             "time/step": 1.5 + s, "loss": float("nan") if s == 2 else -0.01 * s, "sync/match": True} for s in steps]


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(str(log_dir), size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def _tracking(tmp_path: Path, backends=("jsonl", "tensorboard")) -> TrackingConfig:
    return TrackingConfig(backends=list(backends), tensorboard_dir=str(tmp_path / "tb"))


def test_tensorboard_holds_the_jsonl_rows_names_steps_and_values(tmp_path):
    tracker = make_tracker(_tracking(tmp_path), tmp_path, start_step=0)
    for row in _rows(range(1, 4)):
        tracker.write(row)
    tracker.close()
    jsonl = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in jsonl] == [1, 2, 3] and jsonl[1]["loss"] is None  # NaN is null, as before
    scalars = _scalars(tmp_path / "tb")
    assert set(scalars) == set(jsonl[0]) - {"step"}  # every metric name, the same as the jsonl keys
    assert [step for step, _ in scalars["reward/total"]] == [1, 2, 3]
    assert [v for _, v in scalars["reward/total"]] == pytest.approx([0.1, 0.2, 0.3], rel=1e-6)
    assert scalars["time/step"][-1] == (3, pytest.approx(4.5))
    assert scalars["sync/match"] == [(1, 1.0), (2, 1.0), (3, 1.0)]
    assert [step for step, _ in scalars["loss"]] == [1, 3]  # the null loss is left out, not drawn as 0


def test_rewind_and_resume_rewrite_the_later_steps_in_every_backend(tmp_path):
    tracker = make_tracker(_tracking(tmp_path), tmp_path, start_step=0)
    for row in _rows(range(1, 5)):
        tracker.write(row)
    tracker.rewind(2)  # a learner restart back to the step-2 checkpoint
    for row in _rows(range(3, 6), scale=2.0):
        tracker.write(row)
    tracker.close()
    resumed = make_tracker(_tracking(tmp_path), tmp_path, start_step=4)  # killed after step 5, resumed from 4
    resumed.write(_rows([5], scale=3.0)[0])
    resumed.close()

    expected = [(1, 0.1), (2, 0.2), (3, 0.6), (4, 0.8), (5, 1.5)]
    jsonl = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["reward/total"]) for r in jsonl] == [(s, pytest.approx(v)) for s, v in expected]
    tb = _scalars(tmp_path / "tb")["reward/total"]
    assert [s for s, _ in tb] == [s for s, _ in expected]
    assert [v for _, v in tb] == pytest.approx([v for _, v in expected], rel=1e-6)


def test_a_fresh_run_in_an_old_run_dir_starts_every_backend_empty(tmp_path):
    old = make_tracker(_tracking(tmp_path), tmp_path, start_step=0)
    for row in _rows(range(1, 4)):
        old.write(row)
    old.close()
    fresh = make_tracker(_tracking(tmp_path), tmp_path, start_step=0)
    fresh.write(_rows([1], scale=5.0)[0])
    fresh.close()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1]
    assert _scalars(tmp_path / "tb")["reward/total"] == [(1, pytest.approx(0.5))]


class _FakeRun:
    def __init__(self, **kwargs):
        self.init_kwargs, self.logged, self.metrics, self.finished = kwargs, [], [], False

    def define_metric(self, name, step_metric=None):
        self.metrics.append((name, step_metric))

    def log(self, data):
        self.logged.append(dict(data))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in for the wandb package (isolates the backend's calls; the real one needs the optional extra)."""
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**kwargs):
        module.runs.append(_FakeRun(**kwargs))
        return module.runs[-1]

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_wandb_gets_the_same_names_with_step_as_the_x_axis_and_resumes_its_run(tmp_path, fake_wandb):
    tracking = _tracking(tmp_path, backends=("jsonl", "wandb"))
    tracking.wandb.dir, tracking.wandb.project = str(tmp_path / "wb"), "proj"
    tracker = make_tracker(tracking, tmp_path / "run_a", start_step=0)
    for row in _rows([1, 2]):
        tracker.write(row)
    tracker.close()
    run = fake_wandb.runs[0]
    assert run.init_kwargs["project"] == "proj" and run.init_kwargs["name"] == "run_a"
    assert run.init_kwargs["mode"] is None  # "" leaves it to WANDB_MODE, which wandb reads itself
    assert run.init_kwargs["dir"] == str(tmp_path / "wb") and run.finished
    assert ("*", "step") in run.metrics
    jsonl = read_metrics(tmp_path / "run_a" / "metrics.jsonl")
    assert set(run.logged[0]) == set(jsonl[0]) and run.logged[0]["step"] == 1
    assert "loss" not in run.logged[1]  # null in jsonl, left out here

    tracking.wandb.mode, tracking.wandb.name = "offline", "named"
    make_tracker(tracking, tmp_path / "run_a", start_step=2).close()
    again = fake_wandb.runs[1].init_kwargs
    assert again["mode"] == "offline" and again["name"] == "named"
    assert again["id"] == run.init_kwargs["id"] and again["resume"] == "allow"  # the same W&B run continues


def test_tracking_backends_are_checked_at_load():
    assert load_config(None).tracking.backends == ["jsonl", "tensorboard"]
    assert set(TRACKING_BACKENDS) == {p.stem for p in (Path(__file__).parents[1] / "cluster" / "tracking").glob("*.py")} - {"__init__", "base"}
    with pytest.raises(ConfigError, match=r"tracking.backends must each be one of jsonl, tensorboard, wandb; got \['mlflow'\]"):
        load_config(None, ["tracking.backends=[jsonl,mlflow]"])
    with pytest.raises(ConfigError, match="tracking.backends must include jsonl"):
        load_config(None, ["tracking.backends=[tensorboard]"])
    with pytest.raises(ConfigError, match="tracking.wandb.mode must be one of"):
        load_config(None, ["tracking.wandb.mode=sometimes"])
