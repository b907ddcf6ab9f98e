"""Qwen2.5-VL generation with transformers: batches of (images, prompt) requests -> texts, greedy at temperature 0.

Loads any Qwen2.5-VL checkpoint folder (the tiny random one or a real one) by path.  No Qwen2_5_VLProcessor: on
CPU machines its torchvision video processor cannot be built (STACK.md), so the image processor
(Qwen2VLImageProcessorPil) and the tokenizer are used directly: each `<|image_pad|>` is expanded to
``image_grid_thw.prod() // merge_size**2`` copies and ``mm_token_type_ids`` (1 on image tokens) is passed so that the
model computes its 3D rotary positions.
"""

from __future__ import annotations

import time

import torch

from engines.batching import batches, left_pad
from engines.hf_backend import default_device, load_model
from engines.loading import encode, load_tokenizer, resolve_dtype, special_tokens
from perception.config import VLMConfig
from perception.engines.base import IMAGE_PAD, EngineStats, VLMEngine, VLMRequest, chat_text, resize_for_vlm


class TransformersVLM(VLMEngine):
    """A Qwen2.5-VL model held in this process; `generate` runs `cfg.batch_size` requests per forward batch."""

    torch_threads = True

    def __init__(self, cfg: VLMConfig, model_path: str, device: str | None = None) -> None:
        from transformers import Qwen2_5_VLForConditionalGeneration
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        self.cfg = cfg
        self.device = default_device(device)
        # "auto" here is bfloat16 on a GPU and float32 on the CPU (not the checkpoint's dtype: Qwen2.5-VL ships bf16).
        dtype = resolve_dtype(cfg.dtype, "vlm.dtype", auto=torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.tokenizer = load_tokenizer(model_path)
        self.image_processor = Qwen2VLImageProcessorPil.from_pretrained(model_path)
        self.model = load_model(Qwen2_5_VLForConditionalGeneration, model_path, dtype, self.device)
        self.image_token_id = self.model.config.image_token_id
        self.merge_size = int(self.image_processor.merge_size)
        tokens = special_tokens(model_path, self.tokenizer, self.model.generation_config)
        self.eos_token_ids = tokens.eos_token_ids
        self.pad_token_id = tokens.pad_token_id
        self.stats = EngineStats()

    def generate(self, requests: list[VLMRequest]) -> list[str]:
        texts: list[str] = []
        for batch in batches(requests, max(1, self.cfg.batch_size)):
            texts.extend(self._generate_batch(list(batch)))
        return texts

    @torch.no_grad()
    def _generate_batch(self, requests: list[VLMRequest]) -> list[str]:
        started = time.perf_counter()
        images = [resize_for_vlm(image, self.cfg.image_size) for request in requests for image in request.images]
        prompts = [chat_text(self.tokenizer, request) for request in requests]
        vision: dict[str, torch.Tensor] = {}
        if images:
            processed = self.image_processor(images=images, return_tensors="pt")
            vision = {"pixel_values": processed["pixel_values"], "image_grid_thw": processed["image_grid_thw"]}
            prompts = self._expand_image_tokens(prompts, processed["image_grid_thw"])
        input_ids, attention_mask = left_pad([encode(self.tokenizer, prompt) for prompt in prompts], self.pad_token_id)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        inputs = {key: value.to(self.device) for key, value in {**batch, **vision}.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == self.image_token_id).int()
        greedy = self.cfg.temperature <= 0
        sampling = {} if greedy else {"temperature": self.cfg.temperature, "top_p": 1.0, "top_k": 0}
        output = self.model.generate(
            **inputs,
            max_new_tokens=self.cfg.max_new_tokens,
            do_sample=not greedy,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            **sampling,
        )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        self.stats.requests += len(requests)
        self.stats.batches += 1
        stop_ids = torch.tensor([*self.eos_token_ids, self.pad_token_id], device=new_tokens.device)
        self.stats.generated_tokens += int((~torch.isin(new_tokens, stop_ids)).sum())
        self.stats.seconds += time.perf_counter() - started
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def _expand_image_tokens(self, prompts: list[str], image_grid_thw: torch.Tensor) -> list[str]:
        """Each `<|image_pad|>` becomes as many copies as its image has merged patches, images in request order."""
        counts = iter((image_grid_thw.prod(-1) // self.merge_size**2).tolist())
        expanded = []
        for prompt in prompts:
            pieces = prompt.split(IMAGE_PAD)
            text = pieces[0]
            for piece in pieces[1:]:
                count = next(counts, None)
                if count is None:
                    raise ValueError(f"a prompt has more {IMAGE_PAD} placeholders than its request has images")
                text += IMAGE_PAD * int(count) + piece
            expanded.append(text)
        leftover = sum(1 for _ in counts)
        if leftover:
            raise ValueError(f"{leftover} images have no {IMAGE_PAD} placeholder in their prompt")
        return expanded
