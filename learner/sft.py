"""Supervised fine-tuning loss: the mean negative log-likelihood of the target (completion) tokens over the batch."""

from __future__ import annotations

import torch


def sft_token_loss(logprobs: torch.Tensor, mask: torch.Tensor, norm_tokens: float) -> torch.Tensor:
    """This micro-batch's share of the batch NLL: -sum(logprobs * mask) / tokens in the whole batch."""
    return -(logprobs * mask).sum() / norm_tokens
