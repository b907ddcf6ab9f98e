"""The DeepSpeed config dict for the policy engine (and its frozen reference) from the learner's structured config."""

from __future__ import annotations

import math

from learner.config import LearnerConfig


def policy_ds_config(cfg: LearnerConfig, micro_batch_size: int, grad_accum_steps: int, total_steps: int) -> dict:
    warmup_steps = math.ceil(cfg.warmup_ratio * total_steps)
    config: dict = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum_steps,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": _zero_section(cfg.zero_stage) | _offload_section(cfg),
        "optimizer": {
            "type": "AdamW",
            # torch_adam: DeepSpeed's fused CPU Adam needs a compiled op; torch's AdamW is exact and enough here. With
            # offload_optimizer DeepSpeed runs this torch AdamW on the CPU partitions (no DeepSpeedCPUAdam build).
            # fused: torch's one-kernel AdamW (CPU and CUDA): on SmolLM2-135M's fp32 master weights on 2 cores it
            # took 1.2-1.4 s a step against 2.5-2.8 s for the per-op update, a fifth of a supervised step.
            "params": {"lr": cfg.lr, "betas": list(cfg.betas), "weight_decay": cfg.weight_decay, "torch_adam": True,
                       "fused": True},
        },
        "steps_per_print": 10**9,  # the driver logs metrics; DeepSpeed's own prints would interleave with them
        "wall_clock_breakdown": False,
    }
    if warmup_steps > 0:
        # Linear warmup that starts at lr/(W+1), not 0: a first step at lr 0 would be a wasted rollout.
        config["scheduler"] = {
            "type": "WarmupLR",
            "params": {
                "warmup_min_lr": cfg.lr / (warmup_steps + 1),
                "warmup_max_lr": cfg.lr,
                "warmup_num_steps": warmup_steps + 1,
                "warmup_type": "linear",
            },
        }
    if cfg.dtype == "bfloat16":
        config["bf16"] = {"enabled": True}
    elif cfg.dtype != "float32":
        raise ValueError(f"learner.dtype must be float32 or bfloat16, got {cfg.dtype!r}")
    return config


def reference_ds_config(cfg: LearnerConfig, micro_batch_size: int) -> dict:
    """A frozen engine: no optimizer; under ZeRO-3 its parameters stay partitioned like the policy's, and with
    learner.offload.reference they live on the CPU, fetched layer by layer for the forward (below ZeRO-3 the learner
    moves the whole reference to the device and back itself: learner/engine.py)."""
    zero = _zero_section(3 if cfg.zero_stage == 3 else 0)
    if cfg.zero_stage == 3 and (cfg.offload.reference or cfg.offload.param == "cpu"):
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "zero_optimization": zero,
        "steps_per_print": 10**9,
    }
    if cfg.dtype == "bfloat16":
        config["bf16"] = {"enabled": True}
    return config


def _zero_section(stage: int) -> dict:
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"learner.zero_stage must be 0, 1, 2 or 3, got {stage}")
    section: dict = {"stage": stage}
    if stage == 3:
        # Lets save_16bit_model / the consolidated state dict gather full weights for HF checkpoints.
        section["stage3_gather_16bit_weights_on_model_save"] = True
    return section


def _offload_section(cfg: LearnerConfig) -> dict:
    """learner.offload -> DeepSpeed's offload_optimizer (ZeRO >= 1) and offload_param (ZeRO-3); cluster.config refuses
    the stages they do not exist for. Pinned host memory speeds the copies on a GPU; on the CPU accelerator it is a no-op."""
    section: dict = {}
    if cfg.offload.optimizer == "cpu":
        section["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if cfg.offload.param == "cpu":
        if cfg.zero_stage != 3:
            raise ValueError(f"learner.offload.param=cpu needs learner.zero_stage=3, got {cfg.zero_stage}")
        section["offload_param"] = {"device": "cpu", "pin_memory": True}
    return section
