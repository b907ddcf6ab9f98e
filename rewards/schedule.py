"""The staged reward schedule: which format/accuracy/consistency weights are in force at a given epoch or step.

A stage is in force from its `start` until the next stage's start; `start` counts 0-based epochs or optimizer steps
(RewardConfig.schedule_unit). The paper's schedule (epochs 1-2 7:3:0, 3-4 3:7:0, 5-12 1:7:2) is `paper_stages()`:
starts 0, 2, 4 in 0-based epochs.
"""

from __future__ import annotations

import math

from rewards.config import RewardConfig, RewardStage

SCHEDULE_UNITS = ("epoch", "step")


def paper_stages() -> list[RewardStage]:
    """Embodied-R's staged weights (format:accuracy:consistency), normalised to sum to 1."""
    return [
        RewardStage(start=0, format=0.7, accuracy=0.3, consistency=0.0),
        RewardStage(start=2, format=0.3, accuracy=0.7, consistency=0.0),
        RewardStage(start=4, format=0.1, accuracy=0.7, consistency=0.2),
    ]


def validate_reward_config(cfg: RewardConfig) -> None:
    """Raises ValueError naming the stage and the problem; call once when the config is loaded."""
    if cfg.schedule_unit not in SCHEDULE_UNITS:
        raise ValueError(f"reward schedule_unit must be one of {SCHEDULE_UNITS}, got {cfg.schedule_unit!r}")
    if not cfg.stages:
        raise ValueError("reward stages are empty: give at least one stage with start 0")
    previous_start = None
    for index, stage in enumerate(cfg.stages):
        where = f"reward stage {index} (start {stage.start})"
        if not isinstance(stage.start, int) or isinstance(stage.start, bool) or stage.start < 0:
            raise ValueError(f"{where}: start must be a non-negative integer {cfg.schedule_unit}")
        weights = {"format": stage.format, "accuracy": stage.accuracy, "consistency": stage.consistency}
        for name, weight in weights.items():
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"{where}: weight {name}={weight} must be finite and >= 0")
        if sum(weights.values()) == 0:
            raise ValueError(f"{where}: all weights are 0, so every completion would get the same reward")
        if previous_start is not None:
            if stage.start == previous_start:
                raise ValueError(f"{where}: duplicate start; stage {index - 1} starts at the same {cfg.schedule_unit}")
            if stage.start < previous_start:
                raise ValueError(f"{where}: stages must be sorted by start; stage {index - 1} starts at {previous_start}")
        previous_start = stage.start
    if cfg.stages[0].start != 0:
        raise ValueError(f"reward stages begin at {cfg.schedule_unit} {cfg.stages[0].start}; the first must start at 0")
    if not cfg.judge.enabled:
        with_consistency = [index for index, stage in enumerate(cfg.stages) if stage.consistency > 0]
        if with_consistency:
            raise ValueError(
                f"reward stages {with_consistency} weight consistency but the judge is disabled (judge.enabled=false)"
            )


def weights_at(cfg: RewardConfig, epoch: int, step: int) -> RewardStage:
    """The stage in force at this 0-based epoch / global step (the one the config's schedule_unit names)."""
    validate_reward_config(cfg)
    position = epoch if cfg.schedule_unit == "epoch" else step
    if position < 0:
        raise ValueError(f"{cfg.schedule_unit} must be >= 0, got {position}")
    current = cfg.stages[0]
    for stage in cfg.stages:
        if stage.start > position:
            break
        current = stage
    return current
