"""What every loss variant shares: its typed inputs and outputs with their metrics, the batch-wide normaliser, and the
Algorithm interface with the options every variant takes (the old-log-prob source, TIS, truncation masking)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from configtypes import registrar
from learner.algo.tis import TISStats, tis_weights
from learner.algo.truncation import loss_mask
from learner.batch import PackedBatch, Sample
from learner.config import GRPOConfig


@dataclass
class LossInputs:
    """One micro-batch's tensors, as the loss sees them. Shapes: [B, T] per token, [B] per sequence."""

    logprobs: torch.Tensor  # the policy being trained (carries the gradient)
    old_logprobs: torch.Tensor  # pi_old, the ratio's denominator (learner.grpo.old_logprobs)
    ref_logprobs: torch.Tensor | None  # the frozen KL reference; None when beta = 0
    advantages: torch.Tensor  # [B]
    mask: torch.Tensor  # float, 1 on the tokens that enter the loss (completion tokens, less any masked truncations)
    is_weights: torch.Tensor | None = None  # truncated importance-sampling weights (detached); None = off


@dataclass
class LossNorm:
    """Batch-wide counts (all micro-batches of all ranks), so the micro-batch losses add up to exactly the batch loss."""

    tokens: float  # tokens in the loss
    sequences: float  # sequences in the loss


@dataclass
class LossMetrics:
    """A micro-batch's statistics over the tokens in the loss: sums and extremes, so micro-batches and ranks add up."""

    tokens: float = 0.0
    clipped_tokens: float = 0.0
    kl_sum: float = 0.0
    ratio_sum: float = 0.0
    ratio_min: float = math.inf
    ratio_max: float = -math.inf

    @classmethod
    def of(cls, out: LossOutputs, mask: torch.Tensor) -> LossMetrics:
        in_loss = mask.bool()
        ratio = out.ratio[in_loss]
        return cls(
            tokens=in_loss.sum().item(), clipped_tokens=out.clipped.sum().item(), kl_sum=(out.kl * mask).sum().item(),
            ratio_sum=ratio.sum().item(),
            ratio_min=ratio.min().item() if ratio.numel() else math.inf,
            ratio_max=ratio.max().item() if ratio.numel() else -math.inf,
        )

    def __add__(self, other: LossMetrics) -> LossMetrics:
        return LossMetrics(
            self.tokens + other.tokens, self.clipped_tokens + other.clipped_tokens, self.kl_sum + other.kl_sum,
            self.ratio_sum + other.ratio_sum, min(self.ratio_min, other.ratio_min), max(self.ratio_max, other.ratio_max),
        )


@dataclass
class LossOutputs:
    loss: torch.Tensor  # this micro-batch's share of the batch loss: what backward() sees (before rank scaling)
    per_token: torch.Tensor  # [B, T] the per-token loss, masked
    kl: torch.Tensor  # [B, T] the KL estimate, masked (zeros without a reference)
    clipped: torch.Tensor  # [B, T] bool: tokens whose ratio the clip took (every token of a clipped GSPO sequence)
    ratio: torch.Tensor  # [B, T] detached: the importance ratio the clip acted on (GSPO: its sequence's ratio)
    metrics: LossMetrics = field(default_factory=LossMetrics)  # filled by Algorithm.loss


@dataclass
class OldPolicy:
    """What the first pass over a micro-batch fixes for all of the step's updates."""

    logprobs: torch.Tensor  # pi_old, the ratio's denominator
    is_weights: torch.Tensor | None  # TIS weights min(pi_old / pi_sampler, cap); None without TIS
    tis: TISStats | None  # their statistics before the cap; None without TIS


ALGORITHMS: dict[str, type[Algorithm]] = {}  # learner.grpo.algorithm -> its variant, filled by @register_algorithm


# @register_algorithm("name"): the loss variant `name` (a value of learner.grpo.algorithm) is this Algorithm subclass.
register_algorithm = registrar(ALGORITHMS, "algorithm", attribute="name")


class Algorithm:
    """A loss variant: advantages from rewards, the per-token loss, and how token losses add up to the batch loss; and
    the learner.grpo options every variant takes: which tokens enter the loss, pi_old's source, the TIS weights.

    Subclasses override `advantages`, `token_loss` and `aggregate`, and register themselves under their
    learner.grpo.algorithm name with `@register_algorithm("name")`.
    """

    name: ClassVar[str]

    def __init__(self, cfg: GRPOConfig, max_new_tokens: int | None = None):
        self.cfg = cfg

    def advantages(self, rewards: torch.Tensor, group_size: int, valid: torch.Tensor | None = None) -> torch.Tensor:
        """One advantage per sample from the rewards of `group_size` consecutive samples per prompt; samples not
        `valid` (bool) are left out of their group's statistics and get 0."""
        raise NotImplementedError

    def token_loss(self, inputs: LossInputs) -> LossOutputs:
        """The per-token loss, with `loss` left unset (aggregate fills it)."""
        raise NotImplementedError

    def aggregate(self, per_token: torch.Tensor, mask: torch.Tensor, norm: LossNorm) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, inputs: LossInputs, norm: LossNorm) -> LossOutputs:
        out = self.token_loss(inputs)
        out.loss = self.aggregate(out.per_token, inputs.mask, norm)
        out.metrics = LossMetrics.of(out, inputs.mask)
        return out

    # ---- the options every variant takes -----------------------------------------------------------------------
    @property
    def uses_tis(self) -> bool:
        return self.cfg.tis_cap > 0

    @property
    def masks_truncated(self) -> bool:
        """Whether truncated completions leave the loss, so that the learner counts the loss's tokens itself."""
        return self.cfg.mask_truncated

    def check_samples(self, samples: list[Sample], rank: int) -> None:
        """With old_logprobs=rollout or TIS every completion token needs the engine's log-prob (pack pads a missing one with 0)."""
        for setting, needed in (("learner.grpo.old_logprobs=rollout", self.cfg.old_logprobs == "rollout"), ("learner.grpo.tis_cap > 0", self.uses_tis)):
            for index, sample in enumerate(samples if needed else ()):
                if len(sample.rollout_logprobs) != len(sample.completion_ids) or not all(map(math.isfinite, sample.rollout_logprobs)):
                    raise ValueError(
                        f"rank {rank}, sample {index}: {setting} needs one finite rollout log-prob per "
                        f"completion token; got {len(sample.rollout_logprobs)} for {len(sample.completion_ids)} tokens"
                    )

    def loss_mask(self, batch: PackedBatch) -> torch.Tensor:
        """[B, T] the tokens in the loss: the completion tokens, less truncated completions' with mask_truncated."""
        return loss_mask(batch.completion_mask, batch.truncated, self.cfg.mask_truncated)

    def old_policy(self, first_logprobs: torch.Tensor, batch: PackedBatch, mask: torch.Tensor) -> OldPolicy:
        """pi_old from the first pass over the batch (run on the weights that generated it): its own log-probs with
        old_logprobs=learner, the sampler's with rollout; with tis_cap > 0 the TIS weights of pi_old against the sampler."""
        old = batch.rollout_logprobs if self.cfg.old_logprobs == "rollout" else first_logprobs.detach()
        if not self.uses_tis:
            return OldPolicy(old, None, None)
        weights, stats = tis_weights(old, batch.rollout_logprobs, mask, self.cfg.tis_cap)
        return OldPolicy(old, weights, stats)
