"""GSPO (arXiv 2507.18071): one ratio per sequence, exp(mean of its tokens' logp - old_logp), clipped per sequence."""

from __future__ import annotations

import torch

from learner.algo.base import Algorithm, LossInputs, LossNorm, LossOutputs, register_algorithm
from learner.algo.grpo import clipped_objective, group_advantages, sequence_mean
from learner.config import GRPOConfig


def gspo_token_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: GRPOConfig,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token loss -w_t*min(s_t*A, clip(s_t)*A) + beta*KL, the KL, the clipped tokens and s per token.

    GSPO-token's form: s_t = sg(s) * exp(logp_t - sg(logp_t)) has the value s at every token and d s_t / d logp_t = s.
    A sequence's mean over its L tokens therefore has the value of GSPO's sequence loss -min(s*A, clip(s)*A) and the
    gradient -s*A/L per token inside the clip range (exactly d/dlogp_t of the sequence loss, as ds/dlogp_t = s/L), 0
    outside. The token form is what lets a per-token TIS weight w_t weigh each token's gradient on its own.
    """
    lengths = mask.sum(dim=1).clamp(min=1)
    log_sequence_ratio = ((logprobs.detach() - old_logprobs) * mask).sum(dim=1) / lengths
    sequence_ratio = torch.exp(log_sequence_ratio).unsqueeze(1)  # [B, 1], detached
    ratio = sequence_ratio * torch.exp(logprobs - logprobs.detach())
    per_token, kl, was_clipped = clipped_objective(
        ratio, advantages, cfg.gspo_clip_low, cfg.gspo_clip_high, logprobs, ref_logprobs, mask, cfg, is_weights
    )
    return per_token, kl, was_clipped, sequence_ratio.expand_as(logprobs)


@register_algorithm("gspo")
class GSPO(Algorithm):
    """Sequence-level ratio and clip (gspo_clip_low/gspo_clip_high); advantages as GRPO's (advantage_norm); every
    sequence weighs the same in the loss, whatever its length (loss_aggregation is not used)."""


    def advantages(self, rewards: torch.Tensor, group_size: int, valid: torch.Tensor | None = None) -> torch.Tensor:
        return group_advantages(rewards, group_size, self.cfg.advantage_norm, valid=valid)

    def token_loss(self, inputs: LossInputs) -> LossOutputs:
        per_token, kl, clipped, ratio = gspo_token_loss(
            inputs.logprobs, inputs.old_logprobs, inputs.ref_logprobs, inputs.advantages, inputs.mask, self.cfg, inputs.is_weights
        )
        return LossOutputs(loss=per_token.new_zeros(()), per_token=per_token, kl=kl, clipped=clipped, ratio=ratio)

    def aggregate(self, per_token: torch.Tensor, mask: torch.Tensor, norm: LossNorm) -> torch.Tensor:
        return sequence_mean(per_token, mask, norm.sequences)
