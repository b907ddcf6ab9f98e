"""The transformers judge: one forward pass over each prompt, the argmax of the next-token logits over the request's
option letters (rewards/judge.py's definition of the judge's letter)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from engines.batching import batches, left_pad
from engines.hf_backend import default_device, load_model
from engines.loading import load_tokenizer, resolve_dtype, special_tokens
from rewards.judge import Judge, JudgeRequest, letter_token_ids, register_judge


@register_judge("transformers")
class TransformersJudge(Judge):
    """The judge's model in this process (CPU or GPU)."""

    torch_threads = True

    def _load(self, device: str | None) -> None:
        from transformers import AutoModelForCausalLM

        self.tokenizer = load_tokenizer(self.model_path)
        self.device = default_device(device)
        self.model = load_model(AutoModelForCausalLM, self.model_path, resolve_dtype(self.cfg.dtype, "judge.dtype"), self.device)
        self.pad_token_id = special_tokens(self.model_path, self.tokenizer, self.model.generation_config).pad_token_id
        self.letter_token_ids = letter_token_ids(self.tokenizer, self.model_path)

    @torch.inference_mode()
    def letter_logits(self, requests: Sequence[JudgeRequest]) -> list[torch.Tensor]:
        """Next-token logits over each request's option letters (in letter order), computed batch_size prompts at a time."""
        results: list[torch.Tensor] = []
        for chunk in batches(requests, self.cfg.batch_size):
            input_ids, attention_mask = left_pad([self.prompt_token_ids(request) for request in chunk], self.pad_token_id)
            input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
            # Positions count real tokens only, so a left-padded prompt is scored exactly as it would be alone.
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            output = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=False,
                logits_to_keep=1,
            )
            last = output.logits[:, -1, :].float().cpu()
            for row, request in enumerate(chunk):
                ids = [self.letter_token_ids[letter] for letter in request.letters]
                results.append(last[row, ids])
        return results

    def _letters(self, requests: Sequence[JudgeRequest]) -> list[str | None]:
        return [request.letters[int(torch.argmax(row))] for request, row in zip(requests, self.letter_logits(requests))]
