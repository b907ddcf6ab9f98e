"""The staged reward schedule: the paper's 7:3:0 -> 3:7:0 -> 1:7:2 by epoch, step units, and clear config errors."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from rewards.config import JudgeConfig, RewardConfig, RewardStage
from rewards.schedule import paper_stages, validate_reward_config, weights_at


def _ratio(stage: RewardStage) -> tuple[int, int, int]:
    return round(stage.format * 10), round(stage.accuracy * 10), round(stage.consistency * 10)


def test_paper_schedule_by_epoch():
    cfg = RewardConfig(stages=paper_stages(), schedule_unit="epoch")
    # Paper epochs 1-2, 3-4, 5-12 are 0-based epochs 0-1, 2-3, 4-11; the step does not matter in epoch units.
    ratios = [_ratio(weights_at(cfg, epoch=epoch, step=1000 * epoch + 7)) for epoch in range(12)]
    assert ratios == [(7, 3, 0)] * 2 + [(3, 7, 0)] * 2 + [(1, 7, 2)] * 8


def test_default_is_the_released_fixed_weights():
    stage = weights_at(RewardConfig(), epoch=5, step=123)
    assert (stage.format, stage.accuracy, stage.consistency) == (0.1, 0.7, 0.2)


def test_step_unit_ignores_epoch():
    cfg = RewardConfig(stages=[RewardStage(0, 1, 0, 0), RewardStage(10, 0, 1, 0), RewardStage(25, 0, 1, 1)],
                       schedule_unit="step")
    assert [weights_at(cfg, epoch=0, step=s).start for s in (0, 9, 10, 24, 25, 10_000)] == [0, 0, 10, 10, 25, 25]
    assert weights_at(cfg, epoch=99, step=3).start == 0


def test_works_on_an_omegaconf_tree():
    cfg = OmegaConf.structured(RewardConfig(stages=paper_stages()))
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(["schedule_unit=epoch"]))
    assert _ratio(weights_at(cfg, epoch=3, step=0)) == (3, 7, 0)


@pytest.mark.parametrize(
    "stages, unit, judge_enabled, message",
    [
        ([RewardStage(0, -0.1, 1, 0)], "epoch", True, "weight format=-0.1"),
        ([RewardStage(0, 0.1, float("nan"), 0)], "epoch", True, "weight accuracy"),
        ([RewardStage(0, 0, 0, 0)], "epoch", True, "all weights are 0"),
        ([RewardStage(0), RewardStage(4), RewardStage(2)], "epoch", True, "sorted by start"),
        ([RewardStage(0), RewardStage(2), RewardStage(2)], "epoch", True, "duplicate start"),
        ([RewardStage(1), RewardStage(2)], "epoch", True, "first must start at 0"),
        ([RewardStage(-1)], "epoch", True, "non-negative"),
        ([], "epoch", True, "empty"),
        ([RewardStage(0)], "minute", True, "schedule_unit"),
        ([RewardStage(0, 0.7, 0.3, 0), RewardStage(2, 0.1, 0.7, 0.2)], "epoch", False, r"stages \[1\].*judge is disabled"),
    ],
)
def test_invalid_schedules_fail_clearly(stages, unit, judge_enabled, message):
    cfg = RewardConfig(stages=stages, schedule_unit=unit, judge=JudgeConfig(enabled=judge_enabled))
    with pytest.raises(ValueError, match=message):
        validate_reward_config(cfg)
    with pytest.raises(ValueError):
        weights_at(cfg, epoch=0, step=0)


def test_judge_disabled_is_fine_without_consistency_weight():
    cfg = RewardConfig(stages=[RewardStage(0, 0.3, 0.7, 0.0)], judge=JudgeConfig(enabled=False), schedule_unit="epoch")
    assert weights_at(cfg, 0, 0).consistency == 0.0
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        weights_at(cfg, epoch=-1, step=0)
