"""The learner.grpo settings checked before any work, each error naming its key."""

from __future__ import annotations

import math

from configtypes import violations
from learner.config import GRPOConfig


def check_grpo_config(cfg: GRPOConfig) -> None:
    """Raises ValueError naming the first learner.grpo setting that is out of range (called when a learner starts)."""
    for _, problem in violations(GRPOConfig, lambda key: getattr(cfg, key), prefix="learner.grpo."):
        raise ValueError(problem)  # the choices as declared on the fields (learner/config.py)
    if cfg.beta < 0:
        raise ValueError(f"learner.grpo.beta must be >= 0, got {cfg.beta}")
    if cfg.beta > 0 and cfg.kl_estimator == "k1":
        # k1 = log(pi / pi_ref) has gradient grad log pi, whose expectation over on-policy samples is 0: as a loss term
        # it adds noise and pulls towards nothing (learner/kl.py).
        raise ValueError(
            "learner.grpo.kl_estimator=k1 regularises nothing as a loss term (its expected gradient on on-policy samples "
            "is zero); use k3 (the gradient of KL(ref || policy), DeepSeek's GRPO) or k2 (that of KL(policy || ref)), "
            "or beta=0 for no KL term"
        )
    if not 0 <= cfg.clip_low < 1 or cfg.clip_high < 0:
        raise ValueError(f"learner.grpo clip range needs 0 <= clip_low < 1 and clip_high >= 0, got {cfg.clip_low}, {cfg.clip_high}")
    if not 0 <= cfg.gspo_clip_low < 1:
        raise ValueError(f"learner.grpo.gspo_clip_low must be in [0, 1), got {cfg.gspo_clip_low}")
    if cfg.gspo_clip_high < 0:
        raise ValueError(f"learner.grpo.gspo_clip_high must be >= 0, got {cfg.gspo_clip_high}")
    if cfg.updates_per_batch < 1:
        raise ValueError(f"learner.grpo.updates_per_batch must be >= 1, got {cfg.updates_per_batch}")
    if cfg.max_tokens_norm < 0:
        raise ValueError(f"learner.grpo.max_tokens_norm must be >= 0 (0: the sampling max_new_tokens), got {cfg.max_tokens_norm}")
    if not math.isfinite(cfg.tis_cap) or cfg.tis_cap < 0:
        raise ValueError(f"learner.grpo.tis_cap must be a finite number >= 0 (0: off), got {cfg.tis_cap}")
    if cfg.tis_cap > 0 and cfg.old_logprobs == "rollout":
        # The ratio would then already be pi / pi_sampler; the TIS weight pi_old / pi_sampler would correct twice.
        raise ValueError("learner.grpo.tis_cap > 0 needs learner.grpo.old_logprobs=learner (rollout already corrects towards the sampler)")
    if not isinstance(cfg.mask_truncated, bool):
        raise ValueError(f"learner.grpo.mask_truncated must be true or false, got {cfg.mask_truncated!r}")
