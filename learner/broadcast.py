"""Sends the policy's weights from learner rank 0 over the weight group, gathering ZeRO-3 partitions one bucket at a time.

What is sent is the model the rollout workers hold: the policy's own parameters, or with LoRA the merged base model
(learner/lora.py), computed bucket by bucket.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from learner.lora import ExportedWeight, is_lora, merged_exports
from learner.zero import full_shape, gathered
from weightsync import BucketPlan, ParamMeta, WeightTransport, metas_of, send_weights


def exported_weights(module: torch.nn.Module) -> list[ExportedWeight]:
    """The tensors the workers load, by name, each with the parameters it is read from."""
    if is_lora(module):
        return merged_exports(module)
    return [ExportedWeight(name, (p,), lambda p=p: p.data) for name, p in module.named_parameters()]


def param_metas(module: torch.nn.Module, dtype: torch.dtype | None = None) -> list[ParamMeta]:
    """Names, full shapes and the wire dtype of every exported tensor (under ZeRO-3 too: learner.zero.full_shape)."""
    return metas_of(
        (w.name, full_shape(w.params[0]), dtype or w.params[0].dtype)
        for w in exported_weights(module)
    )


def iter_full_buckets(module: torch.nn.Module, plan: BucketPlan) -> Iterator[list[torch.Tensor]]:
    """Yields each bucket's full tensors (copies when gathered from ZeRO-3 partitions, so they outlive the gather).

    Every learner rank must run this in step: under ZeRO-3 each bucket's gather is a collective.
    """
    exports = {w.name: w for w in exported_weights(module)}
    for bucket in plan:
        bucket_exports = [exports[m.name] for m in bucket]
        sources = list({id(p): p for w in bucket_exports for p in w.params}.values())
        with gathered(sources):
            yield [w.compute().to(m.torch_dtype).clone() for w, m in zip(bucket_exports, bucket)]


def broadcast_weights(module: torch.nn.Module, group: WeightTransport | None, plan: BucketPlan) -> int:
    """Rank 0 (holding `group`) broadcasts along `plan`; other learner ranks only join the gathers. Returns bytes sent."""
    buckets = iter_full_buckets(module, plan)
    if group is None:
        for _ in buckets:
            pass
        return 0
    return send_weights(group, plan, lambda bucket: next(buckets))
