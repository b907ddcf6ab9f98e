"""Bucketed send and receive of named parameters along a BucketPlan, over any weight transport: the sender checks each
bucket's tensors against the plan, a receiver gets each bucket back as named views of its flat buffer."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

from weightsync.meta import ParamMeta
from weightsync.plan import BucketPlan
from weightsync.transport import WeightTransport


def send_weights(
    group: WeightTransport, plan: BucketPlan, tensors_for: Callable[[tuple[ParamMeta, ...]], Iterable[torch.Tensor]],
) -> int:
    """Rank 0: sends every bucket of `plan` over the group's transport; `tensors_for(bucket)` yields that bucket's
    tensors (so ZeRO-3 can gather one bucket at a time). Returns the bytes sent."""

    def checked() -> Iterator[list[torch.Tensor]]:
        for bucket in plan:
            tensors = list(tensors_for(bucket))
            if len(tensors) != len(bucket):
                raise ValueError(f"bucket of {len(bucket)} weights got {len(tensors)} tensors")
            for meta, tensor in zip(bucket, tensors):
                if tuple(tensor.shape) != meta.shape:
                    raise ValueError(f"weight {meta.name}: shape {tuple(tensor.shape)} differs from the announced {meta.shape}")
            yield tensors

    return group.send_buckets(plan, checked())


def receive_weights(
    group: WeightTransport, plan: BucketPlan, device: str | torch.device | None = None
) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Rank > 0: yields each bucket of `plan` as a list of (name, tensor) views into the received flat buffer. Consume
    (copy) a bucket's tensors before the next broadcast: with the shm transport they may be views into the shared
    segment."""
    for bucket, flat in group.receive_buckets(plan):
        if device is not None:
            flat = flat.to(device)
        out, offset = [], 0
        for meta in bucket:
            out.append((meta.name, flat[offset : offset + meta.numel].view(meta.shape)))
            offset += meta.numel
        yield out
