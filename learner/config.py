"""Structured config of the learner: GRPO settings, optimiser, and the DeepSpeed engine."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GRPOConfig:
    beta: float = 0.001  # KL penalty weight; 0 drops the reference model
    kl_estimator: str = "k3"  # k1 | k2 | k3
    clip_low: float = 0.2
    clip_high: float = 0.2
    advantage_norm: str = "group_std"  # group_std | group_mean (Dr.GRPO)
    loss_aggregation: str = "token_mean"  # token_mean | sequence_mean
    updates_per_batch: int = 1  # mu
    filter_equal_reward_groups: bool = False


@dataclass
class LearnerConfig:
    num_ranks: int = 1
    num_cpus_per_rank: float = 0.5
    num_gpus_per_rank: float = 0.0
    zero_stage: int = 2
    precision: str = "fp32"  # fp32 | bf16
    lr: float = 5e-7
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    grad_clip: float = 1.0
    micro_batch_size: int = 4  # sequences per forward/backward on one rank
    gradient_checkpointing: bool = False
    backend: str = "auto"  # auto (gloo on CPU, nccl on GPU) | gloo | nccl
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
