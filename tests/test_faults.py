"""The fault suite: real training runs (real Ray, DeepSpeed, gloo, transformers) in their own driver processes, with a
rollout worker SIGKILLed mid-run and the driver while it writes a checkpoint. Each run must end with the metrics of the
run that lost nothing (timings and fault counts aside), bit for bit. The drills themselves are bench/faults.py's, here
at a smaller size; every run is bounded in time, and each kill waits a bounded time for its target. A lost learner
(its process gone, rebuilt from the last checkpoint, the rows equal) is drilled with its whole node in
tests/test_multinode.py, and every victim at random by `python bench/faults.py --chaos`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("psutil")

REPO = Path(__file__).resolve().parents[1]

from bench import faults  # noqa: E402

pytestmark = pytest.mark.slow

STEPS = 6
SPEC = faults.RunSpec(
    config=REPO / "configs" / "tiny.yaml",
    overrides=[
        f"trainer.steps={STEPS}",
        "trainer.checkpoint_every=2",
        "trainer.keep_checkpoints=3",
        "trainer.prompts_per_step=2",
        "trainer.sft_warmup_steps=80",  # enough for the answer format, so rewards and advantages are not all 0
        "trainer.progress=false",
        "weight_sync.verify=true",
        "data.synthetic.scenes=2",
        "data.synthetic.questions_per_scene=4",
        "sampling.max_new_tokens=48",
        # consistency on from the first step, so the judge pool is part of every run
        "rewards.stages=[{start: 0, format: 0.1, accuracy: 0.7, consistency: 0.2}]",
    ],
    timeout_s=420,
)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("baseline")
    rows = faults.run_baseline(run_dir, SPEC)
    assert [row["step"] for row in rows] == list(range(1, STEPS + 1))
    assert all(row["faults/rollout_workers_replaced"] == 0 and row["faults/learner_restarts"] == 0 for row in rows)
    assert any(row["reward/total"] > 0 for row in rows) and any(row["grad_norm"] for row in rows)
    return run_dir


def test_differences_name_the_step_and_the_metric():
    """The comparison itself: timings and fault counts are ignored, anything else that differs is named."""
    rows = [{"step": 1, "loss": 0.5, "time/step": 1.0, "faults/learner_restarts": 0}]
    assert faults.differences([{**rows[0], "time/step": 9.0, "faults/learner_restarts": 1}], rows) == []
    assert faults.differences([{**rows[0], "loss": 0.25}], rows) == ["step 1: loss 0.25 != 0.5"]
    assert faults.differences([], rows) == ["steps [] instead of [1]"]


# One run loses both, so the suite pays one drill's start-ups: the driver dies while writing step 4's checkpoint,
# leaving no process behind, and the resumed run skips the partial checkpoint (with a warning naming it) and goes back
# to step 2; in that resumed run a rollout worker dies while generating step 3 (it is replaced, gets the weights, its
# shard is generated again).
@pytest.mark.parametrize("kills", [[("checkpoint", 4), ("worker", 3)]], ids=["checkpoint-then-worker"])
def test_a_run_that_loses_processes_ends_with_the_uninterrupted_runs_metrics(tmp_path, baseline, kills):
    result = faults.drill(kills, tmp_path / "run", baseline, SPEC)
    assert result.problems == []
    assert [row["step"] for row in result.rows] == list(range(1, STEPS + 1))
    victims = [name for name, _ in kills]
    if "worker" in victims:
        assert result.faults["faults/rollout_workers_replaced"] == 1
        assert all(row["sync/match"] == 1.0 for row in result.rows)  # the replacement held the learner's weights
    if "checkpoint" in victims:
        assert result.leftover_processes == 0
        # Two driver processes, and the resumed one described nothing again: the perception cache held every video.
        requests = re.findall(r"perception: (\d+) VLM requests this run", (result.run_dir / "train.log").read_text())
        assert len(requests) == 2 and requests[-1] == "0", requests


def test_kill_plans_are_parsed_and_checked():
    assert faults.parse_kills("worker@4,checkpoint@6") == [("worker", 4), ("checkpoint", 6)]
    with pytest.raises(Exception, match="VICTIM@STEP"):
        faults.parse_kills("judge@3")


@pytest.mark.parametrize("seed", [0, 1, 7, 123])
def test_a_chaos_plan_hits_every_victim_at_spaced_steps_and_is_its_seeds(seed):
    plan = faults.chaos_plan(seed, faults=8, steps=60, first=3)
    assert plan == faults.chaos_plan(seed, faults=8, steps=60, first=3), "the printed seed must replay the same plan"
    victims, steps = zip(*plan)
    assert len(plan) == 8 and set(victims) == set(faults.CHAOS_VICTIMS)
    assert steps[0] >= 3 and steps[-1] <= 59
    assert all(later - earlier >= 2 for earlier, later in zip(steps, steps[1:]))


def test_a_chaos_plan_that_cannot_fit_is_refused():
    with pytest.raises(ValueError, match="one of each victim"):
        faults.chaos_plan(0, faults=2, steps=60)
    with pytest.raises(ValueError, match="more --steps"):
        faults.chaos_plan(0, faults=8, steps=12)


def test_failpoints_are_inert_unless_named_for_that_step(monkeypatch):
    import threading

    from cluster.failpoints import ENV, failpoint

    monkeypatch.delenv(ENV, raising=False)
    failpoint("checkpoint.before_driver_state", 4)  # returns at once
    monkeypatch.setenv(ENV, "checkpoint.before_driver_state@4")
    failpoint("checkpoint.before_driver_state", 3)
    failpoint("other", 4)
    stopped = threading.Thread(target=failpoint, args=("checkpoint.before_driver_state", 4), daemon=True)
    stopped.start()
    stopped.join(timeout=0.5)
    assert stopped.is_alive(), "the named failpoint of that step must hold the driver until it is killed"
    assert faults.next_failpoint([("worker", 3), ("checkpoint", 4)]) == "checkpoint.before_driver_state@4"
    assert faults.next_failpoint([("driver", 2), ("checkpoint", 4)]) == ""


def test_a_failpoint_of_a_list_pauses_until_the_drill_releases_it(monkeypatch, tmp_path):
    import threading
    import time

    from cluster.failpoints import ENV, RELEASE_ENV, failpoint_pause

    monkeypatch.setenv(ENV, "step.begin@2, step.begin@4")
    monkeypatch.setenv(RELEASE_ENV, str(tmp_path))
    started = time.monotonic()
    failpoint_pause("step.begin", 3, 30.0)  # not named: at once
    (tmp_path / "step.begin@4").touch()
    failpoint_pause("step.begin", 4, 30.0)  # named, already released: at once
    assert time.monotonic() - started < 5
    paused = threading.Thread(target=failpoint_pause, args=("step.begin", 2, 60.0), daemon=True)
    paused.start()
    paused.join(timeout=0.5)
    assert paused.is_alive(), "the named pause must hold until it is released"
    (tmp_path / "step.begin@2").touch()
    paused.join(timeout=10)
    assert not paused.is_alive()
