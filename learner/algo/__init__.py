"""The loss variants as named objects, one file each, chosen by learner.grpo.algorithm.

An Algorithm owns the advantages from rewards, the per-token loss and its aggregation (learner/algo/base.py):

- `grpo`    (grpo.py): group-normalised advantages, the clipped token objective, token or sequence mean;
- `gspo`    (gspo.py): one ratio per sequence, clipped per sequence, a mean over sequences;
- `dr_grpo` (dr_grpo.py): advantages r - group mean, the loss over a constant (max_tokens_norm x sequences).

Options that work with every variant live in their own files: truncated importance sampling (tis.py), masking
truncated completions (truncation.py), and the staleness statistics (staleness.py). A new variant is a new file with an
Algorithm subclass, registered in ALGORITHMS (and its name in checks.ALGORITHM_NAMES).
"""

from __future__ import annotations

from learner.algo.base import Algorithm, LossInputs, LossNorm, LossOutputs
from learner.algo.checks import ALGORITHM_NAMES, check_grpo_config
from learner.algo.dr_grpo import DrGRPO
from learner.algo.grpo import GRPO, group_advantages
from learner.algo.gspo import GSPO
from learner.config import GRPOConfig

ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (GRPO, GSPO, DrGRPO)}
assert tuple(ALGORITHMS) == ALGORITHM_NAMES  # the check and the registry name the same variants


def make_algorithm(cfg: GRPOConfig, max_new_tokens: int | None = None) -> Algorithm:
    """The variant learner.grpo.algorithm names. `max_new_tokens` is the sampling cap (dr_grpo's default normaliser)."""
    check_grpo_config(cfg)
    return ALGORITHMS[cfg.algorithm](cfg, max_new_tokens)


__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "DrGRPO",
    "GRPO",
    "GSPO",
    "LossInputs",
    "LossNorm",
    "LossOutputs",
    "check_grpo_config",
    "group_advantages",
    "make_algorithm",
]
