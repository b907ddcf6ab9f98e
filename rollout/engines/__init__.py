"""Policy generation engines: transformers (CPU or GPU) and vLLM (GPU); `create_engine` imports only the one asked for."""

from __future__ import annotations

from rollout.config import ROLLOUT_ENGINES as ENGINES  # the config's choice, declared once
from rollout.config import RolloutConfig
from rollout.engines.base import GenerationEngine, derive_seed



def engine_class(name: str) -> type[GenerationEngine]:
    """The class of the engine `name` (rollout.engine); only its own module is imported."""
    if name == "transformers":
        from rollout.engines.hf_engine import HFEngine

        return HFEngine
    if name == "vllm":
        from rollout.engines.vllm_engine import VLLMEngine

        return VLLMEngine
    raise ValueError(f"rollout engine must be one of {ENGINES}, got {name!r}")


def create_engine(model_path: str, cfg: RolloutConfig, device: str = "cpu", bundle_indices: list[int] | None = None) -> GenerationEngine:
    """The engine named by `cfg.engine`, loaded from `model_path` (a local folder or hub id)."""
    return engine_class(cfg.engine).from_config(model_path, cfg, device, bundle_indices)


__all__ = ["ENGINES", "GenerationEngine", "create_engine", "derive_seed", "engine_class"]
