"""The stages of one GRPO step, each returning a typed result with its own metrics: a step's prompts, their rollouts, their rewards and advantages, and the learner's update; and the rollout pipeline that overlaps the next step's generation with this step's learning (trainer.max_staleness)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch

from cluster.data import EpochSampler
from learner.algo import make_algorithm
from learner.batch import Sample
from learner.filtering import kept_sample_indices
from rewards.combine import accuracy_by_category
from rewards.overlong import soft_overlong_penalty
from rewards.schedule import RewardStage, weights_at
from rollout.engines.base import derive_seed
from rollout.types import Completion

log = logging.getLogger("embodied_r.train")

LEARNER_METRICS = ("loss", "kl", "clip_fraction", "grad_norm", "lr", "logprob_mismatch")


@dataclass
class StepPrompts:
    """The prompts of one step, drawn from the sampler, and their sampling seeds (by step and dataset index, never by
    worker: a run's samples do not depend on the worker count, and a replaced worker regenerates the same ones)."""

    step: int
    epoch: int
    indices: list[int]
    prompts: list  # cluster.prompts.Prompt: token ids and the record they ask about
    seeds: list[int]


def take_prompts(sampler: EpochSampler, prompts: list, count: int, step: int, seed: int) -> StepPrompts:
    indices, epoch = sampler.take(count)
    seeds = [derive_seed(seed, "step", step, "prompt", index) for index in indices]
    return StepPrompts(step, epoch, indices, [prompts[i] for i in indices], seeds)


@dataclass
class Rollouts:
    """G completions per prompt of one step, sampled by the policy after update `policy_version` (0: the policy RL
    started from), and how long the driver waited for them."""

    batch: StepPrompts
    groups: list[list[Completion]]
    policy_version: int
    wait_s: float
    generate_s: float  # from submission to the last shard's return

    @property
    def completions(self) -> list[Completion]:
        return [c for group in self.groups for c in group]

    def metrics(self) -> dict:
        completions = self.completions
        generated = sum(len(c.token_ids) for c in completions)
        return {
            "response/length": generated / max(len(completions), 1),
            "response/finished": sum(c.finished for c in completions) / max(len(completions), 1),
            "time/rollout": self.wait_s,
            "throughput/tokens_per_s": generated / max(self.generate_s, 1e-9),
        }


@dataclass
class Scored:
    """The rewards of a step's completions under the step's reward weights, their group advantages, and the samples
    the learner gets, group by group (groups with equal rewards dropped when learner.grpo.filter_equal_reward_groups is
    on; samples whose judgement failed left out of their group, rewards.combine.RewardBatch.excluded)."""

    rewards: object  # rewards.combine.RewardBatch
    weights: RewardStage
    groups: list[list[Sample]]  # the learner's samples, per prompt (a group may hold fewer than G: exclusions)
    filtered_groups: int
    seconds: float
    categories: list[str] = field(default_factory=list)
    overlong: list[float] = field(default_factory=list)  # the soft overlong penalty of each sample, when it is on
    advantages: list[float] = field(default_factory=list)  # per completion, in rollout order (0 where excluded)
    # completion index (in rollout order) -> its sample's position in `samples`, for the completions the learner gets
    sample_of_completion: dict[int, int] = field(default_factory=dict)
    extra_metrics: dict = field(default_factory=dict)  # what dynamic sampling's refill adds (cluster/dynamic_sampling.py)

    @property
    def samples(self) -> list[Sample]:
        return [sample for group in self.groups for sample in group]

    def metrics(self) -> dict:
        penalty = {"reward/overlong_penalty": sum(self.overlong) / len(self.overlong)} if self.overlong else {}
        return {
            **penalty,
            **self.rewards.metrics(),
            **accuracy_by_category(self.rewards.accuracy, self.categories),
            "reward/weights/format": self.weights.format,
            "reward/weights/accuracy": self.weights.accuracy,
            "reward/weights/consistency": self.weights.consistency,
            "groups/filtered": self.filtered_groups,
            "time/reward": self.seconds,
            **self.extra_metrics,
        }


def score(cfg, scorer, rollouts: Rollouts) -> Scored:
    started = time.perf_counter()
    batch, group_size = rollouts.batch, cfg.sampling.num_samples
    completions = rollouts.completions
    weights = weights_at(cfg.rewards, epoch=batch.epoch, step=batch.step - 1)
    records = [p.record for p in batch.prompts for _ in range(group_size)]
    rewards = scorer.score([c.text for c in completions], records, group_size, weights)
    overlong: list[float] = []
    if cfg.rewards.overlong_penalty:  # DAPO: long answers are told so before they are cut off
        overlong = [soft_overlong_penalty(len(c.token_ids), cfg.sampling.max_new_tokens, cfg.rewards.overlong_cache_tokens)
                    for c in completions]
        rewards.total = [total + penalty for total, penalty in zip(rewards.total, overlong)]
    algorithm = make_algorithm(cfg.learner.grpo, cfg.sampling.max_new_tokens)
    # A failed judgement's sample is left out of its group's statistics and of the batch (rewards/combine.py).
    valid = [not out for out in rewards.excluded]
    advantages = algorithm.advantages(torch.tensor(rewards.total), group_size, valid=torch.tensor(valid)).tolist()
    if cfg.learner.grpo.filter_equal_reward_groups:
        # DAPO's dynamic sampling (learner/filtering.py); with every group dropped the step has no gradient to take.
        kept = set(kept_sample_indices(rewards.total, group_size, valid=valid))
    else:
        kept = {i for i, ok in enumerate(valid) if ok}
    groups: list[list[Sample]] = []
    sample_of_completion: dict[int, int] = {}
    for begin in range(0, len(completions), group_size):
        members = [i for i in range(begin, begin + group_size) if i in kept]
        if members:
            sample_of_completion.update((i, len(sample_of_completion)) for i in members)
            groups.append([_sample(completions[i], advantages[i]) for i in members])
    filtered = len(completions) // group_size - len(groups)
    return Scored(rewards, weights, groups, filtered, time.perf_counter() - started, [r.category for r in records], overlong,
                  advantages, sample_of_completion)


def example_lines(rollouts: Rollouts, scored: Scored, count: int, width: int = 320) -> list[str]:
    """What the log shows of a step: `count` completions of its first group (the best and the worst by reward, then
    the next ones), each with its reward terms, the judge's letter, the total and the advantage, the text on one line."""
    if count <= 0 or not rollouts.groups:
        return []
    rewards, group_size = scored.rewards, len(rollouts.groups[0])
    record = rollouts.batch.prompts[0].record
    by_reward = sorted(range(group_size), key=lambda i: -rewards.total[i] if math.isfinite(rewards.total[i]) else math.inf)
    picked = [by_reward[0], by_reward[-1]] + by_reward[1:-1] if group_size > 1 else by_reward
    lines = [f"step {rollouts.batch.step} example: record {record.id} ({record.category}), gold answer {record.answer}"]
    for i in picked[:count]:
        text = " ".join(rollouts.groups[0][i].text.split())
        text = text if len(text) <= width else text[: width - 3] + "..."
        consistency = rewards.consistency[i]
        judge = rewards.judge_letters[i] if rewards.judge_letters else None
        advantage = scored.advantages[i] if scored.advantages else math.nan
        lines.append(
            f"  [{i}] format {rewards.format[i]:.0f} accuracy {rewards.accuracy[i]:.2f} consistency "
            f"{'-' if consistency is None else f'{consistency:.0f}'} (judge {judge or '-'}) total {rewards.total[i]:.3f} "
            f"advantage {advantage:+.3f}: {text!r}"
        )
    return lines


def _sample(completion: Completion, advantage: float) -> Sample:
    """The learner's view of a completion, stamped with the policy version that really sampled it (the worker's)."""
    return Sample(completion.prompt_token_ids, completion.token_ids, completion.logprobs, float(advantage),
                  truncated=not completion.finished, policy_version=completion.policy_version)


@dataclass
class Learned:
    """The learner's step on the scored samples (NaN metrics, written as null, when every group was filtered out and
    the learner was not called: its weights are then unchanged)."""

    metrics_by_name: dict
    updated: bool
    seconds: float

    @property
    def sample_mismatch(self) -> list[float]:
        """Each learned sample's mean |learner - sampler| log-prob over its tokens (empty when the step was skipped)."""
        return list(self.metrics_by_name.get("sample_mismatch") or [])

    def metrics(self) -> dict:
        """The learner's metrics by their row names (engine/learner mismatch is the rollout's), the optional ones
        (tis/*, staleness/*, truncated_masked) only when the learner reported them; the per-sample list stays out."""
        named = {("rollout/logprob_mismatch" if k == "logprob_mismatch" else k): v
                 for k, v in self.metrics_by_name.items() if k != "sample_mismatch"}
        return {**named, "time/learn": self.seconds}


def learn(learner, scored: Scored, step: int) -> Learned:
    started = time.perf_counter()
    if not scored.samples:
        log.info("step %d: all %d groups had equal rewards; learner step skipped", step, scored.filtered_groups)
        return Learned(dict.fromkeys(LEARNER_METRICS, float("nan")), False, time.perf_counter() - started)
    # The learner is at version step - 1 (versions are steps): the samples' staleness is measured against it.
    return Learned(learner.train_step(scored.samples, current_version=step - 1), True, time.perf_counter() - started)


class RolloutPipeline:
    """Keeps the rollout pool busy: with `max_staleness` 1, the next step's generation is submitted as soon as this
    step's rollouts are in, so it runs while this step is scored and learned, sampled by the policy one step behind.

    Weights reach the workers between generation batches, never during one: an update made while a generation is in
    flight is owed and sent as soon as that generation is collected. A step after which a checkpoint is written is a
    barrier (nothing is generated ahead of it), so the checkpoint holds everything the next step needs and a resumed
    run repeats the uninterrupted one. With `max_staleness` 0 this is the synchronous loop: generate, score, learn,
    send, each step in turn.

    Versions are step numbers: `learner_version` is the last step learned, `policy_version` the step whose weights the
    workers hold (a step whose groups were all filtered out changes no weight and owes nothing).
    """

    def __init__(self, cfg, pools, sampler: EpochSampler, prompts: list, start_step: int):
        if cfg.trainer.max_staleness not in (0, 1):
            raise ValueError(
                f"trainer.max_staleness must be 0 (synchronous) or 1 (the next step's rollouts overlap this step's "
                f"learning), got {cfg.trainer.max_staleness}"
            )
        self.cfg = cfg
        self.pools = pools  # its rollout pool and weight sync are rebuilt when the learner restarts
        self.sampler = sampler
        self.prompts = prompts
        self.policy_version = self.learner_version = start_step
        self._owed = False  # an update the workers have not received
        self._in_flight: tuple[StepPrompts, object, int] | None = None  # (prompts, pending generation, their version)
        pools.rollout.on_replaced = self._replaced

    def _replaced(self, workers: list[int]) -> None:
        """A rollout worker died while generating and was replaced (rollout.pool.RolloutPool.collect): it starts from
        models.policy, so the weight group is rebuilt and everyone is sent the learner's current weights, stamped with
        their version: the lost shard, generated again next, carries the version that really sampled it."""
        self.pools.sync.connect()
        self.pools.sync.broadcast(self.learner_version)
        self.policy_version = self.learner_version
        self._owed = False
        log.warning("rollout worker(s) %s replaced and given the learner's current weights (version %d); their shards "
                    "are generated again", workers, self.learner_version)

    def is_barrier(self, step: int) -> bool:
        every = self.cfg.trainer.checkpoint_every
        return step >= self.cfg.trainer.steps or bool(every and step % every == 0)

    def start(self, step: int) -> None:
        """Submits `step`'s generation to the workers without waiting for it."""
        batch = take_prompts(self.sampler, self.prompts, self.cfg.trainer.prompts_per_step, step, self.cfg.trainer.seed)
        pending = self.pools.rollout.submit([p.token_ids for p in batch.prompts], self.cfg.sampling, batch.seeds)
        self._in_flight = (batch, pending, self.policy_version)

    def extra_rollouts(self, step: int, count: int, round_index: int) -> Rollouts:
        """`count` more prompts for `step` (dynamic sampling's refill round `round_index`), generated now by the policy
        the workers hold; with the next step's generation in flight they run after it, and no weights are sent."""
        indices, epoch = self.sampler.take(count)
        seeds = [derive_seed(self.cfg.trainer.seed, "step", step, "refill", round_index, "prompt", i) for i in indices]
        batch = StepPrompts(step, epoch, indices, [self.prompts[i] for i in indices], seeds)
        pending = self.pools.rollout.submit([p.token_ids for p in batch.prompts], self.cfg.sampling, batch.seeds)
        waited = time.perf_counter()
        groups = self.pools.rollout.collect(pending)
        done = time.perf_counter()
        return Rollouts(batch, groups, self.policy_version, done - waited, done - pending.submitted_at)

    def rollouts(self, step: int) -> tuple[Rollouts, dict]:
        """`step`'s rollouts (submitted now if they were not started ahead); then the weights owed to the workers are
        sent, now that they are idle, and the next step's generation starts when it may overlap. Returns the rollouts
        and the metrics of the broadcast made here (empty when there was none)."""
        if self._in_flight is None:
            self.start(step)
        batch, pending, version = self._in_flight
        if batch.step != step:
            raise RuntimeError(f"the rollout pipeline holds step {batch.step}'s generation, not step {step}'s")
        waited = time.perf_counter()
        groups = self.pools.rollout.collect(pending)
        done = time.perf_counter()
        self._in_flight = None
        synced = self._send_owed(verify_anyway=False)
        if self.cfg.trainer.max_staleness > 0 and not self.is_barrier(step):
            self.start(step + 1)
        return Rollouts(batch, groups, version, done - waited, done - pending.submitted_at), synced

    def learned(self, step: int, updated: bool) -> dict:
        """The learner finished `step`: its new weights go to the workers now if they are idle (and are checked, with
        weight_sync.verify), else once they are. Returns the metrics of what was done now."""
        self.learner_version = step
        self._owed = self._owed or updated
        if self._in_flight is not None:
            return {}
        return self._send_owed(verify_anyway=self.cfg.weight_sync.verify)

    def _send_owed(self, verify_anyway: bool) -> dict:
        synced: dict = {}
        if self._owed:
            synced = self.pools.sync.broadcast(self.learner_version)
            self._owed = False
            verify_anyway = self.cfg.weight_sync.verify
        elif self.policy_version != self.learner_version:
            # Steps whose groups were all filtered out changed no weight: the workers' weights are this version too.
            self.pools.rollout.set_policy_version(self.learner_version)
        if verify_anyway:
            synced.update(self.pools.sync.verify())
        self.policy_version = self.learner_version
        return synced

    def reset(self, start_step: int) -> None:
        """After the learner went back to a checkpoint (it restarted, and its weights were sent to the workers): what
        was in flight was sampled by weights that no longer exist, and is dropped."""
        self._in_flight = None
        self._owed = False
        self.policy_version = self.learner_version = start_step


def step_row(step: int, rollouts: Rollouts, scored: Scored, learned: Learned, synced: dict, faults: dict, started: float) -> dict:
    """The step's metrics row as metrics.jsonl holds it."""
    return {
        "step": step,
        "epoch": rollouts.batch.epoch,
        **scored.metrics(),
        **learned.metrics(),
        "rollout/policy_version": rollouts.policy_version,
        "rollout/staleness": (step - 1) - rollouts.policy_version,  # learner updates between sampling and learning
        **rollouts.metrics(),
        **({"sync/bytes": 0, "time/sync": 0.0} | synced),
        "time/step": time.perf_counter() - started,
        **faults,
    }
