"""GRPO: group-normalised advantages, the per-token clipped ratio objective plus beta x KL, averaged over tokens or sequences."""

from __future__ import annotations

import torch

from learner.algo.base import Algorithm, LossInputs, LossNorm, LossOutputs, register_algorithm
from learner.config import GRPOConfig
from learner.kl import kl_estimate


def group_advantages(
    rewards: torch.Tensor, group_size: int, norm: str = "group_std", eps: float = 1e-4, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """(r - mean) / (std + eps) within each group of `group_size` consecutive samples; `group_mean` skips the std (Dr.GRPO).

    `valid` (bool, one per sample) leaves samples out: each group's mean and std are those of its valid samples alone,
    so they get exactly the advantages of a group that never held the others, which get 0 (and whose rewards, NaN for
    a failed judgement, are never read). A group with one valid sample gives it 0.
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    if norm not in ("group_std", "group_mean"):
        raise ValueError(f"advantage_norm must be 'group_std' or 'group_mean', got {norm!r}")
    if valid is not None and not bool(valid.all()):
        return _masked_group_advantages(rewards, group_size, norm, eps, valid)
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if norm == "group_std":
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return centred.view(-1)


def _masked_group_advantages(rewards: torch.Tensor, group_size: int, norm: str, eps: float, valid: torch.Tensor) -> torch.Tensor:
    keep = valid.view(-1, group_size)
    grouped = torch.where(keep, rewards.view(-1, group_size), torch.zeros_like(rewards).view(-1, group_size))
    count = keep.sum(dim=1, keepdim=True).to(rewards.dtype)
    mean = grouped.sum(dim=1, keepdim=True) / count.clamp(min=1)
    centred = torch.where(keep, grouped - mean, torch.zeros_like(grouped))
    if norm == "group_std":  # the unbiased std, as torch.std over the valid samples gives it
        std = (centred.pow(2).sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)).sqrt()
        centred = centred / (std + eps)
    return centred.view(-1)


def grpo_token_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: GRPOConfig,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token loss -w*min(ratio*A, clip(ratio)*A) + beta*KL, the KL estimate, and which tokens were clipped.

    Shapes: logprobs/old/ref/mask/is_weights [B, T]; advantages [B]. w is the TIS weight (1 when `is_weights` is None).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    return clipped_objective(ratio, advantages, cfg.clip_low, cfg.clip_high, logprobs, ref_logprobs, mask, cfg, is_weights)


def clipped_objective(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float,
    clip_high: float,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    mask: torch.Tensor,
    cfg: GRPOConfig,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token -w*min(ratio*A, clip(ratio, 1-clip_low, 1+clip_high)*A) + beta*KL(policy, reference), the KL
    estimate and the clipped tokens, all masked: the PPO objective every ratio-based variant ends in."""
    adv = advantages.unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    surrogate = torch.minimum(unclipped, clipped)
    # Without TIS no multiply at all, so the default loss stays bit for bit what it was.
    per_token = -surrogate if is_weights is None else -(is_weights * surrogate)
    if cfg.beta > 0 and ref_logprobs is not None:
        kl = kl_estimate(logprobs, ref_logprobs, cfg.kl_estimator)
        per_token = per_token + cfg.beta * kl
    else:
        kl = torch.zeros_like(per_token)
    was_clipped = (clipped < unclipped) & mask.bool()
    return per_token * mask, kl * mask, was_clipped


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, cfg: GRPOConfig, norm_tokens: float, norm_sequences: float) -> torch.Tensor:
    """Sum of this micro-batch's share of the batch loss.

    token_mean: sum of all token losses / tokens in the whole batch (`norm_tokens`).
    sequence_mean: mean over sequences of each sequence's token-mean, over `norm_sequences` sequences in the batch.
    The normalisers are batch-wide so that micro-batches and data-parallel ranks add up to exactly the batch loss.
    """
    if cfg.loss_aggregation == "token_mean":
        return per_token.sum() / norm_tokens
    if cfg.loss_aggregation == "sequence_mean":
        return sequence_mean(per_token, mask, norm_sequences)
    raise ValueError(f"loss_aggregation must be 'token_mean' or 'sequence_mean', got {cfg.loss_aggregation!r}")


def sequence_mean(per_token: torch.Tensor, mask: torch.Tensor, norm_sequences: float) -> torch.Tensor:
    """Each sequence's mean token loss, summed and divided by the batch's sequence count."""
    per_sequence = per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return per_sequence.sum() / norm_sequences


@register_algorithm("grpo")
class GRPO(Algorithm):
    """Group-normalised advantages (learner.grpo.advantage_norm) and the clipped token objective (clip_low/clip_high),
    aggregated per learner.grpo.loss_aggregation."""


    def advantages(self, rewards: torch.Tensor, group_size: int, valid: torch.Tensor | None = None) -> torch.Tensor:
        return group_advantages(rewards, group_size, self.cfg.advantage_norm, valid=valid)

    def token_loss(self, inputs: LossInputs) -> LossOutputs:
        per_token, kl, clipped = grpo_token_loss(
            inputs.logprobs, inputs.old_logprobs, inputs.ref_logprobs, inputs.advantages, inputs.mask, self.cfg, inputs.is_weights
        )
        ratio = torch.exp(inputs.logprobs.detach() - inputs.old_logprobs)
        return LossOutputs(loss=per_token.new_zeros(()), per_token=per_token, kl=kl, clipped=clipped, ratio=ratio)

    def aggregate(self, per_token: torch.Tensor, mask: torch.Tensor, norm: LossNorm) -> torch.Tensor:
        return aggregate(per_token, mask, self.cfg, norm.tokens, norm.sequences)
