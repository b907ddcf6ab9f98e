"""Builds the DeepSpeed engines on one learner rank: the trainable policy (LoRA-wrapped with learner.lora) and, when the
KL term is on without LoRA, its frozen reference (kept on the CPU between forwards with learner.offload.reference)."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

import torch

from learner.config import LearnerConfig
from learner.ds_config import policy_ds_config, reference_ds_config
from learner.lora import wrap_policy

log = logging.getLogger(__name__)


def init_distributed_env(rank: int, world_size: int, master_addr: str, master_port: int) -> None:
    """DeepSpeed reads these even at world size 1 (without them it looks for mpi4py)."""
    os.environ.update(
        RANK=str(rank), LOCAL_RANK="0", WORLD_SIZE=str(world_size), MASTER_ADDR=master_addr, MASTER_PORT=str(master_port)
    )


def init_process_group(cfg: LearnerConfig, store, rank: int, world_size: int, timeout_s: float) -> None:
    """The learner's default process group over the store rank 0 hosts; DeepSpeed then adopts it as it finds it
    initialised (its own init would dial MASTER_ADDR:MASTER_PORT through a second store)."""
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(
            resolve_backend(cfg), store=dist.PrefixStore("learner", store), rank=rank, world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )


def resolve_backend(cfg: LearnerConfig) -> str:
    if cfg.backend != "auto":
        return cfg.backend
    return "nccl" if torch.cuda.is_available() else "gloo"


def skip_inference_comm_op() -> None:
    """Keeps DeepSpeed from compiling its CPU shared-memory all-reduce op (53-62 s with g++ on first use in a new
    environment): only its inference tensor-parallel all-reduce uses that op, and training's collectives go through
    torch.distributed (gloo) either way. DeepSpeed keeps the probed op table in one module-level dict, so marking the
    op incompatible there makes `init_distributed` skip the build, as it does on a machine without a compiler."""
    if torch.cuda.is_available():
        return  # the CUDA accelerator has no such op
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def load_causal_lm(model_path: str, ds_config: dict, dtype_name: str) -> torch.nn.Module:
    """Loads by path; under ZeRO-3 the weights are partitioned as they load (HfDeepSpeedConfig must outlive the load)."""
    import torch._dynamo  # noqa: F401  (STACK.md: avoids a crash when transformers lazily imports inside zero.Init)
    from transformers import AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig

    dtype = torch.bfloat16 if dtype_name == "bfloat16" else torch.float32
    keep_alive = HfDeepSpeedConfig(ds_config) if ds_config["zero_optimization"]["stage"] == 3 else None
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    del keep_alive
    return model


def build_engines(cfg: LearnerConfig, model_path: str, total_steps: int):
    """Returns (policy engine, reference engine or None). Call after init_distributed_env on every rank."""
    import deepspeed

    skip_inference_comm_op()
    deepspeed.init_distributed(dist_backend=resolve_backend(cfg), auto_mpi_discovery=False)
    # The LR schedule counts optimiser steps, and every GRPO step takes updates_per_batch of them.
    policy_config = policy_ds_config(cfg, cfg.micro_batch_size, 1, total_steps * cfg.grpo.updates_per_batch)
    policy = load_causal_lm(model_path, policy_config, cfg.dtype)
    if cfg.gradient_checkpointing:
        policy.gradient_checkpointing_enable()
        if cfg.lora.enabled:
            policy.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need an input with grad
    policy.config.use_cache = False
    if cfg.lora.enabled:
        policy = wrap_policy(policy, cfg.lora)  # base frozen: the optimiser below holds the adapters only
    engine, *_ = deepspeed.initialize(
        model=policy, model_parameters=[p for p in policy.parameters() if p.requires_grad], config=policy_config
    )
    reference = None
    # With LoRA the reference is the policy with its adapters disabled (learner/lora.py): no second model.
    if cfg.grpo.beta > 0 and not cfg.lora.enabled:
        ref_config = reference_ds_config(cfg, cfg.micro_batch_size)
        ref_model = load_causal_lm(model_path, ref_config, cfg.dtype)
        # The reference stays frozen because it has no optimizer and only runs under no_grad. Its parameters keep
        # requires_grad=True on purpose: torch picks a different matmul path for weights that do not require grad
        # (the tied lm_head differs by ~5e-7), so a reference equal to the policy would give a non-zero KL gradient
        # that Adam amplifies into a full-size step even when every advantage is 0.
        reference, *_ = deepspeed.initialize(model=ref_model, config=ref_config)
        reference.eval()
        if cfg.offload.reference and cfg.zero_stage != 3:
            reference.module.to("cpu")  # moved to the device only for its forward (reference_on_device)
    log.info("DeepSpeed ZeRO-%d engine ready on %s (%s)", cfg.zero_stage, engine.device, resolve_backend(cfg))
    return engine, reference


@contextmanager
def reference_on_device(reference, cfg: LearnerConfig):
    """The reference engine, with its module on the engine's device for the duration (learner.offload.reference below
    ZeRO-3, where it otherwise lives on the CPU; under ZeRO-3 DeepSpeed's offload_param fetches it layer by layer).
    On a CPU-only machine both moves are no-ops, but the path is the same."""
    offloaded = cfg.offload.reference and cfg.zero_stage != 3
    if offloaded:
        reference.module.to(reference.device)
    try:
        yield reference
    finally:
        if offloaded:
            reference.module.to("cpu")
