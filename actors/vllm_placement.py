"""The engine arguments and environment that put a tensor-parallel vLLM engine's GPU workers into the placement-group bundles of the actor that drives it."""

from __future__ import annotations

import os


def vllm_placement_kwargs(tensor_parallel_size: int, bundle_indices: list[int] | None = None) -> dict:
    """`vllm.LLM` keyword arguments for an engine started inside a Ray actor, after preparing this process for them.

    Tensor parallel (tp > 1): vLLM starts one Ray worker per shard and places them on `bundle_indices` of the actor's
    placement group (VLLM_RAY_BUNDLE_INDICES; the actor was scheduled with capture_child_tasks). The driving actor
    holds no GPU itself, so Ray's empty CUDA_VISIBLE_DEVICES for it must not leak into those workers (vLLM's RLHF
    examples do the same). One GPU: vLLM's default executor in this process, nothing to prepare.
    """
    if tensor_parallel_size <= 1:
        return {}
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    if bundle_indices is not None:
        if len(bundle_indices) != tensor_parallel_size:
            raise ValueError(f"a tensor-parallel size of {tensor_parallel_size} needs as many bundles, got {bundle_indices}")
        os.environ["VLLM_RAY_BUNDLE_INDICES"] = ",".join(str(index) for index in bundle_indices)
    return {"distributed_executor_backend": "ray"}
