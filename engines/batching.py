"""The one batching of every engine: fixed-size batches in input order, and token-id prompts left-padded to the longest of their batch with an attention mask."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`items` in consecutive slices of at most `size`, in order (so a result's position is its input's)."""
    if size < 1:
        raise ValueError(f"a batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (len(prompts), longest prompt) long tensors: each prompt right-aligned, so
    every one ends in the last column (where generation starts), pad_token_id and mask 0 before it."""
    if not prompts:
        raise ValueError("left_pad needs at least one prompt")
    width = max(len(ids) for ids in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        if len(ids):
            input_ids[row, width - len(ids) :] = torch.as_tensor(list(ids), dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
    return input_ids, attention_mask
