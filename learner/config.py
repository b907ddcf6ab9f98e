"""Structured config of the learner: GRPO settings, optimiser, and the DeepSpeed engine."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GRPOConfig:
    beta: float = 0.001  # KL penalty weight; 0 drops the reference model (no reference engine is built)
    kl_estimator: str = "k3"  # k1 | k2 | k3 (learner/kl.py)
    clip_low: float = 0.2  # the ratio is clipped to [1 - clip_low, 1 + clip_high] (DAPO's clip-higher: clip_high > clip_low)
    clip_high: float = 0.2
    advantage_norm: str = "group_std"  # group_std | group_mean (Dr.GRPO)
    loss_aggregation: str = "token_mean"  # token_mean | sequence_mean
    updates_per_batch: int = 1  # mu: optimiser steps on each batch, each a full pass over it
    # The denominator of the importance ratio, pi_theta / pi_old:
    #   learner: the learner's own log-probs from the first pass over the batch (before any update on it). The first
    #            update's ratio is exactly 1, so rollout-engine/learner numerical mismatch (e.g. vLLM bf16 kernels vs
    #            an fp32 learner) is ignored: the samples are treated as if the learner had drawn them. Costs
    #            nothing extra (the first pass's forward is reused); with mu = 1 the clip never engages.
    #   rollout: the log-probs the rollout engine reported when it sampled each token (Sample.rollout_logprobs), i.e.
    #            importance ratios against the actual behaviour policy: corrects for engine/learner mismatch from the
    #            first update on, at the cost of more variance, and of clipped (gradient-free) tokens where the two
    #            disagree by more than the clip range. The engine reports log-probs of the distribution it sampled from (after temperature
    #            and top-p), so use it with temperature 1 and top_p 1 unless that correction is what you want.
    old_logprobs: str = "learner"  # learner | rollout
    # DAPO's dynamic sampling: drop the groups whose rewards are all equal (advantage 0 everywhere) before the learner
    # step, so they no longer dilute the token-mean normaliser; a step whose groups are all dropped is skipped.
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
    # Custom Ray resources each rank's bundle asks for, e.g. {"learner_node": 1} to keep the ranks on nodes started
    # with `ray start --resources '{"learner_node": 8}'`.
    resources: dict[str, float] = field(default_factory=dict)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
