"""VLM engines behind one interface (`VLMEngine.generate(list[VLMRequest]) -> list[str]`) and the factory that picks one."""

from __future__ import annotations

from perception.config import VLM_ENGINES as ENGINES  # the config's choice, declared once
from perception.config import VLMConfig
from perception.engines.base import VLMEngine, VLMRequest



def vlm_engine_class(name: str) -> type[VLMEngine]:
    """The class of the VLM engine `name` (vlm.engine); only its own module is imported."""
    if name == "transformers":
        from perception.engines.transformers_vlm import TransformersVLM

        return TransformersVLM
    if name == "vllm":
        from perception.engines.vllm_vlm import VLLMVLM

        return VLLMVLM
    if name == "openai":
        from perception.engines.openai_vlm import OpenAIVLM

        return OpenAIVLM
    raise ValueError(f"unknown vlm.engine {name!r}; expected one of {', '.join(ENGINES)}")


def make_vlm_engine(cfg: VLMConfig, model_path: str, bundle_indices: list[int] | None = None) -> VLMEngine:
    """The engine `cfg.engine` names, over `model_path` (a checkpoint folder or hub id; for openai, the served model name).
    `bundle_indices`: the placement-group bundles of a tensor-parallel vLLM engine's GPU workers."""
    return vlm_engine_class(cfg.engine).from_config(cfg, model_path, bundle_indices)


__all__ = ["ENGINES", "VLMEngine", "VLMRequest", "make_vlm_engine", "vlm_engine_class"]
