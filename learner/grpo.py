"""Kept importable: GRPO now lives in learner/algo/grpo.py, beside the other loss variants (learner/algo/)."""

from __future__ import annotations

from learner.algo.checks import check_grpo_config
from learner.algo.grpo import LossParts, aggregate, group_advantages, grpo_token_loss

__all__ = ["LossParts", "aggregate", "check_grpo_config", "group_advantages", "grpo_token_loss"]
