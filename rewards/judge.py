"""The frozen reference LM that judges logical consistency: given a question, its choices and the policy's `<think>`
text (never the video text), it names the one option letter that the reasoning supports.

"Low temperature" is implemented as its T -> 0 limit restricted to well-formed answers: one forward pass over the
prompt, then the argmax of the next-token logits over the tokens of the valid option letters only. Sampling at a low
temperature converges to the argmax as T -> 0; restricting it to the option letters means the judge always answers
with exactly one valid letter, so nothing has to be parsed (the released code's regexes over free-form judge output,
and their misreadings, disappear) and the answer costs one forward pass instead of a decode loop.

Three engines (`JudgeConfig.engine`) compute that letter:
- transformers: one forward pass, the argmax of the letters' next-token logits (the definition above).
- vllm: one greedy token with `allowed_token_ids` = the request's letters, i.e. the same restricted argmax on vLLM's
  kernels over the same prompt tokens (the local tokenizer builds them). Only float rounding differs, so a letter can
  differ from transformers' where two letters' logits are within ~1e-5; exact ties go to the lower letter in
  transformers and to the lower token id in vLLM.
- openai: a chat completion (`max_tokens=1`, temperature 0, `top_logprobs`): the letter with the highest
  log-prob among the top `top_logprobs` tokens, matched as the letter's exact token text. The generic API cannot
  restrict sampling to given tokens without the served model's token ids, and log-softmax keeps the logits' order, so
  this is the same letter whenever a valid letter is among the top tokens; a reply with none of them is a failed
  judgement (None), never a guess. The server applies the model's chat template (the same template for a vLLM server
  of the same checkpoint); without a local tokenizer (`model` not a folder) the reasoning is cut at 4 characters per
  token instead of by tokens.
A request that fails (after the client's retries) is a failed judgement: None, counted by the pool.

`Judge` is a plain class; `rewards.judge_pool.JudgePool` runs replicas of it as Ray actors.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from embodied_data.records import LETTERS, choice_letters
from engines.batching import batches, left_pad
from engines.hf_backend import default_device, load_model
from engines.loading import chat_prompt, encode, load_tokenizer, resolve_dtype, special_tokens
from engines.openai_backend import api_key
from engines.openai_backend import openai_client as build_openai_client
from engines.vllm_backend import build_llm
from rewards.config import JudgeConfig

log = logging.getLogger(__name__)

ENGINES = ("transformers", "vllm", "openai")
CHARS_PER_TOKEN = 4  # openai engine without a local tokenizer: the reasoning is cut at this many characters per token
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


def judge_messages(request: JudgeRequest, think: str) -> list[dict[str, str]]:
    """The judge's chat: its system prompt, then the question, the options and `think` (already cut to length)."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": build_user_prompt(request, think)}]


def judge_prompt(tokenizer, request: JudgeRequest, think: str) -> str:
    """The judge's prompt text as its tokenizer's chat template renders it, generation prompt included: the letter is
    the next token (the same text trains a judge in `cluster.sft` and is scored here)."""
    messages = judge_messages(request, think)
    return chat_prompt(tokenizer, messages, fallback=f"{SYSTEM_PROMPT}\n\n{messages[1]['content']}\nAnswer:")


class Judge:
    """Loads a causal LM by path (the same code as for a real checkpoint) and answers JudgeRequests in batches."""

    def __init__(
        self,
        model_path: str,
        cfg: JudgeConfig | None = None,
        device: str | None = None,
        num_threads: int | None = None,
    ) -> None:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.cfg = cfg or JudgeConfig(model=model_path)
        if self.cfg.batch_size < 1 or self.cfg.max_think_tokens < 1:
            raise ValueError(
                f"judge batch_size and max_think_tokens must be >= 1, got {self.cfg.batch_size}, {self.cfg.max_think_tokens}"
            )
        if self.cfg.engine not in ENGINES:
            raise ValueError(f"judge.engine must be one of {', '.join(ENGINES)}, got {self.cfg.engine!r}")
        self.engine = self.cfg.engine
        self.model_path = model_path
        started = time.perf_counter()
        self.model: Any = None
        self.llm: Any = None
        self.client: Any = None
        if self.engine == "openai":
            self.device = torch.device("cpu")  # nothing runs here but the HTTP client
            self.tokenizer = _local_tokenizer(model_path)
            self.client = openai_client(self.cfg)
        else:
            self.tokenizer = load_tokenizer(model_path)
            if self.engine == "transformers":
                self._load_transformers(device)
            else:
                self._load_vllm(device)
            self.letter_token_ids = self._letter_token_ids()
            self._letter_of_token = {token: letter for letter, token in self.letter_token_ids.items()}
        self.load_s = time.perf_counter() - started
        log.info("judge %s (%s) loaded on %s in %.1f s", model_path, self.engine, self.device, self.load_s)

    def _load_transformers(self, device: str | None) -> None:
        from transformers import AutoModelForCausalLM

        self.device = default_device(device)
        self.model = load_model(AutoModelForCausalLM, self.model_path, resolve_dtype(self.cfg.dtype, "judge.dtype"), self.device)
        self.pad_token_id = special_tokens(self.model_path, self.tokenizer, self.model.generation_config).pad_token_id

    def _load_vllm(self, device: str | None) -> None:
        self.llm, name = build_llm(
            self.model_path, "judge.engine", dtype=self.cfg.dtype, seed=0, device=device,
            gpu_memory_utilization=self.cfg.gpu_memory_utilization, max_model_len=self.cfg.max_model_len,
        )
        self.device = torch.device(name)

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
        """The reasoning as the judge reads it: whole when it fits max_think_tokens, else its last max_think_tokens.
        The end is kept because that is where a reasoning concludes, and the conclusion is what the judge checks
        against the answer; a cut head loses only the first observations."""
        limit = self.cfg.max_think_tokens
        if self.tokenizer is None:  # openai engine without a local tokenizer: the same tail, measured in characters
            return think[-limit * CHARS_PER_TOKEN :]
        ids = self.tokenizer.encode(think, add_special_tokens=False)
        if len(ids) <= limit:
            return think
        return self.tokenizer.decode(ids[-limit:], skip_special_tokens=True)

    def build_messages(self, request: JudgeRequest) -> list[dict[str, str]]:
        return judge_messages(request, self._cut_think(request.think))

    def build_prompt(self, request: JudgeRequest) -> str:
        return judge_prompt(self.tokenizer, request, self._cut_think(request.think))

    def prompt_token_ids(self, request: JudgeRequest) -> list[int]:
        """The prompt's tokens, the same for the transformers and the vLLM engine (no special tokens added)."""
        return encode(self.tokenizer, self.build_prompt(request))

    @torch.inference_mode()
    def letter_logits(self, requests: Sequence[JudgeRequest]) -> list[torch.Tensor]:
        """Next-token logits over each request's option letters (in letter order), computed batch_size prompts at a time
        (transformers engine)."""
        if self.model is None:
            raise RuntimeError(f"letter_logits needs the transformers engine; this judge runs on {self.engine}")
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

    def judge(self, requests: Sequence[JudgeRequest]) -> list[str | None]:
        """The letter each request's reasoning supports; None for a request that cannot be judged (logged)."""
        answers: list[str | None] = [None] * len(requests)
        valid = []
        for index, request in enumerate(requests):
            if not request.choices or len(request.choices) > len(LETTERS):
                log.warning("judge request %d has %d choices; it needs 1..%d", index, len(request.choices), len(LETTERS))
                continue
            valid.append(index)
        chosen = [requests[index] for index in valid]
        if self.engine == "transformers":
            letters = [request.letters[int(torch.argmax(row))] for request, row in zip(chosen, self.letter_logits(chosen))]
        elif self.engine == "vllm":
            letters = self._vllm_letters(chosen)
        else:
            letters = self._openai_letters(chosen)
        for index, letter in zip(valid, letters):
            answers[index] = letter
        return answers

    def _vllm_letters(self, requests: Sequence[JudgeRequest]) -> list[str | None]:
        """One greedy token per request, restricted to its letters: the restricted argmax on vLLM's kernels."""
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

    def _openai_letters(self, requests: Sequence[JudgeRequest]) -> list[str | None]:
        """Concurrent chat completions (at most max_concurrency in flight); a request that fails is None, logged."""
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(self.cfg.max_concurrency, len(requests)))) as pool:
            return list(pool.map(self._openai_letter, requests))

    def _openai_letter(self, request: JudgeRequest) -> str | None:
        import openai

        try:
            response = self.client.chat.completions.create(
                model=self.model_path,
                messages=self.build_messages(request),
                max_tokens=1,
                temperature=0.0,
                logprobs=True,
                top_logprobs=self.cfg.top_logprobs,
            )
        except openai.OpenAIError as err:  # after the client's retries: a failed judgement, never a letter
            log.warning("judge request to %s failed: %s", self.cfg.base_url, _openai_error_line(err, self.cfg))
            return None
        letter = letter_from_logprobs(response, request.letters)
        if letter is None:
            log.warning(
                "judge reply from %s names no option letter (%s) among its top %d tokens",
                self.cfg.base_url, request.letters, self.cfg.top_logprobs,
            )
        return letter


def letter_from_logprobs(response: Any, letters: str) -> str | None:
    """The valid letter with the highest log-prob among the reply's first-token candidates (the sampled token and its
    top_logprobs); None when no candidate is one of `letters`."""
    try:
        first = response.choices[0].logprobs.content[0]
    except (AttributeError, IndexError, TypeError):
        return None
    best: tuple[float, str] | None = None
    for candidate in [first, *(first.top_logprobs or [])]:
        # The letter's own token only, as the other engines score it: " A" or "A." are other tokens (with a different
        # log-prob), and counting them would change the answer.
        token = candidate.token or ""
        if len(token) == 1 and token in letters and (best is None or candidate.logprob > best[0]):
            best = (candidate.logprob, token)
    return None if best is None else best[1]


def _local_tokenizer(model: str) -> Any:
    """The served model's tokenizer when `model` is a local folder (to cut the reasoning by tokens); else None."""
    return load_tokenizer(model) if os.path.isdir(model) else None


def openai_client(cfg: JudgeConfig) -> Any:
    """An `openai.OpenAI` client for cfg.base_url with the judge's timeout and retry settings (engines.openai_backend)."""
    return build_openai_client(
        "judge.engine", cfg.base_url, cfg.api_key_env, timeout_s=cfg.request_timeout_s, max_retries=cfg.max_retries
    )


def _openai_error_line(err: Exception, cfg: JudgeConfig) -> str:
    """One line naming the failure, never the key (the client's messages hold none; the status and body do not)."""
    status = getattr(err, "status_code", None)
    hint = f" (is ${cfg.api_key_env} set?)" if status in (401, 403) else ""
    head = f"HTTP {status}{hint}" if status is not None else type(err).__name__
    detail = str(err).splitlines()[0][:300] if str(err) else ""
    key = api_key(cfg.api_key_env)
    if key:
        detail = detail.replace(key, "***")
    return f"{head}: {detail}"
