"""Resolves the run's three models: a hub id or path is used as is; `tiny` builds a random-weight model locally."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from cluster.tiny_models import build_tiny_causal_lm, train_tokenizer

log = logging.getLogger(__name__)


@dataclass
class ModelPaths:
    policy: str
    judge: str
    vlm: str


def prepare_models(cfg: DictConfig, corpus: Iterable[str]) -> ModelPaths:
    """Builds whatever is `tiny` under <run_dir>/models (reused when already there), with one tokenizer trained on `corpus`."""
    models = cfg.models
    if "tiny" not in (models.policy, models.judge, models.vlm):
        return ModelPaths(models.policy, models.judge, models.vlm)
    root = Path(cfg.run_dir) / "models"
    tiny = models.tiny
    tokenizer = train_tokenizer(corpus, root / "tokenizer", vocab_size=tiny.vocab_size)
    sizes = dict(
        hidden_size=tiny.hidden_size,
        num_layers=tiny.num_layers,
        num_heads=tiny.num_heads,
        num_kv_heads=tiny.num_kv_heads,
        intermediate_size=tiny.intermediate_size,
    )
    paths = ModelPaths(models.policy, models.judge, models.vlm)
    if models.policy == "tiny":
        paths.policy = build_tiny_causal_lm(tokenizer, root / "policy", seed=tiny.seed, **sizes)
    if models.judge == "tiny":
        # A different seed: the judge is a separate frozen LM, not a copy of the policy.
        paths.judge = build_tiny_causal_lm(tokenizer, root / "judge", seed=tiny.seed + 1, **sizes)
    if models.vlm == "tiny":
        from perception.tiny_vlm import build_tiny_vlm

        paths.vlm = build_tiny_vlm(tokenizer, str(root / "vlm"), seed=tiny.seed + 2)
    log.info("models: policy=%s judge=%s vlm=%s", paths.policy, paths.judge, paths.vlm)
    return paths
