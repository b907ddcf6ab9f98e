"""Policy generation engines: transformers (CPU or GPU) and vLLM (GPU); `create_engine` imports only the one asked for."""

from __future__ import annotations

from rollout.config import ROLLOUT_ENGINES as ENGINES  # the config's choice, declared once
from rollout.config import RolloutConfig
from rollout.engines.base import GenerationEngine, derive_seed



def resolve_engine(cfg: RolloutConfig) -> str:
    """rollout.engine with `auto` decided: vLLM when an installed build runs on the workers' device (a GPU when they ask
    for one), else transformers."""
    if cfg.engine != "auto":
        return str(cfg.engine)
    from engines.vllm_backend import vllm_unavailable

    return "vllm" if vllm_unavailable(gpu=cfg.num_gpus_per_replica > 0) is None else "transformers"


def engine_class(name: str) -> type[GenerationEngine]:
    """The class of the engine `name` (rollout.engine, `auto` resolved first: resolve_engine); only its own module is
    imported."""
    if name == "auto":
        raise ValueError("rollout.engine=auto names no engine class: resolve it first (rollout.engines.resolve_engine)")
    if name == "transformers":
        from rollout.engines.hf_engine import HFEngine

        return HFEngine
    if name == "vllm":
        from rollout.engines.vllm_engine import VLLMEngine

        return VLLMEngine
    raise ValueError(f"rollout engine must be one of {ENGINES}, got {name!r}")


def create_engine(model_path: str, cfg: RolloutConfig, device: str = "cpu", bundle_indices: list[int] | None = None) -> GenerationEngine:
    """The engine named by `cfg.engine` (`auto` resolved here if the pool has not), loaded from `model_path` (a local
    folder or hub id)."""
    return engine_class(resolve_engine(cfg)).from_config(model_path, cfg, device, bundle_indices)


__all__ = ["ENGINES", "GenerationEngine", "create_engine", "derive_seed", "engine_class", "resolve_engine"]
