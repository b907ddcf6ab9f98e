"""The loss variants as named objects, one file each, chosen by learner.grpo.algorithm.

An Algorithm owns the advantages from rewards, the per-token loss and its aggregation (learner/algo/base.py):

- `grpo`    (grpo.py): group-normalised advantages, the clipped token objective, token or sequence mean;
- `gspo`    (gspo.py): one ratio per sequence, clipped per sequence, a mean over sequences;
- `dr_grpo` (dr_grpo.py): advantages r - group mean, the loss over a constant (max_tokens_norm x sequences).

The options that work with every variant are the Algorithm's own methods (base.py), computed by tis.py (truncated
importance sampling) and truncation.py (masking truncated completions); the loss returns its metrics with its output
(LossOutputs.metrics). The staleness statistics are in staleness.py. A new variant is a new file with an Algorithm
subclass registered with `@register_algorithm("name")` where it is written, its module imported here, and its name
among learner.config.GRPO_ALGORITHMS (the config knows the names without importing torch; a test keeps them equal).
"""

from __future__ import annotations

from dataclasses import fields
from functools import lru_cache

from learner.algo.base import ALGORITHMS, Algorithm, LossInputs, LossMetrics, LossNorm, LossOutputs, OldPolicy
from learner.algo.checks import check_grpo_config
from learner.algo.dr_grpo import DrGRPO
from learner.algo.grpo import GRPO, group_advantages
from learner.algo.gspo import GSPO
from learner.config import GRPOConfig


def make_algorithm(cfg: GRPOConfig, max_new_tokens: int | None = None) -> Algorithm:
    """The variant learner.grpo.algorithm names, built once per distinct settings (the driver asks for it every step,
    the learner every train_step): it holds a copy of `cfg` (a GRPOConfig or the OmegaConf node of one), so a later
    change to `cfg` gives a new object. `max_new_tokens` is the sampling cap (dr_grpo's default normaliser)."""
    return _built(tuple((f.name, getattr(cfg, f.name)) for f in fields(GRPOConfig)), max_new_tokens)


@lru_cache(maxsize=16)
def _built(settings: tuple, max_new_tokens: int | None) -> Algorithm:
    cfg = GRPOConfig(**dict(settings))
    check_grpo_config(cfg)
    return ALGORITHMS[cfg.algorithm](cfg, max_new_tokens)


__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "DrGRPO",
    "GRPO",
    "GSPO",
    "LossInputs",
    "LossMetrics",
    "LossNorm",
    "LossOutputs",
    "OldPolicy",
    "check_grpo_config",
    "group_advantages",
    "make_algorithm",
]
