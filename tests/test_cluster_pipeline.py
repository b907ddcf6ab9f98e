"""The rollout pipeline (cluster/stages.py): what runs when, with max_staleness 0 and 1.

Unit tests use recording stand-ins for the rollout pool and the weight sync (the real ones are in the end-to-end test
at the bottom): weights never reach a worker during a generation, the next step's generation is submitted before this
step is learned, checkpoint steps are barriers, and the versions and staleness add up.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from cluster.data import EpochSampler
from cluster.stages import RolloutPipeline

ROOT = Path(__file__).resolve().parents[1]


class Recorder:
    """The rollout pool and weight sync as far as the pipeline uses them, writing every call to one event list."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.generating: set[int] = set()  # ids of submitted, uncollected generations

    # rollout pool
    def submit(self, prompts, sampling, seeds):
        pending = SimpleNamespace(id=len(self.events), prompts=prompts, seeds=seeds, submitted_at=0.0)
        self.generating.add(pending.id)
        self.events.append(("submit", tuple(seeds)))
        return pending

    def collect(self, pending):
        self.generating.discard(pending.id)
        self.events.append(("collect", tuple(pending.seeds)))
        return [[SimpleNamespace(token_ids=[1], finished=True)] for _ in pending.prompts]

    # weight sync
    def broadcast(self, version: int) -> dict:
        assert not self.generating, "weights sent while a generation was in flight"
        self.events.append(("broadcast",))
        return {"sync/bytes": 1, "time/sync": 0.0}

    def verify(self) -> dict:
        self.events.append(("verify",))
        return {"sync/match": 1.0}

    def set_policy_version(self, version: int) -> None:
        assert not self.generating, "weights relabelled while a generation was in flight"
        self.events.append(("relabel", version))


def make_pipeline(max_staleness: int, steps: int = 5, checkpoint_every: int = 0, start_step: int = 0):
    cfg = SimpleNamespace(
        trainer=SimpleNamespace(max_staleness=max_staleness, steps=steps, checkpoint_every=checkpoint_every,
                                prompts_per_step=2, seed=0),
        weight_sync=SimpleNamespace(verify=True),
        sampling=SimpleNamespace(),
    )
    recorder = Recorder()
    pools = SimpleNamespace(rollout=recorder, sync=recorder)
    prompts = [SimpleNamespace(token_ids=[i]) for i in range(6)]
    return RolloutPipeline(cfg, pools, EpochSampler(len(prompts), 0), prompts, start_step), recorder


def run(pipeline: RolloutPipeline, recorder: Recorder, first: int, last: int) -> list[dict]:
    """The driver's loop, with 'learn' an event; returns what each step saw."""
    seen = []
    for step in range(first, last + 1):
        rollouts, synced = pipeline.rollouts(step)
        recorder.events.append(("learn", step))
        synced = {**synced, **pipeline.learned(step, updated=True)}
        seen.append({"step": step, "version": rollouts.policy_version, "staleness": step - 1 - rollouts.policy_version,
                     "synced": synced, "seeds": rollouts.batch.seeds})
    return seen


def kinds(events: list[tuple]) -> list[str]:
    return [event[0] if event[0] != "learn" else f"learn{event[1]}" for event in events]


def test_synchronous_pipeline_is_generate_learn_send_each_step():
    pipeline, recorder = make_pipeline(max_staleness=0, steps=3)
    seen = run(pipeline, recorder, 1, 3)
    assert kinds(recorder.events) == ["submit", "collect", "learn1", "broadcast", "verify"] * 1 + [
        "submit", "collect", "learn2", "broadcast", "verify", "submit", "collect", "learn3", "broadcast", "verify"]
    assert [s["staleness"] for s in seen] == [0, 0, 0] and [s["version"] for s in seen] == [0, 1, 2]
    assert all(s["synced"] == {"sync/bytes": 1, "time/sync": 0.0, "sync/match": 1.0} for s in seen)


def test_one_step_off_overlaps_the_next_generation_with_learning_and_sends_weights_between_batches():
    pipeline, recorder = make_pipeline(max_staleness=1, steps=4)
    seen = run(pipeline, recorder, 1, 4)
    assert kinds(recorder.events) == [
        "submit", "collect", "submit", "learn1",  # step 2's generation runs while step 1 is learned
        "collect", "broadcast", "verify", "submit", "learn2",  # step 1's weights go out once step 2's batch is in
        "collect", "broadcast", "verify", "submit", "learn3",
        "collect", "broadcast", "verify", "learn4", "broadcast", "verify",  # the last step: nothing ahead, sent at once
    ]
    assert [s["version"] for s in seen] == [0, 0, 1, 2]
    assert [s["staleness"] for s in seen] == [0, 1, 1, 1]


def test_checkpoint_steps_are_barriers_so_a_resumed_run_repeats_the_uninterrupted_one():
    pipeline, recorder = make_pipeline(max_staleness=1, steps=6, checkpoint_every=3)
    seen = run(pipeline, recorder, 1, 6)
    # Nothing is generated ahead of step 3's checkpoint: step 4 starts from step 3's weights, staleness 0.
    assert [s["staleness"] for s in seen] == [0, 1, 1, 0, 1, 1]
    assert kinds(recorder.events)[kinds(recorder.events).index("learn3") + 1 :][:4] == ["broadcast", "verify", "submit", "collect"]
    # A run resumed from step 3's checkpoint (sampler restored, version 3) does what the uninterrupted one did next.
    resumed, resumed_recorder = make_pipeline(max_staleness=1, steps=6, checkpoint_every=3, start_step=3)
    resumed.sampler.take(3 * 2)  # the sampler as the checkpoint restores it: three steps of two prompts taken
    again = run(resumed, resumed_recorder, 4, 6)
    assert [(s["version"], s["staleness"], s["seeds"]) for s in again] == [(s["version"], s["staleness"], s["seeds"]) for s in seen[3:]]


def test_a_step_without_update_owes_no_broadcast_and_reset_drops_the_generation_in_flight():
    pipeline, recorder = make_pipeline(max_staleness=1, steps=5)
    pipeline.rollouts(1)
    assert pipeline.learned(1, updated=False) == {}  # a generation is in flight: nothing may be sent now anyway
    pipeline.rollouts(2)
    assert ("broadcast",) not in recorder.events  # step 1 changed no weight: nothing was owed
    # ... but the workers' weights are version 1 now (the same bytes): relabelled, so completions carry it.
    assert ("relabel", 1) in recorder.events
    submitted = kinds(recorder.events).count("submit")  # step 3's generation is in flight now
    pipeline.reset(2)  # the learner went back to a checkpoint at step 2: that generation is dropped
    assert (pipeline.policy_version, pipeline.learner_version) == (2, 2)
    rollouts, _ = pipeline.rollouts(3)
    assert kinds(recorder.events).count("submit") == submitted + 2  # step 3 again, then step 4 ahead
    assert rollouts.policy_version == 2


def test_phase_clock_splits_the_wall_time_into_the_marked_phases():
    from cluster.metrics import PhaseClock

    ticks = iter([0.0, 2.0, 5.0, 6.0])
    clock = PhaseClock()
    clock._now = lambda: next(ticks)
    clock._last = clock._started = clock._now()
    clock.mark("start-up")
    clock.mark("steps")
    clock.mark("start-up")  # a phase that comes back adds up
    assert clock.as_dict() == {"total_s": 6.0, "start-up_s": 3.0, "steps_s": 3.0}
    assert clock.summary() == "wall time 6.0 s: start-up 3.0 s (50%), steps 3.0 s (50%)"


def test_only_zero_and_one_step_of_staleness_are_served():
    with pytest.raises(ValueError, match="max_staleness must be 0"):
        make_pipeline(max_staleness=2)


# ---------------------------------------------------------------------------------------------------------- real run


@pytest.mark.slow
def test_one_step_off_training_end_to_end(tmp_path):
    """max_staleness=1 on real Ray, DeepSpeed and transformers: every step after the first is sampled one version
    behind (TIS on), except after the step-2 checkpoint (a barrier), and the workers hold the learner's weights after
    every send. (That a barrier makes resume exact is shown above with the pipeline alone; resume itself is the fault
    suite's, tests/test_faults.py.)"""
    import ray

    from cluster.config import load_config
    from cluster.driver import train

    overrides = [
        "trainer.steps=4", "trainer.checkpoint_every=2", "trainer.max_staleness=1", "learner.grpo.tis_cap=2.0",
        "weight_sync.verify=true", "trainer.progress=false", "trainer.prompts_per_step=2", "trainer.sft_warmup_steps=30",
        "data.synthetic.scenes=2", "data.synthetic.questions_per_scene=4", "sampling.max_new_tokens=48",
        "perception.source=ground_truth",
        "rewards.judge.enabled=false", "rewards.stages=[{start: 0, format: 0.3, accuracy: 0.7, consistency: 0.0}]",
    ]
    first = tmp_path / "uninterrupted"
    try:
        train(load_config(str(ROOT / "configs" / "tiny.yaml"), [f"run_dir={first}", *overrides]))
        rows = [json.loads(line) for line in (first / "metrics.jsonl").read_text().splitlines()]
        assert [r["rollout/staleness"] for r in rows] == [0, 1, 0, 1]  # step 2's checkpoint is a barrier
        assert [r["staleness/mean"] for r in rows] == [0.0, 1.0, 0.0, 1.0]
        assert all(0 < r["tis/weight_mean"] and r["tis/weight_max"] >= r["tis/weight_mean"] for r in rows)
        # Sampled by the weights being learned (staleness 0), the engine's and the learner's log-probs agree up to float
        # rounding: every importance weight is 1 and none is capped. (The weights themselves are checked exactly
        # against a real engine in test_learner_actor.py.)
        for r in rows:
            if r["rollout/staleness"] == 0:
                assert r["tis/weight_mean"] == pytest.approx(1.0, abs=1e-3) and r["tis/capped_fraction"] == 0.0, r
        assert all(r["sync/match"] == 1.0 for r in rows if "sync/match" in r)
        # Each send is checked in the row of the step that makes it: step 1's update is owed until step 2's batch is
        # in, step 2's (a barrier) goes at once, step 3's waits for step 4's batch, step 4's (the last) goes at once.
        assert ["sync/match" in r for r in rows] == [False, True, False, True]
    finally:
        ray.shutdown()
    wall = json.loads((first / "wall_time.json").read_text())
    assert wall["GRPO steps_s"] > 0 and wall["warm-up_s"] > 0
    assert sum(v for k, v in wall.items() if k != "total_s") == pytest.approx(wall["total_s"])
