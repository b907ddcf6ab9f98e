"""Bucketed broadcast of named parameters: tensors of one dtype are packed into flat buffers of at most `bucket_bytes`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

from weightsync.group import WeightGroup
from weightsync.shm import ShmWeightGroup
from weightsync.meta import ParamMeta


def plan_buckets(metas: list[ParamMeta], bucket_bytes: int) -> list[list[ParamMeta]]:
    """Groups parameters, in order, into buckets of one dtype and at most `bucket_bytes` (a larger tensor gets its own)."""
    buckets: list[list[ParamMeta]] = []
    current: list[ParamMeta] = []
    current_bytes = 0
    for meta in metas:
        if current and (meta.dtype != current[0].dtype or current_bytes + meta.nbytes > bucket_bytes):
            buckets.append(current)
            current, current_bytes = [], 0
        current.append(meta)
        current_bytes += meta.nbytes
    if current:
        buckets.append(current)
    return buckets


def send_weights(
    group: WeightGroup | ShmWeightGroup,
    metas: list[ParamMeta],
    tensors_for: Callable[[list[ParamMeta]], Iterable[torch.Tensor]],
    bucket_bytes: int,
) -> int:
    """Rank 0: sends every bucket over the group's transport; `tensors_for(bucket)` yields that bucket's tensors (so
    ZeRO-3 can gather one bucket at a time). Returns the bytes sent."""
    buckets = plan_buckets(metas, bucket_bytes)

    def checked() -> Iterator[list[torch.Tensor]]:
        for bucket in buckets:
            tensors = list(tensors_for(bucket))
            if len(tensors) != len(bucket):
                raise ValueError(f"bucket of {len(bucket)} weights got {len(tensors)} tensors")
            for meta, tensor in zip(bucket, tensors):
                if tuple(tensor.shape) != meta.shape:
                    raise ValueError(f"weight {meta.name}: shape {tuple(tensor.shape)} differs from the announced {meta.shape}")
            yield tensors

    return group.send_buckets(buckets, checked())


def receive_weights(
    group: WeightGroup | ShmWeightGroup, metas: list[ParamMeta], bucket_bytes: int, device: str | torch.device | None = None
) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Rank > 0: yields each bucket as a list of (name, tensor) views into the received flat buffer. Consume (copy) a
    bucket's tensors before the next broadcast: with the shm transport they may be views into the shared segment."""
    for bucket, flat in group.receive_buckets(plan_buckets(metas, bucket_bytes)):
        if device is not None:
            flat = flat.to(device)
        out, offset = [], 0
        for meta in bucket:
            out.append((meta.name, flat[offset : offset + meta.numel].view(meta.shape)))
            offset += meta.numel
        yield out
