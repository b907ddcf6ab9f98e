"""Policy generation engines: transformers (CPU or GPU) and vLLM (GPU); `create_engine` imports only the one asked for."""

from __future__ import annotations

from rollout.config import RolloutConfig
from rollout.engines.base import GenerationEngine, derive_seed

ENGINES = ("transformers", "vllm")


def create_engine(model_path: str, cfg: RolloutConfig, device: str = "cpu", bundle_indices: list[int] | None = None) -> GenerationEngine:
    """The engine named by `cfg.engine`, loaded from `model_path` (a local folder or hub id)."""
    if cfg.engine == "transformers":
        from rollout.engines.hf_engine import HFEngine

        return HFEngine(model_path, dtype=cfg.dtype, generate_batch_size=cfg.generate_batch_size, device=device)
    if cfg.engine == "vllm":
        from rollout.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model_path, cfg, bundle_indices=bundle_indices)
    raise ValueError(f"rollout engine must be one of {ENGINES}, got {cfg.engine!r}")


__all__ = ["ENGINES", "GenerationEngine", "create_engine", "derive_seed"]
