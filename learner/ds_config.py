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
        "zero_optimization": _zero_section(cfg.zero_stage),
        "optimizer": {
            "type": "AdamW",
            # torch_adam: DeepSpeed's fused CPU Adam needs a compiled op; torch's AdamW is exact and enough here.
            "params": {"lr": cfg.lr, "betas": list(cfg.betas), "weight_decay": cfg.weight_decay, "torch_adam": True},
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
    if cfg.precision == "bf16":
        config["bf16"] = {"enabled": True}
    elif cfg.precision != "fp32":
        raise ValueError(f"learner.precision must be fp32 or bf16, got {cfg.precision!r}")
    return config


def reference_ds_config(cfg: LearnerConfig, micro_batch_size: int) -> dict:
    """A frozen engine: no optimizer; under ZeRO-3 its parameters stay partitioned like the policy's."""
    config = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "zero_optimization": _zero_section(3 if cfg.zero_stage == 3 else 0),
        "steps_per_print": 10**9,
    }
    if cfg.precision == "bf16":
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
