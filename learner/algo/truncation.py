"""Overlong masking: the completions cut at max_new_tokens leave the loss, their tokens dropped from the mask and the normaliser."""

from __future__ import annotations

import torch


def loss_mask(completion_mask: torch.Tensor, truncated: torch.Tensor, mask_truncated: bool) -> torch.Tensor:
    """[B, T] float mask of the tokens in the loss: the completion mask, with the rows of truncated samples zeroed.

    Without mask_truncated it is `completion_mask` itself (the same tensor), so the default loss is untouched.
    """
    if not mask_truncated:
        return completion_mask
    return completion_mask * (~truncated.bool()).to(completion_mask.dtype).unsqueeze(1)
