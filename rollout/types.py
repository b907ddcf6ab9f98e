"""What a rollout worker returns: sampled completions with the token log-probs the sampler used."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Completion:
    prompt_index: int  # position of its prompt in the request
    prompt_token_ids: list[int]
    token_ids: list[int]  # generated tokens, EOS included when the model stopped by itself
    logprobs: list[float]  # log-prob of each generated token under the sampling distribution
    text: str  # decoded generated tokens, special tokens skipped
    finished: bool  # stopped at EOS (False: cut at max_new_tokens)
    policy_version: int = 0  # the version of the weights that sampled it (the worker's, as the last broadcast said)
