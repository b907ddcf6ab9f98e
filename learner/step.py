"""One GRPO step on one learner rank: `updates_per_batch` passes over its micro-batches, each an optimiser step with
the loss and options of the algorithm object (learner/algo), and the rank's metrics of the step."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from learner.algo import Algorithm, LossInputs, LossMetrics, LossNorm
from learner.algo.staleness import staleness_stats
from learner.algo.tis import TISStats
from learner.batch import PackedBatch, Sample, completion_logprobs


@dataclass
class MicroBatch:
    """One micro-batch and what stays fixed over the step's updates."""

    batch: PackedBatch
    weight: float  # 1, or 0 for an empty filler that keeps the ranks' collectives in step
    mask: torch.Tensor  # the tokens in the loss (Algorithm.loss_mask)
    ref_logprobs: torch.Tensor | None = None  # the frozen reference's (None without a KL term)
    old_logprobs: torch.Tensor | None = None  # pi_old and the TIS weights, set by the first pass (Algorithm.old_policy)
    is_weights: torch.Tensor | None = None


@dataclass
class FirstPass:
    """What the first update (on the policy that generated the batch) measures: its loss metrics, the learner-sampler
    log-prob gap (over the loss's tokens, and per sample over its completion) and the TIS weights' statistics."""

    loss: LossMetrics = field(default_factory=LossMetrics)
    mismatch: float = 0.0
    sample_mismatch: list[float] = field(default_factory=list)
    tis: TISStats = field(default_factory=TISStats)

    def add_mismatch(self, logprobs: torch.Tensor, batch: PackedBatch, mask: torch.Tensor) -> None:
        gap = (logprobs.detach() - batch.rollout_logprobs).abs()
        self.mismatch += (gap * mask).sum().item()
        per_row = (gap * batch.completion_mask).sum(dim=1) / batch.completion_mask.sum(dim=1).clamp(min=1)
        self.sample_mismatch += per_row.tolist()


def update(engine, algorithm: Algorithm, micro_batches: list[MicroBatch], norm: LossNorm, temperature: float,
           world_size: int, first: FirstPass | None = None) -> dict:
    """One optimiser step over every micro-batch (gradients accumulated, one step at the last); returns its loss and
    ratio statistics. `first` is given to the first update, which fixes pi_old and the TIS weights and fills it."""
    loss_sum, metrics = 0.0, LossMetrics()
    for index, micro in enumerate(micro_batches):
        engine.set_gradient_accumulation_boundary(index == len(micro_batches) - 1)
        logprobs = completion_logprobs(engine, micro.batch, temperature)
        if first is not None:
            old = algorithm.old_policy(logprobs, micro.batch, micro.mask)
            micro.old_logprobs, micro.is_weights = old.logprobs, old.is_weights
            if old.tis is not None and micro.weight:
                first.tis = first.tis + old.tis
        inputs = LossInputs(logprobs, micro.old_logprobs, micro.ref_logprobs, micro.batch.advantages, micro.mask, micro.is_weights)
        out = algorithm.loss(inputs, norm)
        # DeepSpeed averages gradients over ranks, so scale by world size to get the batch sum / batch count.
        loss = out.loss * micro.weight * world_size
        engine.backward(loss, scale_wrt_gas=False)
        engine.step()
        if micro.weight == 0:
            continue  # an empty filler micro-batch: nothing to count
        loss_sum += loss.item() / world_size
        metrics = metrics + out.metrics
        if first is not None:
            first.loss = first.loss + out.metrics
            first.add_mismatch(logprobs, micro.batch, micro.mask)
    return {
        "loss": loss_sum, "clipped_tokens": metrics.clipped_tokens, "tokens": metrics.tokens, "ratio_min": metrics.ratio_min,
        "ratio_max": metrics.ratio_max, "ratio_mean": metrics.ratio_sum / max(metrics.tokens, 1.0),
    }


def rank_metrics(algorithm: Algorithm, updates: list[dict], first: FirstPass, samples: list[Sample],
                 current_version: int | None) -> dict:
    """The step's metrics on this rank (learner.algo.metrics.combine_rank_results adds the ranks up): the loss, KL and
    mismatch of the first update, the clipped tokens averaged over the updates, each update's own statistics, and with
    TIS or a `current_version` the importance weights' (`tis/*`) and the samples' staleness (`staleness/*`)."""
    tokens = max(first.loss.tokens, 1.0)
    clipped_tokens = sum(u["clipped_tokens"] for u in updates) / len(updates)
    metrics = {
        "loss": updates[0]["loss"],
        "kl_sum": first.loss.kl_sum,
        "clipped_tokens": clipped_tokens,
        "tokens": first.loss.tokens,
        "kl": first.loss.kl_sum / tokens,
        "clip_fraction": clipped_tokens / tokens,
        "logprob_mismatch": first.mismatch / tokens,
        "sample_mismatch": first.sample_mismatch,
        "updates": updates,
        "sequences": float(len(samples)),
        "truncated_masked": float(sum(s.truncated for s in samples)) if algorithm.masks_truncated else 0.0,
    }
    if algorithm.uses_tis:
        metrics.update(first.tis.metrics())
    if current_version is not None:
        lag = staleness_stats([s.policy_version for s in samples], current_version)
        metrics.update({"staleness_sum": lag.total, "staleness/mean": lag.total / max(lag.sequences, 1.0), "staleness/max": lag.max})
    return metrics
