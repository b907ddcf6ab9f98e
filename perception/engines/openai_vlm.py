"""VLM descriptions from an OpenAI-compatible chat-completions endpoint: base64 PNG images, bounded concurrency, retries.

Standard library only (urllib + a thread pool).  The API key is read from the environment variable that
`cfg.api_key_env` names, sent only in the Authorization header and never logged or put into an error message.
Transient failures (connection errors, timeouts, HTTP 408/409/429/5xx) are retried with exponential backoff and
jitter (honouring Retry-After); any other HTTP error, or a request that still fails after `cfg.max_retries`
retries, raises VLMRequestError -- never an empty description.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import cv2

from perception.config import VLMConfig
from perception.engines.base import SYSTEM_PROMPT, EngineStats, VLMRequest, resize_for_vlm

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_BACKOFF_S = 60.0


class VLMRequestError(RuntimeError):
    """A VLM request that failed for good (after retries, or with a non-retryable HTTP status)."""


def png_data_url(image_rgb) -> str:
    """An RGB uint8 image as a lossless PNG data URL."""
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding of a key frame failed")
    return "data:image/png;base64," + base64.b64encode(buffer.tobytes()).decode("ascii")


class OpenAIVLM:
    """Chat completions at `cfg.base_url` for model `model` (the name the server knows it by)."""

    def __init__(self, cfg: VLMConfig, model: str) -> None:
        if not cfg.base_url:
            raise ValueError("vlm.engine=openai needs vlm.base_url (e.g. http://host:8000/v1)")
        self.cfg = cfg
        self.model = model
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self._api_key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        if not self._api_key:
            # Local OpenAI-compatible servers (vLLM serve) often need none; a server that does answers 401, reported.
            log.warning("environment variable %s is not set: calling %s without an API key", cfg.api_key_env, self.url)
        self.stats = EngineStats()

    def __repr__(self) -> str:  # no key in reprs either
        return f"OpenAIVLM(url={self.url!r}, model={self.model!r})"

    def generate(self, requests: list[VLMRequest]) -> list[str]:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.max_concurrency)) as pool:
            texts = list(pool.map(self._complete, requests))
        self.stats.requests += len(requests)
        self.stats.batches += 1
        self.stats.seconds += time.perf_counter() - started
        return texts

    def _payload(self, request: VLMRequest) -> bytes:
        content = [{"type": "text", "text": request.prompt}]  # text first, then images, as the released code sends
        for image in request.images:
            url = png_data_url(resize_for_vlm(image, self.cfg.image_size))
            content.append({"type": "image_url", "image_url": {"url": url}})
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}],
            "max_tokens": self.cfg.max_new_tokens,
            "temperature": max(0.0, self.cfg.temperature),
            "seed": self.cfg.seed,
        }
        return json.dumps(body).encode("utf-8")

    def _complete(self, request: VLMRequest) -> str:
        payload = self._payload(request)
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        last_problem = ""
        for attempt in range(self.cfg.max_retries + 1):
            retry_after: float | None = None
            try:
                http_request = urllib.request.Request(self.url, data=payload, headers=headers, method="POST")
                with urllib.request.urlopen(http_request, timeout=self.cfg.timeout_s) as response:
                    return _message_text(json.loads(response.read().decode("utf-8")), self.url)
            except urllib.error.HTTPError as error:
                detail = _error_detail(error)
                if error.code not in RETRYABLE_STATUS:
                    hint = f" (is ${self.cfg.api_key_env} set?)" if error.code in (401, 403) else ""
                    raise VLMRequestError(f"{self.url} answered HTTP {error.code}{hint}: {detail}") from None
                last_problem = f"HTTP {error.code}: {detail}"
                retry_after = _retry_after_seconds(error)
            except (urllib.error.URLError, TimeoutError, socket.timeout, ConnectionError) as error:
                last_problem = f"{type(error).__name__}: {getattr(error, 'reason', error)}"
            if attempt < self.cfg.max_retries:
                delay = min(MAX_BACKOFF_S, self.cfg.retry_backoff_s * 2**attempt) * (0.5 + random.random() / 2)
                delay = max(delay, retry_after or 0.0)
                log.warning("VLM request to %s failed (%s); retry %d/%d in %.1fs",
                            self.url, last_problem, attempt + 1, self.cfg.max_retries, delay)
                time.sleep(delay)
        raise VLMRequestError(f"{self.url}: request failed after {self.cfg.max_retries + 1} attempts ({last_problem})")


def _message_text(body: dict, url: str) -> str:
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise VLMRequestError(f"{url} returned no choices[0].message.content: {str(body)[:300]}") from None
    if isinstance(content, list):  # some servers return content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def _error_detail(error: urllib.error.HTTPError) -> str:
    try:
        return error.read().decode("utf-8", "replace")[:300]
    except Exception:  # the body is only a hint; the status code is the error
        return error.reason or ""


def _retry_after_seconds(error: urllib.error.HTTPError) -> float | None:
    value = error.headers.get("Retry-After") if error.headers else None
    try:
        return min(MAX_BACKOFF_S, float(value)) if value else None
    except ValueError:
        return None
