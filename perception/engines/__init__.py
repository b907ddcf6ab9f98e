"""VLM engines behind one interface (`VLMEngine.generate(list[VLMRequest]) -> list[str]`) and the factory that picks one."""

from __future__ import annotations

from perception.config import VLMConfig
from perception.engines.base import VLMEngine, VLMRequest

ENGINES = ("transformers", "vllm", "openai")


def make_vlm_engine(cfg: VLMConfig, model_path: str, bundle_indices: list[int] | None = None) -> VLMEngine:
    """The engine `cfg.engine` names, over `model_path` (a checkpoint folder or hub id; for openai, the served model name).
    `bundle_indices`: the placement-group bundles of a tensor-parallel vLLM engine's GPU workers."""
    if cfg.engine == "transformers":
        from perception.engines.transformers_vlm import TransformersVLM

        return TransformersVLM(cfg, model_path)
    if cfg.engine == "vllm":
        from perception.engines.vllm_vlm import VLLMVLM

        return VLLMVLM(cfg, model_path, bundle_indices=bundle_indices)
    if cfg.engine == "openai":
        from perception.engines.openai_vlm import OpenAIVLM

        return OpenAIVLM(cfg, model_path)
    raise ValueError(f"unknown vlm.engine {cfg.engine!r}; expected one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "VLMEngine", "VLMRequest", "make_vlm_engine"]
