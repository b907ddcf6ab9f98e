"""Transformers generation engine: batched sampling of G completions per prompt from any causal LM, each sequence from its own seeded random stream, with the log-prob of each sampled token under the sampling distribution."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

import torch
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)
from transformers.cache_utils import StaticCache

from engines.batching import batches, left_pad
from engines.hf_backend import load_model
from engines.loading import load_tokenizer, resolve_dtype, special_tokens
from engines.weights import InProcessWeightReceiver
from rollout.config import RolloutConfig, SamplingConfig
from rollout.engines.base import GenerationEngine, derive_seed, prompt_seeds, validate_prompts, validate_sampling
from rollout.types import Completion

log = logging.getLogger(__name__)


class SampledTokenLogprobs(LogitsProcessor):
    """The last logits processor: keeps log_softmax of the scores the sampler draws from at each step and, one step
    later, when the sampled token shows up in `input_ids`, the log-prob of that token.

    Holding one (batch, vocab) step instead of `output_scores` keeps memory at O(batch * vocab) instead of
    O(batch * new_tokens * vocab), which for a 150k vocabulary and 2048 new tokens is the difference between 10 MB
    and 20 GB per chunk.
    """

    def __init__(self) -> None:
        self._pending: torch.Tensor | None = None  # log-probs of the step whose token is not yet known
        self._steps: list[torch.Tensor] = []  # (batch,) log-prob of the token sampled at each finished step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._pending is not None:
            self._steps.append(self._pending.gather(1, input_ids[:, -1:]).squeeze(1))
        self._pending = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def collect(self, new_tokens: torch.LongTensor) -> torch.Tensor:
        """(batch, new_tokens) log-probs of `new_tokens`, the generated part of the output sequences."""
        num_new = new_tokens.shape[1]
        steps = self._steps[:num_new]  # generate may run (and then undo) a step past the stop
        if len(steps) == num_new - 1 and self._pending is not None:
            steps.append(self._pending.gather(1, new_tokens[:, -1:]).squeeze(1))
        if len(steps) != num_new:
            raise RuntimeError(f"recorded {len(steps)} sampling steps for {num_new} generated tokens")
        if not steps:
            return torch.empty(new_tokens.shape[0], 0)
        return torch.stack(steps, dim=1)


class SeededRowSampler(LogitsProcessor):
    """Draws each row's next token from softmax(scores) with that row's own generator, and leaves that token the only
    finite score, so that generate's greedy search takes it.

    generate()'s own sampler draws the whole batch from the global RNG, so a sequence's tokens would depend on the
    sequences batched with it (and hence on the worker count and `generate_batch_size`); one stream per sequence makes
    them depend on its seed alone.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device):
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float(), dim=-1)
        chosen = torch.cat([torch.multinomial(probs[row], 1, generator=generator) for row, generator in enumerate(self.generators)])
        only_chosen = torch.full_like(scores, float("-inf"))
        return only_chosen.scatter_(1, chosen.unsqueeze(1), 0.0)


class HFEngine(InProcessWeightReceiver, GenerationEngine):
    """A causal LM loaded with transformers; generates in chunks of `generate_batch_size` sequences, left-padded.
    Takes the weight broadcast in this process (engines.weights.InProcessWeightReceiver)."""

    torch_threads = True

    @classmethod
    def from_config(cls, model_path: str, cfg: RolloutConfig, device: str, bundle_indices: list[int] | None) -> HFEngine:
        return cls(model_path, dtype=cfg.dtype, generate_batch_size=cfg.generate_batch_size, device=device)

    def __init__(self, model_path: str, dtype: str = "float32", generate_batch_size: int = 16, device: str = "cpu"):
        if generate_batch_size < 1:
            raise ValueError(f"generate_batch_size must be at least 1, got {generate_batch_size}")
        self.model_path = model_path
        self.device = torch.device(device)
        self.generate_batch_size = generate_batch_size
        self.tokenizer = load_tokenizer(model_path)
        self.model = load_model(AutoModelForCausalLM, model_path, resolve_dtype(dtype, "rollout.dtype"), self.device)
        tokens = special_tokens(model_path, self.tokenizer, self.model.generation_config)
        self.eos_token_ids = tokens.eos_token_ids
        self.pad_token_id = tokens.pad_token_id
        # A checkpoint's generation_config.json may carry sampling defaults (Qwen2.5-Instruct: top_k 20, top_p 0.8,
        # repetition_penalty 1.05) that generate() would silently apply; the sampling here is exactly SamplingConfig.
        self.model.generation_config = GenerationConfig(eos_token_id=self.eos_token_ids, pad_token_id=self.pad_token_id)

        # Tied parameters appear under every name (lm_head.weight and model.embed_tokens.weight are one tensor).
        self._parameters = dict(self.model.named_parameters(remove_duplicate=False))
        tied = getattr(self.model, "all_tied_weights_keys", None) or getattr(self.model, "_tied_weights_keys", None)
        self._tied_aliases = set(tied) if isinstance(tied, (dict, list, set, tuple)) else set()
        self._bound: set[str] = set()  # parameters whose storage is a weight transport's shared segment (bind_weights)
        self.vocab_size = self.model.get_input_embeddings().weight.shape[0]

    # ---------------------------------------------------------------- generation

    def _generation_config(self, sampling: SamplingConfig, seeds: Sequence[int], prompt_width: int) -> tuple[GenerationConfig, LogitsProcessorList, SampledTokenLogprobs]:
        recorder = SampledTokenLogprobs()
        processors = LogitsProcessorList()
        if sampling.min_new_tokens > 0:  # EOS masked until then; first, so the recorder sees the masked distribution
            processors.append(MinNewTokensLengthLogitsProcessor(prompt_width, sampling.min_new_tokens, self.eos_token_ids, self.device))
        greedy = sampling.temperature == 0
        if not greedy:
            # Our own warpers, so the recorder runs after them and sees the distribution the sampler draws from
            # (generate() places user processors before its own warpers).
            if sampling.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_p < 1.0:
                processors.append(TopPLogitsWarper(sampling.top_p))
        processors.append(recorder)
        if not greedy:
            processors.append(SeededRowSampler(seeds, self.device))  # the draw itself; generate then decodes greedily
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            num_return_sequences=1,
        )
        return config, processors, recorder

    @torch.no_grad()
    def _generate_chunk(self, prompts: list[list[int]], sampling: SamplingConfig, seeds: list[int]) -> list[tuple[list[int], list[float], bool]]:
        input_ids, attention_mask = left_pad(prompts, self.pad_token_id)  # every prompt ends where generation starts
        width = input_ids.shape[1]
        config, processors, recorder = self._generation_config(sampling, seeds, width)
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        sequences = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=self._prompt_cache(input_ids, attention_mask, sampling.max_new_tokens),
            generation_config=config,
            logits_processor=processors,
        )
        new_tokens = sequences[:, width:]
        logprobs = recorder.collect(new_tokens).cpu()
        eos = set(self.eos_token_ids)
        results = []
        for row in range(len(prompts)):
            tokens = new_tokens[row].tolist()
            stop = next((i for i, t in enumerate(tokens) if t in eos), None)
            if stop is not None:  # what follows the first EOS is padding
                tokens = tokens[: stop + 1]
            results.append((tokens, logprobs[row, : len(tokens)].tolist(), stop is not None))
        return results

    def _prompt_cache(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int):
        """The keys and values of every row's prompt but its last token, each distinct prompt run once: the G samples of
        a prompt share it, so a chunk of G x n rows prefills n prompts. generate() then runs only the last prompt
        token and the new ones. Taken for every chunk (even one of distinct prompts), so that a sequence's numbers do
        not depend on what it is batched with. None for one-token prompts: nothing to cache.

        The cache is a StaticCache sized for the whole generation: a growing (dynamic) cache copies all its keys and
        values at every new token (torch.cat), which on CPU took a third of the decode time."""
        if input_ids.shape[1] < 2:
            return None
        prompts = torch.cat([input_ids, attention_mask], dim=1)
        distinct, prompt_of_row = torch.unique(prompts, dim=0, return_inverse=True)
        rows = input_ids.shape[0]
        first_rows = torch.full((distinct.shape[0],), rows, dtype=torch.long, device=input_ids.device)
        first_rows.scatter_reduce_(0, prompt_of_row, torch.arange(rows, device=input_ids.device), reduce="amin")
        # The positions generate() gives left-padded rows (cumsum of the mask - 1, pads at 0).
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        out = self.model(
            input_ids=input_ids[first_rows, :-1], attention_mask=attention_mask[first_rows, :-1],
            position_ids=position_ids[first_rows, :-1], use_cache=True, logits_to_keep=1,
        )
        cache = StaticCache(config=self.model.config, max_cache_len=input_ids.shape[1] + max_new_tokens)
        for index, layer in enumerate(out.past_key_values.layers):
            cache.update(layer.keys[prompt_of_row], layer.values[prompt_of_row], index)
        return cache

    def generate(self, prompt_token_ids: list[list[int]], sampling: SamplingConfig, seed: int | Sequence[int]) -> list[list[Completion]]:
        validate_sampling(sampling)
        validate_prompts(prompt_token_ids, self.vocab_size)
        seeds = prompt_seeds(seed, len(prompt_token_ids))
        jobs = [(p, s) for p in range(len(prompt_token_ids)) for s in range(sampling.num_samples)]
        completions: list[list[Completion | None]] = [[None] * sampling.num_samples for _ in prompt_token_ids]
        for chunk in batches(jobs, self.generate_batch_size):
            chunk_seeds = [derive_seed(seeds[p], "sample", s) for p, s in chunk]
            outputs = self._generate_chunk([prompt_token_ids[p] for p, _ in chunk], sampling, chunk_seeds)
            for (p, s), (tokens, logprobs, finished) in zip(chunk, outputs):
                completions[p][s] = Completion(
                    prompt_index=p,
                    prompt_token_ids=list(prompt_token_ids[p]),
                    token_ids=tokens,
                    logprobs=logprobs,
                    text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                    finished=finished,
                )
        return completions  # type: ignore[return-value]

    # ---------------------------------------------------------------- weights

    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        for name, tensor in named_tensors:
            parameter = self._parameters.get(name)
            if parameter is None:
                if name in self._tied_aliases:
                    continue  # an alias of a tied parameter that this model does not register under its own name
                raise KeyError(f"model {self.model_path} has no parameter named {name!r}")
            if tuple(parameter.shape) != tuple(tensor.shape):
                raise ValueError(
                    f"weight {name}: shape {tuple(tensor.shape)} does not match the model's {tuple(parameter.shape)}"
                )
            if name in self._bound:  # its storage is a transport's segment, shared with other workers: own it again
                parameter.data = tensor.to(dtype=parameter.dtype, device=parameter.device, copy=True)
                self._bound.discard(name)
            else:
                parameter.copy_(tensor)  # casts to the engine's dtype and device

    def bind_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Makes each parameter's storage the given tensor when dtype and device already match (the shm transport's
        views: later broadcasts then update the model with no copy here); copies the others, as load_weights."""
        to_copy = []
        for name, tensor in named_tensors:
            parameter = self._parameters.get(name)
            if parameter is None or tuple(parameter.shape) != tuple(tensor.shape) or parameter.dtype != tensor.dtype \
                    or parameter.device != tensor.device:
                to_copy.append((name, tensor))  # load_weights names what is wrong, or casts
            elif parameter.data_ptr() != tensor.data_ptr():
                parameter.data = tensor
                self._bound.add(name)
        self.load_weights(to_copy)

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(self.model.named_parameters())
