"""GRPO: group-normalised advantages and the clipped policy-gradient loss with a KL penalty to a frozen reference."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learner.config import GRPOConfig
from learner.kl import kl_estimate


def check_grpo_config(cfg: GRPOConfig) -> None:
    """Raises ValueError naming the first learner.grpo setting that is out of range (called when a learner starts)."""
    choices = {
        "kl_estimator": ("k1", "k2", "k3"),
        "advantage_norm": ("group_std", "group_mean"),
        "loss_aggregation": ("token_mean", "sequence_mean"),
        "old_logprobs": ("learner", "rollout"),
    }
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"learner.grpo.{name} must be one of {', '.join(allowed)}; got {getattr(cfg, name)!r}")
    if cfg.beta < 0:
        raise ValueError(f"learner.grpo.beta must be >= 0, got {cfg.beta}")
    if not 0 <= cfg.clip_low < 1 or cfg.clip_high < 0:
        raise ValueError(f"learner.grpo clip range needs 0 <= clip_low < 1 and clip_high >= 0, got {cfg.clip_low}, {cfg.clip_high}")
    if cfg.updates_per_batch < 1:
        raise ValueError(f"learner.grpo.updates_per_batch must be >= 1, got {cfg.updates_per_batch}")


def group_advantages(rewards: torch.Tensor, group_size: int, norm: str = "group_std", eps: float = 1e-4) -> torch.Tensor:
    """(r - mean) / (std + eps) within each group of `group_size` consecutive samples; `group_mean` skips the std (Dr.GRPO)."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if norm == "group_std":
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    elif norm != "group_mean":
        raise ValueError(f"advantage_norm must be 'group_std' or 'group_mean', got {norm!r}")
    return centred.view(-1)


@dataclass
class LossParts:
    loss: torch.Tensor  # what backward() sees
    token_sum: torch.Tensor  # sum over completion tokens of the per-token loss (for logging)
    kl_sum: torch.Tensor  # sum over completion tokens of the KL estimate
    clipped_tokens: torch.Tensor  # tokens whose ratio was clipped
    tokens: torch.Tensor  # completion tokens in this micro-batch


def grpo_token_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: GRPOConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token loss -min(ratio*A, clip(ratio)*A) + beta*KL, the KL estimate, and which tokens were clipped.

    Shapes: logprobs/old/ref/mask [B, T]; advantages [B].
    """
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages.unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - cfg.clip_low, 1.0 + cfg.clip_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
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
        per_sequence = per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return per_sequence.sum() / norm_sequences
    raise ValueError(f"loss_aggregation must be 'token_mean' or 'sequence_mean', got {cfg.loss_aggregation!r}")
