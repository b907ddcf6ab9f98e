"""The scoring and learning stages of a GRPO step (cluster/stages.py), with the real reward combination: DAPO's soft
overlong penalty added to the totals, truncated completions marked for the learner, the equal-reward filter, and the
learner step skipped when every group was filtered out."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from cluster.stages import LEARNER_METRICS, Rollouts, StepPrompts, learn, score
from learner.algo.grpo import group_advantages

G = 4


class Scorer:
    """The reward scorer without a judge: the real combination of format and accuracy."""

    def score(self, texts, records, group_size, weights):
        from rewards.combine import score_group_batch

        return score_group_batch(texts, records, group_size, weights, None)


def _rollouts(make_record, groups: list[list[tuple[str, int, bool]]]) -> Rollouts:
    """Groups of (answer letter, completion length, finished), each group about its own question (answer B)."""
    from rollout.types import Completion

    completions = [[Completion(g, [1, 2], list(range(3, 3 + length)), [-0.5] * length,
                               f"<think>It is on my {a}.</think>\n<answer>{a}</answer>", finished, 3)
                    for a, length, finished in group] for g, group in enumerate(groups)]
    prompts = [SimpleNamespace(record=make_record(id=f"q{g}")) for g in range(len(groups))]
    return Rollouts(StepPrompts(1, 0, list(range(len(groups))), prompts, [0] * len(groups)), completions, 3, 0.0, 0.0)


def _config(max_new_tokens: int = 10, overlong: bool = False, cache: int = 4, filter_groups: bool = False):
    from omegaconf import OmegaConf

    from cluster.config import TrainConfig
    from rewards.config import RewardStage

    cfg = OmegaConf.to_object(OmegaConf.structured(TrainConfig))
    cfg.sampling.num_samples = G
    cfg.sampling.max_new_tokens = max_new_tokens
    cfg.rewards.stages = [RewardStage(start=0, format=0.3, accuracy=0.7, consistency=0.0)]
    cfg.rewards.overlong_penalty = overlong
    cfg.rewards.overlong_cache_tokens = cache
    cfg.learner.grpo.filter_equal_reward_groups = filter_groups
    return cfg


def test_the_overlong_penalty_lowers_the_totals_of_long_completions_and_truncated_ones_are_marked(make_record):
    # One answer for all, so the rewards differ only by the penalty: 0 up to 10 - 4 = 6 tokens, then -1/4 per token.
    group = [("B", 2, True), ("B", 6, True), ("B", 9, True), ("B", 10, False)]
    plain = score(_config(), Scorer(), _rollouts(make_record, [group]))
    penalised = score(_config(overlong=True), Scorer(), _rollouts(make_record, [group]))
    base = plain.rewards.total
    assert len(set(base)) == 1 and base[0] > 0
    penalties = [0.0, 0.0, -0.75, -1.0]
    assert penalised.rewards.total == pytest.approx([b + p for b, p in zip(base, penalties)])
    assert penalised.metrics()["reward/overlong_penalty"] == pytest.approx(sum(penalties) / G)
    assert "reward/overlong_penalty" not in plain.metrics()
    # The advantages are those of the penalised totals: the short answers above the long ones.
    expected = group_advantages(torch.tensor(penalised.rewards.total), G)
    assert [s.advantage for s in penalised.samples] == pytest.approx(expected.tolist(), abs=1e-6)
    assert all(s.advantage == 0.0 for s in plain.samples)  # equal totals: nothing to learn without the penalty
    # A completion cut at max_new_tokens reaches the learner marked truncated (learner.grpo.mask_truncated drops it).
    assert [s.truncated for s in penalised.samples] == [False, False, False, True]
    assert all(s.policy_version == 3 for s in penalised.samples)


def test_the_equal_reward_filter_drops_exactly_the_groups_whose_rewards_are_all_equal(make_record):
    groups = [
        [("B", 3, True)] * G,  # all right: equal rewards
        [("B", 3, True), ("A", 3, True), ("B", 3, True), ("C", 3, True)],  # mixed
        [("A", 3, True)] * G,  # all wrong: equal rewards
    ]
    kept = score(_config(filter_groups=True), Scorer(), _rollouts(make_record, groups))
    assert kept.filtered_groups == 2 and kept.metrics()["groups/filtered"] == 2
    assert len(kept.groups) == 1 and [len(s.completion_ids) for s in kept.groups[0]] == [3] * G
    everything = score(_config(filter_groups=False), Scorer(), _rollouts(make_record, groups))
    assert everything.filtered_groups == 0 and len(everything.samples) == 3 * G
    assert [s.advantage for s in kept.samples] == [s.advantage for s in everything.samples[G : 2 * G]]
    # The reward metrics are the whole batch's, filtered or not.
    assert kept.metrics()["reward/total"] == everything.metrics()["reward/total"]


class Learner:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def train_step(self, samples, current_version=None):
        self.calls.append((len(samples), current_version))
        return dict.fromkeys(LEARNER_METRICS, 0.5)


def test_learn_skips_the_learner_when_every_group_was_filtered_and_calls_it_otherwise(make_record):
    groups = [[("B", 3, True)] * G, [("A", 3, True)] * G]
    filtered = score(_config(filter_groups=True), Scorer(), _rollouts(make_record, groups))
    assert filtered.samples == [] and filtered.filtered_groups == 2
    learner = Learner()
    skipped = learn(learner, filtered, step=5)
    assert learner.calls == [] and skipped.updated is False
    assert set(skipped.metrics_by_name) == set(LEARNER_METRICS)
    assert all(math.isnan(v) for v in skipped.metrics_by_name.values())

    mixed = score(_config(filter_groups=True), Scorer(), _rollouts(make_record, [[("B", 3, True), ("A", 3, True)] * 2]))
    learned = learn(learner, mixed, step=5)
    assert learned.updated is True and learner.calls == [(G, 4)]  # the learner is at version step - 1
    assert learned.metrics()["loss"] == 0.5
