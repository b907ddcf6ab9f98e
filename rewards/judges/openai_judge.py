"""The OpenAI-compatible judge: a chat completion per request (max_tokens=1, temperature 0, top_logprobs), whose letter
is the valid option letter with the highest log-prob among the reply's first-token candidates; a failed request, or a
reply naming no letter, is a failed judgement (None), never a guess."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from engines.loading import load_tokenizer
from engines.openai_backend import api_key
from engines.openai_backend import openai_client as build_openai_client
from rewards.config import JudgeConfig
from rewards.judge import Judge, JudgeRequest, letter_from_logprobs, register_judge

log = logging.getLogger(__name__)


@register_judge("openai")
class OpenAIJudge(Judge):
    """A served model behind judge.base_url; nothing runs here but the HTTP client (and, when `model` is a local
    folder, its tokenizer, to cut the reasoning by tokens)."""

    local_model = False

    @classmethod
    def check_config(cls, cfg: JudgeConfig) -> None:
        if not cfg.base_url:
            raise ValueError("judge.engine=openai needs judge.base_url (e.g. http://host:8000/v1)")

    def _load(self, device: str | None) -> None:
        self.tokenizer = load_tokenizer(self.model_path) if os.path.isdir(self.model_path) else None
        self.client = openai_client(self.cfg)

    def _letters(self, requests: Sequence[JudgeRequest]) -> list[str | None]:
        """Concurrent chat completions (at most max_concurrency in flight); a request that fails is None, logged."""
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(self.cfg.max_concurrency, len(requests)))) as pool:
            return list(pool.map(self._letter, requests))

    def _letter(self, request: JudgeRequest) -> str | None:
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
            log.warning("judge request to %s failed: %s", self.cfg.base_url, _error_line(err, self.cfg))
            return None
        letter = letter_from_logprobs(response, request.letters)
        if letter is None:
            log.warning(
                "judge reply from %s names no option letter (%s) among its top %d tokens",
                self.cfg.base_url, request.letters, self.cfg.top_logprobs,
            )
        return letter


def openai_client(cfg: JudgeConfig) -> Any:
    """An `openai.OpenAI` client for cfg.base_url with the judge's timeout and retry settings (engines.openai_backend)."""
    return build_openai_client(
        "judge.engine", cfg.base_url, cfg.api_key_env, timeout_s=cfg.request_timeout_s, max_retries=cfg.max_retries
    )


def _error_line(err: Exception, cfg: JudgeConfig) -> str:
    """One line naming the failure, never the key (the client's messages hold none; the status and body do not)."""
    status = getattr(err, "status_code", None)
    hint = f" (is ${cfg.api_key_env} set?)" if status in (401, 403) else ""
    head = f"HTTP {status}{hint}" if status is not None else type(err).__name__
    detail = str(err).splitlines()[0][:300] if str(err) else ""
    key = api_key(cfg.api_key_env)
    if key:
        detail = detail.replace(key, "***")
    return f"{head}: {detail}"
