"""Resolves the run's three models before any actor starts: `tiny` builds a random-weight model locally; a folder, a
hub id or a named registry model goes through `engines.model_refs.resolve` (a named model is pulled into the cache
here, in the driver, so actors only ever load local folders or hub ids)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from cluster.tiny_models import build_tiny_causal_lm, train_tokenizer
from engines.model_refs import resolve

log = logging.getLogger(__name__)


@dataclass
class ModelPaths:
    policy: str
    judge: str
    vlm: str


UNUSED = "-"  # a reference the caller does not need (e.g. perceive_cmd only wants the VLM): passed through as is


def _resolved(ref: str, key: str, served_elsewhere: bool = False) -> str:
    """`ref` as a loadable path or hub id (`tiny` kept for the builder below). A model named to an OpenAI-compatible
    server is the server's, not ours to resolve."""
    if ref in ("tiny", UNUSED) or served_elsewhere:
        return ref
    return resolve(ref, key=key)


def _engine(cfg: DictConfig, section: str, part: str) -> str:
    """cfg.<section>.<part>.engine as a plain string ("" where the config has none)."""
    engine = getattr(getattr(getattr(cfg, section, None), part, None), "engine", "")
    return str(getattr(engine, "value", engine))


def prepare_models(cfg: DictConfig, corpus: Iterable[str]) -> ModelPaths:
    """Resolves every reference (pulling named models into the cache) and builds whatever is `tiny` under
    <run_dir>/models (reused when already there), with one tokenizer trained on `corpus`."""
    models = cfg.models
    resolved = ModelPaths(
        policy=_resolved(models.policy, "models.policy"),
        judge=_resolved(models.judge, "models.judge", served_elsewhere=_engine(cfg, "rewards", "judge") == "openai"),
        vlm=_resolved(models.vlm, "models.vlm", served_elsewhere=_engine(cfg, "perception", "vlm") == "openai"),
    )
    if "tiny" not in (resolved.policy, resolved.judge, resolved.vlm):
        log.info("models: policy=%s judge=%s vlm=%s", resolved.policy, resolved.judge, resolved.vlm)
        return resolved
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
    paths = resolved
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
