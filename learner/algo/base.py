"""What every loss variant shares: its typed inputs and outputs, the batch-wide normaliser, and the Algorithm interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

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
class LossOutputs:
    loss: torch.Tensor  # this micro-batch's share of the batch loss: what backward() sees (before rank scaling)
    per_token: torch.Tensor  # [B, T] the per-token loss, masked
    kl: torch.Tensor  # [B, T] the KL estimate, masked (zeros without a reference)
    clipped: torch.Tensor  # [B, T] bool: tokens whose ratio the clip took (every token of a clipped GSPO sequence)
    ratio: torch.Tensor  # [B, T] detached: the importance ratio the clip acted on (GSPO: its sequence's ratio)


class Algorithm:
    """A loss variant: advantages from rewards, the per-token loss, and how token losses add up to the batch loss.

    Subclasses set `name` and override `advantages`, `token_loss` and `aggregate`; register them in learner/algo/__init__.py.
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
        return out
