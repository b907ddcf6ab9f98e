"""Structured config of the reward layer: weights, the staged schedule, and the consistency judge pool."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RewardStage:
    """Weights in force from `start` (an epoch or a step, per RewardConfig.schedule_unit) until the next stage."""

    start: int = 0
    format: float = 0.1
    accuracy: float = 0.7
    consistency: float = 0.2


@dataclass
class JudgeConfig:
    enabled: bool = True
    model: str = ""  # set by the driver from models.judge (the frozen reference LM)
    num_replicas: int = 1
    num_cpus_per_replica: float = 0.25
    num_gpus_per_replica: float = 0.0
    batch_size: int = 32
    timeout_s: float = 60.0
    max_think_tokens: int = 1024  # the <think> text is cut to this many tokens before judging
    dtype: str = "float32"  # the judge's weight dtype: float32 | bfloat16 | float16 | auto
    max_restarts: int = 1  # Ray restarts a crashed replica this many times; its in-flight batch counts as failed


@dataclass
class RewardConfig:
    # Stages sorted by start; one stage = fixed weights (the released scripts' 0.1/0.7/0.2).
    stages: list[RewardStage] = field(default_factory=lambda: [RewardStage()])
    schedule_unit: str = "epoch"  # epoch | step
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    # DAPO's soft overlong penalty (rewards/overlong.py), added to the total: 0 up to rollout.max_new_tokens -
    # overlong_cache_tokens, then falling linearly to -1 at max_new_tokens.
    overlong_penalty: bool = False
    overlong_cache_tokens: int = 512  # the window before the cap where the penalty ramps (DAPO: 4096 of 20480)
