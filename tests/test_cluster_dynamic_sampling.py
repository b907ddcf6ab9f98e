"""Dynamic sampling's refill (cluster/dynamic_sampling.py): extra rounds top the batch up to prompts_per_step
informative groups, sized by the fraction kept so far, bounded in rounds, in the order drawn, with distinct seeds.

The rollout pool is a recording stand-in and `score` a stand-in that keeps the groups of a fixed set of prompts (the
filter itself is tested in test_learner_grpo.py). The refill on real components (Ray, the rollout pool, the reward
scorer, DeepSpeed) runs at the bottom, in a one-step-off training run with the filter and the refill on."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import cluster.dynamic_sampling as dynamic_sampling
from cluster.data import EpochSampler
from cluster.stages import RolloutPipeline, Scored

GROUP = 2


class Pool:
    def __init__(self) -> None:
        self.submitted: list[list[int]] = []

    def submit(self, prompts, sampling, seeds):
        self.submitted.append([p[0] for p in prompts])
        return SimpleNamespace(prompts=prompts, seeds=seeds, submitted_at=0.0)

    def collect(self, pending):
        return [[SimpleNamespace(prompt=p[0], seed=s)] * GROUP for p, s in zip(pending.prompts, pending.seeds)]


def scored_for(rollouts, informative: set[int]) -> Scored:
    """Two samples per group, tagged (prompt, seed); only the informative prompts' groups are kept."""
    groups = [[(c.prompt, c.seed) for c in group] for group in rollouts.groups if group[0].prompt in informative]
    filtered = len(rollouts.groups) - len(groups)
    return Scored(rewards=None, weights=None, groups=groups, filtered_groups=filtered, seconds=0.0)


def setup(monkeypatch, informative: set[int], rounds: int, per_step: int = 4, num_prompts: int = 40):
    monkeypatch.setattr(dynamic_sampling, "score", lambda cfg, scorer, rollouts: scored_for(rollouts, informative))
    cfg = SimpleNamespace(
        trainer=SimpleNamespace(max_staleness=0, steps=5, checkpoint_every=0, prompts_per_step=per_step, seed=0,
                                dynamic_sampling_rounds=rounds),
        weight_sync=SimpleNamespace(verify=False),
        sampling=SimpleNamespace(num_samples=GROUP),
        learner=SimpleNamespace(grpo=SimpleNamespace(filter_equal_reward_groups=True)),
    )
    pool = Pool()
    prompts = [SimpleNamespace(token_ids=[i]) for i in range(num_prompts)]
    pipeline = RolloutPipeline(cfg, SimpleNamespace(rollout=pool, sync=None), EpochSampler(num_prompts, 0), prompts, 0)
    rollouts, _ = pipeline.rollouts(1)
    first = scored_for(rollouts, informative)
    return cfg, pipeline, pool, first


def test_refill_tops_the_batch_up_to_prompts_per_step_informative_groups(monkeypatch):
    informative = set(range(0, 40, 2))  # half of the prompts give unequal rewards
    cfg, pipeline, pool, first = setup(monkeypatch, informative, rounds=5)
    assert len(first.samples) // GROUP < 4, "the step's own batch must fall short for this test to refill"
    filled = dynamic_sampling.refill(cfg, None, pipeline, first, 1)
    assert len(filled.samples) == 4 * GROUP
    assert {prompt for prompt, _ in filled.samples} <= informative
    assert filled.samples[: len(first.samples)] == first.samples  # the step's own groups first, in order
    rounds = filled.extra_metrics["groups/refill_rounds"]
    assert rounds == len(pool.submitted) - 1 and rounds >= 1
    kept_first = len(first.samples) // GROUP
    if kept_first:  # the next round asks for the missing groups over the fraction kept
        assert len(pool.submitted[1]) == min(4, -(-(4 - kept_first) * 4 // kept_first))
    else:
        assert len(pool.submitted[1]) == 4
    assert filled.extra_metrics["groups/kept"] == 4
    generated = sum(len(batch) for batch in pool.submitted)
    assert filled.extra_metrics["groups/generated"] == generated
    drawn = [p for batch in pool.submitted for p in batch]
    assert filled.filtered_groups == sum(p not in informative for p in drawn)
    assert len(set(seed for _, seed in filled.samples)) == 4  # refill rounds draw their own seeds


def test_refill_stops_after_its_rounds_and_learns_on_what_it_has(monkeypatch):
    cfg, pipeline, pool, first = setup(monkeypatch, informative={5}, rounds=2)
    filled = dynamic_sampling.refill(cfg, None, pipeline, first, 1)
    assert filled.extra_metrics["groups/refill_rounds"] == 2 and len(pool.submitted) == 3
    assert len(filled.samples) == GROUP * sum(5 in batch for batch in pool.submitted)
    assert all(prompt == 5 for prompt, _ in filled.samples)


def test_no_round_when_the_batch_is_full_or_the_option_off(monkeypatch):
    cfg, pipeline, pool, first = setup(monkeypatch, informative=set(range(40)), rounds=3)
    assert dynamic_sampling.refill(cfg, None, pipeline, first, 1).extra_metrics["groups/refill_rounds"] == 0
    assert len(pool.submitted) == 1
    cfg, pipeline, pool, first = setup(monkeypatch, informative=set(), rounds=0)
    assert dynamic_sampling.refill(cfg, None, pipeline, first, 1) is first and len(pool.submitted) == 1


def test_rounds_need_the_filter(tmp_path):
    from cluster.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="trainer.dynamic_sampling_rounds"):
        load_config(None, ["trainer.dynamic_sampling_rounds=2"])
    load_config(None, ["trainer.dynamic_sampling_rounds=2", "learner.grpo.filter_equal_reward_groups=true"])


# ---------------------------------------------------------------------------------------------------------- real run


@pytest.mark.slow
def test_refill_and_the_skipped_learner_step_on_real_pools(tmp_path):
    """learner.grpo.filter_equal_reward_groups with trainer.dynamic_sampling_rounds=2 in a real one-step-off run: each
    refill round's prompts are generated by the real rollout pool (while the next step's generation is in flight) and
    scored by the real scorer; a step left with no informative group skips the learner (its metrics null)."""
    import json
    from pathlib import Path

    import ray

    from cluster.config import load_config
    from cluster.driver import train

    per_step, rounds = 2, 2
    overrides = [
        f"run_dir={tmp_path}", "trainer.steps=3", "trainer.max_staleness=1", "trainer.checkpoint_every=0",
        f"trainer.prompts_per_step={per_step}", f"trainer.dynamic_sampling_rounds={rounds}",
        "learner.grpo.filter_equal_reward_groups=true", "weight_sync.verify=true", "trainer.progress=false",
        "trainer.sft_warmup_steps=30", "data.synthetic.scenes=2", "data.synthetic.questions_per_scene=4",
        "sampling.max_new_tokens=48", "perception.source=ground_truth", "rewards.judge.enabled=false",
        "rewards.stages=[{start: 0, format: 0.3, accuracy: 0.7, consistency: 0.0}]", "tracking.plots=false",
    ]
    try:
        train(load_config(str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"), overrides))
    finally:
        ray.shutdown()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        done, generated, kept = r["groups/refill_rounds"], r["groups/generated"], r["groups/kept"]
        assert 0 <= done <= rounds and 0 <= kept <= per_step
        # Rounds run exactly while the batch is short; every round generates at least one more group.
        assert (done == 0) == (generated == per_step), r
        assert kept == per_step or done == rounds, r
        assert generated >= per_step + done and r["groups/filtered"] <= generated - kept
        if done:
            assert r["time/refill"] > 0
        if kept == 0:  # nothing informative: the learner was not called, and no weights changed
            assert r["loss"] is None and r["grad_norm"] is None and r["lr"] is None, r
        else:
            assert r["loss"] is not None and r["lr"] is not None, r
        assert r.get("sync/match", 1.0) == 1.0
    # This tiny policy gives most groups equal rewards (all 0): the refill really ran against the pools.
    assert any(r["groups/refill_rounds"] > 0 for r in rows), rows
    # trainer.checkpoint_every=0: the run is checkpointed once, at its end.
    assert [p.name for p in sorted((tmp_path / "checkpoints").iterdir())] == ["step_000003"]
    assert (tmp_path / "checkpoints" / "step_000003" / "driver_state.json").is_file()
