"""The one interface every VLM engine implements: a batch of (images, prompt) requests in, one text per request out."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import cv2
import numpy as np

from engines.base import Engine
from engines.loading import chat_prompt

# Qwen2.5-VL's markers around an image's tokens; the engines that build the chat text themselves use them.
VISION_START, IMAGE_PAD, VISION_END = "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"
SYSTEM_PROMPT = "You are a helpful assistant."  # Qwen2.5-VL's default system turn, made explicit for every engine


@dataclass
class VLMRequest:
    images: list[np.ndarray]  # RGB uint8 (H, W, 3), in the order the prompt refers to them
    prompt: str


class VLMEngine(Engine):
    """A VLM engine (transformers: TransformersVLM, vLLM: VLLMVLM, an OpenAI-compatible server: OpenAIVLM); its
    capabilities are engines.base.Engine's class attributes."""

    @classmethod
    def from_config(cls, cfg, model_path: str, bundle_indices: list[int] | None = None) -> VLMEngine:
        """The engine over `model_path` as the vlm config sets it up (`bundle_indices`: a tensor-parallel engine's
        placement bundles, which only such an engine takes)."""
        return cls(cfg, model_path)

    @abstractmethod
    def generate(self, requests: list[VLMRequest]) -> list[str]:
        """One generated text per request, in order."""


@dataclass
class EngineStats:
    requests: int = 0  # VLM requests answered (one per key frame)
    batches: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0


def resize_for_vlm(image: np.ndarray, size: int) -> np.ndarray:
    """The key frame as the VLM sees it: `size` x `size` RGB uint8 (area interpolation, no re-encoding); 0 keeps it."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"a VLM image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if size <= 0 or image.shape[:2] == (size, size):
        return image
    interpolation = cv2.INTER_AREA if min(image.shape[:2]) >= size else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interpolation)


def user_content(request: VLMRequest) -> str:
    """The user turn in Qwen2.5-VL's text form: the prompt, then one image placeholder per image.

    Text before images follows the released Embodied-R code, which sends [text, image, image].
    """
    placeholders = "".join(f"{VISION_START}{IMAGE_PAD}{VISION_END}" for _ in request.images)
    return f"{request.prompt}{placeholders}"


def chat_text(tokenizer, request: VLMRequest) -> str:
    """The full prompt text (system turn, user turn, generation prompt) through the model's own chat template."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user_content(request)}]
    return chat_prompt(tokenizer, messages)
