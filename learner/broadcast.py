"""Sends the policy's weights from learner rank 0 over the weight group, gathering ZeRO-3 partitions one bucket at a time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext

import torch

from weightsync import ParamMeta, WeightGroup, metas_of, plan_buckets, send_weights


def param_metas(module: torch.nn.Module, dtype: torch.dtype | None = None) -> list[ParamMeta]:
    """Names, full shapes and the wire dtype of every parameter (ZeRO-3 keeps the full shape in `ds_shape`)."""
    return metas_of(
        (name, getattr(p, "ds_shape", p.shape), dtype or p.dtype) for name, p in module.named_parameters()
    )


def _gathered(params: list[torch.nn.Parameter]):
    if params and hasattr(params[0], "ds_id"):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
    return nullcontext()


def iter_full_buckets(module: torch.nn.Module, metas: list[ParamMeta], bucket_bytes: int) -> Iterator[list[torch.Tensor]]:
    """Yields each bucket's full tensors (copies when gathered from ZeRO-3 partitions, so they outlive the gather).

    Every learner rank must run this in step: under ZeRO-3 each bucket's gather is a collective.
    """
    params = dict(module.named_parameters())
    for bucket in plan_buckets(metas, bucket_bytes):
        bucket_params = [params[m.name] for m in bucket]
        with _gathered(bucket_params):
            yield [p.data.to(m.torch_dtype).clone() for p, m in zip(bucket_params, bucket)]


def broadcast_weights(module: torch.nn.Module, group: WeightGroup | None, metas: list[ParamMeta], bucket_bytes: int) -> int:
    """Rank 0 (holding `group`) broadcasts; other learner ranks only join the gathers. Returns bytes sent."""
    buckets = iter_full_buckets(module, metas, bucket_bytes)
    if group is None:
        for _ in buckets:
            pass
        return 0
    return send_weights(group, metas, lambda bucket: next(buckets), bucket_bytes)
