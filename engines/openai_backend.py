"""The OpenAI-compatible HTTP backend: one `openai.OpenAI` client for any engine (judge, VLM), its key read from a named environment variable, with the client's own timeout, retries and backoff."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def api_key(api_key_env: str) -> str:
    """The key in the environment variable `api_key_env` names; "" when it is unset or no variable is named."""
    return os.environ.get(api_key_env, "") if api_key_env else ""


def openai_client(
    key: str,
    base_url: str,
    api_key_env: str,
    timeout_s: float,
    max_retries: int,
    response_hooks: list[Callable[[Any], None]] | None = None,
) -> Any:
    """An `openai.OpenAI` client for `base_url`. `key` names the engine's config ("judge.engine", "vlm.engine") in
    errors. The client retries connection errors, timeouts and HTTP 408/409/429/5xx `max_retries` times with
    exponential backoff (0.5 s doubling to 8 s, jittered), honouring Retry-After; `response_hooks` see every HTTP
    response, failed attempts included (the client logs its retries at INFO at most). The API key is sent only in the
    Authorization header and never logged."""
    if not base_url:
        raise ValueError(f"{key}=openai needs {key.rsplit('.', 1)[0]}.base_url (e.g. http://host:8000/v1)")
    try:
        import openai
    except ImportError as err:
        raise ImportError(f"{key}=openai needs the openai client: pip install '.[openai]'") from err
    secret = api_key(api_key_env)
    if not secret:
        # Local OpenAI-compatible servers (vLLM serve) need none; a server that does answers 401, reported.
        log.warning("environment variable %s is not set: calling %s without an API key", api_key_env, base_url)
    # The client insists on a key; "EMPTY" is what keyless OpenAI-compatible servers (vLLM) conventionally get.
    client_kwargs: dict[str, Any] = {}
    if response_hooks:
        client_kwargs["http_client"] = openai.DefaultHttpxClient(event_hooks={"response": list(response_hooks)})
    return openai.OpenAI(
        base_url=base_url, api_key=secret or "EMPTY", timeout=timeout_s, max_retries=max_retries, **client_kwargs
    )
