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

Each engine is a `Judge` subclass in its own file (rewards/judges/: transformers_judge.py, vllm_judge.py,
openai_judge.py), registered under its name with `@register_judge`; `make_judge` builds the one a config names, and
`rewards.judge_pool.JudgePool` runs replicas of it as Ray actors.
"""

from __future__ import annotations

import importlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from configtypes import registrar
from embodied_data.records import LETTERS, choice_letters
from engines.base import Engine
from engines.loading import chat_prompt, encode
from rewards.config import JudgeConfig

log = logging.getLogger(__name__)

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


JUDGES: dict[str, type[Judge]] = {}


# @register_judge("name"): the judge engine `name` (JudgeConfig.engine) is this class.
register_judge = registrar(JUDGES, "judge engine", attribute="engine")


def judge_class(engine: str) -> type[Judge]:
    """The judge engine named `engine` (rewards/judges/: one file each, registered as they are imported)."""
    importlib.import_module("rewards.judges")  # registers every engine (imported here: the engines import this module)

    if engine not in JUDGES:
        raise ValueError(f"judge.engine must be one of {', '.join(JUDGES)}, got {engine!r}")
    return JUDGES[engine]


def make_judge(model_path: str, cfg: JudgeConfig | None = None, device: str | None = None,
               num_threads: int | None = None) -> Judge:
    """The judge `cfg.engine` names over `model_path` (default config: transformers)."""
    cfg = cfg or JudgeConfig(model=model_path)
    return judge_class(cfg.engine)(model_path, cfg, device, num_threads)


class Judge(Engine, ABC):
    """Answers JudgeRequests in batches with the one option letter each reasoning supports; an engine (a subclass in
    rewards/judges/) loads its model or client and computes the letters."""

    engine: str  # the JudgeConfig.engine name it is registered under

    def __init__(
        self,
        model_path: str,
        cfg: JudgeConfig | None = None,
        device: str | None = None,
        num_threads: int | None = None,
    ) -> None:
        if num_threads is not None and self.torch_threads:
            torch.set_num_threads(num_threads)
        self.cfg = cfg or JudgeConfig(model=model_path)
        if self.cfg.batch_size < 1 or self.cfg.max_think_tokens < 1:
            raise ValueError(
                f"judge batch_size and max_think_tokens must be >= 1, got {self.cfg.batch_size}, {self.cfg.max_think_tokens}"
            )
        self.check_config(self.cfg)
        self.model_path = model_path
        self.tokenizer: Any = None
        self.device = torch.device("cpu")
        started = time.perf_counter()
        self._load(device)
        self.load_s = time.perf_counter() - started
        log.info("judge %s (%s) loaded on %s in %.1f s", model_path, self.engine, self.device, self.load_s)

    @classmethod
    def check_config(cls, cfg: JudgeConfig) -> None:
        """Raises ValueError when `cfg` lacks what this engine needs (checked before any replica starts)."""

    @abstractmethod
    def _load(self, device: str | None) -> None:
        """Loads the model (or builds the client) and sets `tokenizer` (None where there is none) and `device`."""

    @abstractmethod
    def _letters(self, requests: Sequence[JudgeRequest]) -> list[str | None]:
        """The letter of each (well-formed) request, None for one that could not be judged."""

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

    def judge(self, requests: Sequence[JudgeRequest]) -> list[str | None]:
        """The letter each request's reasoning supports; None for a request that cannot be judged (logged)."""
        answers: list[str | None] = [None] * len(requests)
        valid = []
        for index, request in enumerate(requests):
            if not request.choices or len(request.choices) > len(LETTERS):
                log.warning("judge request %d has %d choices; it needs 1..%d", index, len(request.choices), len(LETTERS))
                continue
            valid.append(index)
        for index, letter in zip(valid, self._letters([requests[index] for index in valid])):
            answers[index] = letter
        return answers


def letter_token_ids(tokenizer, model_path: str) -> dict[str, int]:
    """The token of each option letter as it follows the generation prompt; each must be one token (a local engine
    scores the letters' next-token logits)."""
    ids = {}
    for letter in LETTERS:
        tokens = tokenizer.encode(letter, add_special_tokens=False)
        if len(tokens) != 1:
            raise ValueError(
                f"judge tokenizer {model_path}: option letter {letter!r} is {len(tokens)} tokens {tokens}; "
                "restricted greedy judging needs one token per letter"
            )
        ids[letter] = tokens[0]
    return ids


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
