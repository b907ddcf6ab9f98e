"""Dr.GRPO (arXiv 2503.20783): advantages r - group mean, token losses summed and divided by a constant, max_tokens_norm x sequences."""

from __future__ import annotations

import torch

from learner.algo.base import Algorithm, LossInputs, LossNorm, LossOutputs, register_algorithm
from learner.algo.grpo import GRPO, group_advantages
from learner.config import GRPOConfig


def dr_grpo_tokens_norm(cfg: GRPOConfig, max_new_tokens: int | None) -> int:
    """The per-sequence constant: learner.grpo.max_tokens_norm, or the sampling max_new_tokens when that is 0."""
    tokens_norm = cfg.max_tokens_norm or max_new_tokens or 0
    if tokens_norm < 1:
        raise ValueError(
            "learner.grpo.max_tokens_norm must be >= 1 for algorithm=dr_grpo (0 takes the sampling max_new_tokens, "
            f"and none was passed to the learner); got max_tokens_norm={cfg.max_tokens_norm}, max_new_tokens={max_new_tokens}"
        )
    return int(tokens_norm)


@register_algorithm("dr_grpo")
class DrGRPO(Algorithm):
    """GRPO's clipped token objective without its two length and difficulty biases: no std in the advantage (a group
    with a small spread is not blown up), and no per-sequence or per-batch token count in the normaliser (a long wrong
    answer is not penalised less per token than a short one)."""


    def __init__(self, cfg: GRPOConfig, max_new_tokens: int | None = None):
        super().__init__(cfg, max_new_tokens)
        self.tokens_norm = dr_grpo_tokens_norm(cfg, max_new_tokens)
        self._clipped_objective = GRPO(cfg)

    def advantages(self, rewards: torch.Tensor, group_size: int, valid: torch.Tensor | None = None) -> torch.Tensor:
        return group_advantages(rewards, group_size, "group_mean", valid=valid)

    def token_loss(self, inputs: LossInputs) -> LossOutputs:
        return self._clipped_objective.token_loss(inputs)

    def aggregate(self, per_token: torch.Tensor, mask: torch.Tensor, norm: LossNorm) -> torch.Tensor:
        return per_token.sum() / (self.tokens_norm * norm.sequences)
