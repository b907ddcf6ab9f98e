"""The frozen reference LM that judges logical consistency: given a question, its choices and the policy's `<think>`
text (never the video text), it names the one option letter that the reasoning supports.

"Low temperature" is implemented as its T -> 0 limit restricted to well-formed answers: one forward pass over the
prompt, then the argmax of the next-token logits over the tokens of the valid option letters only. Sampling at a low
temperature converges to the argmax as T -> 0; restricting it to the option letters means the judge always answers
with exactly one valid letter, so nothing has to be parsed (the released code's regexes over free-form judge output,
and their misreadings, disappear) and the answer costs one forward pass instead of a decode loop.

`Judge` is a plain class; `rewards.judge_pool.JudgePool` runs replicas of it as Ray actors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from embodied_data.records import LETTERS, choice_letters
from rewards.config import JudgeConfig

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You check whether a line of reasoning settles a multiple-choice question. You see the question, its options and "
    "the reasoning. Reply with the single letter of the option that the reasoning leads to."
)


@dataclass(frozen=True)
class JudgeRequest:
    """One consistency question for the judge: the policy's reasoning about one multiple-choice question."""

    question: str
    choices: tuple[str, ...]  # option texts without letter prefixes, as in Record
    think: str  # the policy's <think> text (cut to max_think_tokens by the judge)

    @property
    def letters(self) -> str:
        return choice_letters(len(self.choices))


def build_user_prompt(request: JudgeRequest, think: str) -> str:
    options = "\n".join(f"{letter}. {text}" for letter, text in zip(request.letters, request.choices))
    return (
        f"Question: {request.question.strip()}\n"
        f"Options:\n{options}\n"
        f"Reasoning: {think.strip()}\n"
        f"Which option does the reasoning lead to? Reply with one letter ({', '.join(request.letters)})."
    )


def _resolve_dtype(name: str) -> torch.dtype | str:
    if name == "auto":
        return "auto"
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"judge dtype {name!r} is not a torch dtype (float32, bfloat16, float16) or 'auto'")
    return dtype


class Judge:
    """Loads a causal LM by path (the same code as for a real checkpoint) and answers JudgeRequests in batches."""

    def __init__(
        self,
        model_path: str,
        cfg: JudgeConfig | None = None,
        device: str | None = None,
        num_threads: int | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.cfg = cfg or JudgeConfig(model=model_path)
        if self.cfg.batch_size < 1 or self.cfg.max_think_tokens < 1:
            raise ValueError(
                f"judge batch_size and max_think_tokens must be >= 1, got {self.cfg.batch_size}, {self.cfg.max_think_tokens}"
            )
        self.model_path = model_path
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        started = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        # Left padding puts every prompt's last token in the last column, where the next-token logits are read.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=_resolve_dtype(self.cfg.dtype))
        self.model.to(self.device).eval()
        self.model.requires_grad_(False)
        self.letter_token_ids = self._letter_token_ids()
        self.load_s = time.perf_counter() - started
        log.info("judge %s loaded on %s in %.1f s", model_path, self.device, self.load_s)

    def _letter_token_ids(self) -> dict[str, int]:
        """The token of each option letter as it follows the generation prompt; each must be one token."""
        ids = {}
        for letter in LETTERS:
            tokens = self.tokenizer.encode(letter, add_special_tokens=False)
            if len(tokens) != 1:
                raise ValueError(
                    f"judge tokenizer {self.model_path}: option letter {letter!r} is {len(tokens)} tokens {tokens}; "
                    "restricted greedy judging needs one token per letter"
                )
            ids[letter] = tokens[0]
        return ids

    def ready(self) -> bool:
        return True

    def _cut_think(self, think: str) -> str:
        ids = self.tokenizer.encode(think, add_special_tokens=False)
        if len(ids) <= self.cfg.max_think_tokens:
            return think
        # Keep the head: the judge sees the reasoning as if the policy had stopped after max_think_tokens.
        return self.tokenizer.decode(ids[: self.cfg.max_think_tokens], skip_special_tokens=True)

    def build_prompt(self, request: JudgeRequest) -> str:
        user = build_user_prompt(request, self._cut_think(request.think))
        if self.tokenizer.chat_template:
            messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"{SYSTEM_PROMPT}\n\n{user}\nAnswer:"

    @torch.inference_mode()
    def letter_logits(self, requests: Sequence[JudgeRequest]) -> list[torch.Tensor]:
        """Next-token logits over each request's option letters (in letter order), computed batch_size prompts at a time."""
        results: list[torch.Tensor] = []
        for begin in range(0, len(requests), self.cfg.batch_size):
            chunk = requests[begin : begin + self.cfg.batch_size]
            prompts = [self.build_prompt(request) for request in chunk]
            batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            input_ids = batch["input_ids"].to(self.device)
            attention_mask = batch["attention_mask"].to(self.device)
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

    def judge(self, requests: Sequence[JudgeRequest]) -> list[str | None]:
        """The letter each request's reasoning supports; None for a request that cannot be judged (logged)."""
        answers: list[str | None] = [None] * len(requests)
        valid = []
        for index, request in enumerate(requests):
            if not request.choices or len(request.choices) > len(LETTERS):
                log.warning("judge request %d has %d choices; it needs 1..%d", index, len(request.choices), len(LETTERS))
                continue
            valid.append(index)
        logits = self.letter_logits([requests[index] for index in valid])
        for index, row in zip(valid, logits):
            answers[index] = requests[index].letters[int(torch.argmax(row))]
        return answers
