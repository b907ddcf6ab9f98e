"""VLM descriptions from an OpenAI-compatible chat-completions endpoint: base64 PNG images, bounded concurrency, retries.

Uses the `openai` client library (pip install '.[openai]'), imported when the engine is built.  The API key is read
from the environment variable that `cfg.api_key_env` names, sent only in the Authorization header and never logged or
put into an error message.  The client retries transient failures (connection errors, timeouts, HTTP 408/409/429/5xx)
`cfg.max_retries` times with its own exponential backoff (0.5 s doubling to 8 s, jittered) or the server's
Retry-After; each failed HTTP attempt is logged here.  Any other HTTP error, or a request that still fails after the
retries, raises VLMRequestError -- never an empty description.
"""

from __future__ import annotations

import base64
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2

from engines.openai_backend import openai_client as build_openai_client
from perception.config import VLMConfig
from perception.engines.base import SYSTEM_PROMPT, EngineStats, VLMEngine, VLMRequest, resize_for_vlm

log = logging.getLogger(__name__)

# What the client retries (openai's _should_retry); a status outside it fails at once.
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


class VLMRequestError(RuntimeError):
    """A VLM request that failed for good (after retries, or with a non-retryable HTTP status)."""


def png_data_url(image_rgb) -> str:
    """An RGB uint8 image as a lossless PNG data URL."""
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding of a key frame failed")
    return "data:image/png;base64," + base64.b64encode(buffer.tobytes()).decode("ascii")


class OpenAIVLM(VLMEngine):
    """Chat completions at `cfg.base_url` for model `model` (the name the server knows it by)."""

    local_model = False

    def __init__(self, cfg: VLMConfig, model: str) -> None:
        self.cfg = cfg
        self.model = model
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        # Every failed HTTP attempt is logged here: the client retries quietly.
        self._client = build_openai_client(
            "vlm.engine", cfg.base_url, cfg.api_key_env, cfg.timeout_s, cfg.max_retries,
            response_hooks=[self._log_failed_attempt],
        )
        self.stats = EngineStats()

    def __repr__(self) -> str:  # no key in reprs either
        return f"OpenAIVLM(url={self.url!r}, model={self.model!r})"

    def _log_failed_attempt(self, response: Any) -> None:
        if response.status_code in RETRYABLE_STATUS:
            log.warning("VLM request to %s answered HTTP %d; the client retries up to %d times",
                        self.url, response.status_code, self.cfg.max_retries)

    def generate(self, requests: list[VLMRequest]) -> list[str]:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.max_concurrency)) as pool:
            texts = list(pool.map(self._complete, requests))
        self.stats.requests += len(requests)
        self.stats.batches += 1
        self.stats.seconds += time.perf_counter() - started
        return texts

    def _messages(self, request: VLMRequest) -> list[dict]:
        content: list[dict] = [{"type": "text", "text": request.prompt}]  # text first, then images, as the released code
        for image in request.images:
            url = png_data_url(resize_for_vlm(image, self.cfg.image_size))
            content.append({"type": "image_url", "image_url": {"url": url}})
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]

    def _complete(self, request: VLMRequest) -> str:
        import openai

        attempts = self.cfg.max_retries + 1
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=self._messages(request),
                max_tokens=self.cfg.max_new_tokens,
                temperature=max(0.0, self.cfg.temperature),
                seed=self.cfg.seed,
            )
        except openai.APIStatusError as error:
            detail = _error_detail(error)
            if error.status_code not in RETRYABLE_STATUS:
                hint = f" (is ${self.cfg.api_key_env} set?)" if error.status_code in (401, 403) else ""
                raise VLMRequestError(f"{self.url} answered HTTP {error.status_code}{hint}: {detail}") from None
            raise VLMRequestError(
                f"{self.url}: request failed after {attempts} attempts (HTTP {error.status_code}: {detail})"
            ) from None
        except openai.APIConnectionError as error:  # includes APITimeoutError
            raise VLMRequestError(
                f"{self.url}: request failed after {attempts} attempts ({type(error).__name__}: {error})"
            ) from None
        return _message_text(response, self.url)


def _message_text(response: Any, url: str) -> str:
    try:
        content = response.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        raise VLMRequestError(f"{url} returned no choices[0].message.content: {str(response)[:300]}") from None
    if isinstance(content, list):  # some servers return content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def _error_detail(error: Any) -> str:
    body = getattr(error, "body", None)
    return str(body if body is not None else error.message)[:300]
