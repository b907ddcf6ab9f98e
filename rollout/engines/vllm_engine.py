"""vLLM generation engine (vLLM 0.30-0.32): G completions per prompt with the sampler's token log-probs, and weight updates broadcast into the engine's workers through `LLM.collective_rpc`.

vLLM is imported inside the constructor only, so CPU machines import this module (and all of rollout) without it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

import torch

from rollout.config import RolloutConfig, SamplingConfig
from rollout.engines.base import prompt_seeds, validate_prompts, validate_sampling
from rollout.types import Completion

log = logging.getLogger(__name__)

WORKER_EXTENSION = "rollout.engines.vllm_worker_ext.WeightSyncWorkerExtension"
_MAX_REQUEST_SEED = 2**31 - 1  # vLLM gives child i of an n>1 request seed + i; keep that well inside int64


def _eos_token_ids(model_path: str, tokenizer) -> list[int]:
    """EOS ids from the checkpoint's generation config and its tokenizer, the same set the transformers engine stops on."""
    from transformers import GenerationConfig

    ids: set[int] = set()
    try:
        eos = GenerationConfig.from_pretrained(model_path).eos_token_id
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    except OSError:
        pass  # no generation_config.json: the tokenizer's EOS alone
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


class VLLMEngine:
    """One `vllm.LLM` (tensor parallel over `cfg.tensor_parallel_size` GPUs) with the weight-sync worker extension."""

    def __init__(self, model_path: str, cfg: RolloutConfig, bundle_indices: list[int] | None = None):
        try:
            from vllm import LLM
        except ImportError as err:
            raise ImportError("engine 'vllm' needs vLLM 0.30-0.32 (pip install '.[gpu]' on a CUDA machine)") from err
        from transformers import AutoTokenizer

        from actors.vllm_placement import vllm_placement_kwargs

        self.model_path = model_path
        self.tensor_parallel_size = cfg.tensor_parallel_size
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.eos_token_ids = _eos_token_ids(model_path, self.tokenizer)
        kwargs = vllm_placement_kwargs(cfg.tensor_parallel_size, bundle_indices)
        if cfg.max_model_len is not None:
            kwargs["max_model_len"] = cfg.max_model_len
        self.llm = LLM(
            model=model_path,
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            dtype=cfg.dtype,
            seed=cfg.seed,
            enable_prefix_caching=cfg.enable_prefix_caching,
            enforce_eager=cfg.enforce_eager,
            worker_extension_cls=WORKER_EXTENSION,
            # Log-probs after temperature and top-p, i.e. under the distribution the token was drawn from
            # (the default, raw_logprobs, is the untempered model distribution).
            logprobs_mode="processed_logprobs",
            **kwargs,
        )
        self.vocab_size = len(self.tokenizer)

    # ---------------------------------------------------------------- generation

    def _sampling_params(self, sampling: SamplingConfig, seed: int):
        from vllm import SamplingParams

        return SamplingParams(
            n=sampling.num_samples,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            logprobs=0,  # only the sampled token's log-prob
            seed=seed,
            stop_token_ids=self.eos_token_ids,
        )

    def generate(self, prompt_token_ids: list[list[int]], sampling: SamplingConfig, seed: int | Sequence[int]) -> list[list[Completion]]:
        validate_sampling(sampling)
        validate_prompts(prompt_token_ids, self.vocab_size)
        # One seed per prompt: vLLM seeds child i of a request with seed + i, so a shared seed would give prompt p's
        # sample i and prompt q's sample i the same random stream.
        params = [self._sampling_params(sampling, s % _MAX_REQUEST_SEED) for s in prompt_seeds(seed, len(prompt_token_ids))]
        prompts = [{"prompt_token_ids": list(ids)} for ids in prompt_token_ids]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        completions: list[list[Completion]] = []
        for p, output in enumerate(outputs):
            group = []
            for sample in output.outputs:
                token_ids = list(sample.token_ids)
                if sample.logprobs is None or len(sample.logprobs) != len(token_ids):
                    raise RuntimeError(f"prompt {p}: vLLM returned no log-prob for some sampled tokens")
                logprobs = [float(step[token].logprob) for step, token in zip(sample.logprobs, token_ids)]
                group.append(
                    Completion(
                        prompt_index=p,
                        prompt_token_ids=list(prompt_token_ids[p]),
                        token_ids=token_ids,
                        logprobs=logprobs,
                        text=sample.text,
                        finished=sample.finish_reason == "stop",
                    )
                )
            completions.append(group)
        return completions

    # ---------------------------------------------------------------- weights

    def init_weight_group(self, backend: str, host: str, port: int, world_size: int, first_rank: int, timeout_s: float) -> list[int]:
        """Every tensor-parallel worker joins the group, as ranks first_rank .. first_rank + tp - 1."""
        return self.llm.collective_rpc("init_weight_group", args=(backend, host, port, world_size, first_rank, timeout_s))

    def receive_weights(self, metas, bucket_bytes: int, keep_digest: bool = False) -> list[dict]:
        plain = [(m.name, list(m.shape), m.dtype) for m in metas]
        results = self.llm.collective_rpc("receive_weights", args=(plain, bucket_bytes, keep_digest))
        self._after_weight_update()
        return results

    def _after_weight_update(self) -> None:
        # Cached prefix KV blocks were computed with the old weights.
        if self.llm.reset_prefix_cache() is False:
            log.warning("vLLM refused to reset its prefix cache after a weight update (requests still running?)")

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        host = [(name, t.detach().to("cpu")) for name, t in named_tensors]
        self.llm.collective_rpc("load_named_weights", args=(host,))
        self._after_weight_update()

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Tensor-parallel rank 0's parameters under vLLM's names (fused qkv/gate_up, sharded): not Hugging Face names."""
        return iter(self.llm.collective_rpc("named_weights_on_host")[0])

    def shutdown(self) -> None:
        try:
            self.llm.collective_rpc("close_weight_group")
        except Exception:  # the engine may already be down; nothing left to release then
            log.debug("close_weight_group failed during shutdown", exc_info=True)
