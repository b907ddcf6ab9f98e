"""The interface every policy generation engine implements: G sampled completions per prompt with the sampler's token log-probs, in-place weight loading, and (engines.weights.WeightReceiver) the learner's weight broadcast."""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence

import torch

from engines.base import Engine
from engines.weights import WeightReceiver
from rollout.config import RolloutConfig, SamplingConfig
from rollout.types import Completion


class GenerationEngine(WeightReceiver, Engine):
    """A policy engine (transformers: HFEngine, vLLM: VLLMEngine). Declared, not structural: the rollout worker relies
    on every method here and on WeightReceiver's, so an engine missing one fails when it is built, not mid-run."""

    tokenizer: object  # the model's tokenizer (a transformers tokenizer)

    @classmethod
    @abstractmethod
    def from_config(cls, model_path: str, cfg: RolloutConfig, device: str, bundle_indices: list[int] | None) -> GenerationEngine:
        """The engine over `model_path` as the rollout config sets it up (`bundle_indices`: a tensor-parallel engine's
        placement bundles)."""

    @abstractmethod
    def generate(self, prompt_token_ids: list[list[int]], sampling: SamplingConfig, seed: int | Sequence[int]) -> list[list[Completion]]:
        """`sampling.num_samples` completions per prompt, outer list in prompt order. Each completion carries the
        log-prob of every generated token under the sampling distribution: log_softmax(logits / temperature) after
        the top-p cut when top_p < 1 (at temperature 0, greedy decoding, the untempered log_softmax(logits)).

        `seed` is one seed per prompt, or one int from which each prompt's is derived (`prompt_seeds`). A prompt's
        completions depend on its own seed only, not on the prompts batched with it or on which worker runs it (up to
        the floating-point effect of batch shape on its logits)."""

    @abstractmethod
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copies the given tensors (Hugging Face parameter names) into the model's parameters in place."""

    @abstractmethod
    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The model's parameters as (name, tensor)."""


def derive_seed(base_seed: int, *keys: int | str) -> int:
    """A 63-bit seed derived from `base_seed` and `keys` (worker rank, chunk, prompt index ...), stable across runs and
    processes (unlike Python's salted hash), so independent streams never share a seed by accident."""
    text = ":".join(str(k) for k in (base_seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def prompt_seeds(seed: int | Sequence[int], num_prompts: int) -> list[int]:
    """One seed per prompt: `seed` itself when it is a sequence (of `num_prompts` seeds), else derived from it and each
    prompt's position."""
    if isinstance(seed, int):
        return [derive_seed(seed, "prompt", index) for index in range(num_prompts)]
    seeds = [int(s) for s in seed]
    if len(seeds) != num_prompts:
        raise ValueError(f"got {len(seeds)} seeds for {num_prompts} prompts: pass one seed per prompt, or one int")
    return seeds


def validate_prompts(prompt_token_ids: list[list[int]], vocab_size: int) -> None:
    """Raises ValueError naming the first bad prompt: empty, or holding ids outside the vocabulary."""
    for index, ids in enumerate(prompt_token_ids):
        if len(ids) == 0:
            raise ValueError(f"prompt {index} is empty")
        low, high = min(ids), max(ids)
        if low < 0 or high >= vocab_size:
            raise ValueError(f"prompt {index} holds token ids outside the vocabulary [0, {vocab_size}): min {low}, max {high}")


def validate_sampling(sampling: SamplingConfig) -> None:
    if sampling.num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {sampling.num_samples}")
    if sampling.temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {sampling.temperature}")
    if not 0 < sampling.top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {sampling.top_p}")
    if sampling.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {sampling.max_new_tokens}")
    if not 0 <= sampling.min_new_tokens <= sampling.max_new_tokens:
        raise ValueError(f"min_new_tokens must be in [0, max_new_tokens={sampling.max_new_tokens}], got {sampling.min_new_tokens}")
