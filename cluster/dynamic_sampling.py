"""DAPO's dynamic sampling with refill: while fewer than `trainer.prompts_per_step` groups of a step have unequal
rewards, more prompts are sampled and scored (at most `trainer.dynamic_sampling_rounds` extra rounds) and their
informative groups added, so the learner's batch holds that many groups that all carry a gradient.

Each round asks for the missing groups divided by the fraction kept so far (all `prompts_per_step` while none was
kept), since that many are expected to come back informative; informative groups beyond the batch are dropped, as DAPO
does. A step that still falls short after its rounds is learned on what it has (logged as `groups/kept`). The step's
reward metrics stay those of its first round, the batch as drawn, so runs with and without refill compare.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

from cluster.stages import RolloutPipeline, Scored, score


def refill(cfg, scorer, pipeline: RolloutPipeline, scored: Scored, step: int) -> Scored:
    """`scored` with the informative groups of up to `trainer.dynamic_sampling_rounds` extra rounds appended (in the
    order they were drawn) until it holds `trainer.prompts_per_step` groups; unchanged when the option is off."""
    rounds = cfg.trainer.dynamic_sampling_rounds
    if not rounds or not cfg.learner.grpo.filter_equal_reward_groups:
        return scored
    started = time.perf_counter()
    target = cfg.trainer.prompts_per_step
    groups = list(scored.groups[:target])
    generated, kept_generated, done = target, len(scored.groups), 0
    while len(groups) < target and done < rounds:
        done += 1
        missing = target - len(groups)
        keep_rate = kept_generated / generated
        count = target if keep_rate == 0 else min(target, math.ceil(missing / keep_rate))
        extra = score(cfg, scorer, pipeline.extra_rollouts(step, count, done))
        generated += count
        kept_generated += len(extra.groups)
        groups += extra.groups[:missing]
    metrics = {
        "groups/refill_rounds": done,
        "groups/generated": generated,
        "groups/kept": len(groups),
        "time/refill": time.perf_counter() - started,
    }
    return replace(scored, groups=groups, filtered_groups=generated - kept_generated, extra_metrics=metrics)
