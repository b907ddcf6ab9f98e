"""The one OmegaConf tree: every layer's structured config composed, loaded from YAML plus `key=value` overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cluster.sft import SFTConfig
from learner.config import LearnerConfig
from perception.config import PerceptionConfig
from rewards.config import RewardConfig
from rollout.config import RolloutConfig, SamplingConfig


@dataclass
class TinyModelsConfig:
    """Sizes of the locally built random-weight models (used when a model path is `tiny`)."""

    vocab_size: int = 4096
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2  # head_dim 32 (hidden / heads): vLLM's CPU attention has no kernel for head sizes below 32
    num_kv_heads: int = 1
    intermediate_size: int = 128
    seed: int = 0


@dataclass
class ModelsConfig:
    # Hub id or local path; the word `tiny` builds a random-weight model under <run_dir>/models (no hub needed).
    policy: str = "tiny"
    judge: str = "tiny"
    vlm: str = "tiny"
    tiny: TinyModelsConfig = field(default_factory=TinyModelsConfig)


@dataclass
class SyntheticDataConfig:
    out_dir: str = "${run_dir}/data"
    scenes: int = 4
    seed: int = 0
    questions_per_scene: int = 6
    frames: int = 16
    fps: float = 2.0
    size: int = 224


@dataclass
class DataConfig:
    source: str = "synthetic"  # synthetic | manifest
    manifest: str = ""  # a manifest.parquet (source=manifest)
    split: str = "train"  # the split the trainer samples from
    max_records: int = 0  # 0: all
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)


@dataclass
class RayConfig:
    address: str = ""  # "": start a local Ray in-process; "auto" or host:port: join a cluster (ray job submit sets it)
    num_cpus: int | None = None  # local Ray only
    namespace: str = "embodied-r"


@dataclass
class TrainerConfig:
    steps: int = 100
    prompts_per_step: int = 32  # the paper's batch of 32 prompts (x G samples)
    seed: int = 0
    checkpoint_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 2
    resume: bool = False  # continue from the newest complete checkpoint in <run_dir>/checkpoints
    verify_sync: bool = False  # after each broadcast, check every worker's weights equal the learner's
    # Supervised steps on the training answers before GRPO (0: none). For random-weight policies, which never emit the
    # answer format on their own; a real instruct checkpoint needs none.
    sft_warmup_steps: int = 0
    sft_warmup_prompts_per_step: int = 8
    sft_warmup_lr: float = 1e-5
    weight_bucket_mb: int = 64
    weight_sync_timeout_s: float = 300.0
    progress: bool = True
    # Faults: a lost learner rank sends the run back to its last complete checkpoint, at most this many times (then it
    # stops and names the resume command); dead rollout workers are replaced, at most this many over the run.
    max_restarts: int = 1
    max_worker_replacements: int = 8
    # Asynchronous GRPO: 1 generates the next step's rollouts while the learner takes this step, so they are sampled
    # by the policy one step behind (correct with learner.grpo.tis_cap); 0 is the synchronous loop. A checkpoint step
    # is a barrier, so resume stays exact.
    max_staleness: int = 0


@dataclass
class TrainConfig:
    run_dir: str = "runs/default"
    ray: RayConfig = field(default_factory=RayConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)


class ConfigError(ValueError):
    pass


def load_config(config_file: str | None, overrides: list[str] | None = None) -> DictConfig:
    """Schema defaults <- YAML file <- `key=value` overrides; unknown keys and wrong types are errors that name the key."""
    schema = OmegaConf.structured(TrainConfig)
    layers = [schema]
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {config_file} does not exist")
        layers.append(OmegaConf.load(path))
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"overrides must look like key=value, got {bad}")
        layers.append(OmegaConf.from_dotlist(list(overrides)))
    try:
        cfg = OmegaConf.merge(*layers)
    except Exception as err:  # omegaconf's errors name the key; keep their text
        raise ConfigError(f"invalid config: {err}") from err
    validate(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    problems = []
    if cfg.trainer.steps < 1:
        problems.append("trainer.steps must be >= 1")
    if cfg.trainer.prompts_per_step < 1:
        problems.append("trainer.prompts_per_step must be >= 1")
    if cfg.sampling.num_samples < 2:
        problems.append("sampling.num_samples (G) must be >= 2: group-normalised advantages need a group")
    if cfg.trainer.max_restarts < 0 or cfg.trainer.max_worker_replacements < 0:
        problems.append("trainer.max_restarts and trainer.max_worker_replacements must be >= 0")
    if cfg.rewards.overlong_penalty and not 0 <= cfg.rewards.overlong_cache_tokens <= cfg.sampling.max_new_tokens:
        problems.append(f"rewards.overlong_cache_tokens ({cfg.rewards.overlong_cache_tokens}) must be in [0, "
                        f"sampling.max_new_tokens={cfg.sampling.max_new_tokens}] when rewards.overlong_penalty is on")
    if cfg.trainer.max_staleness not in (0, 1):
        problems.append("trainer.max_staleness must be 0 (synchronous) or 1 (the next step's rollouts overlap this step's learning)")
    if cfg.rollout.num_workers < 1 or cfg.learner.num_ranks < 1:
        problems.append("rollout.num_workers and learner.num_ranks must be >= 1")
    if cfg.learner.zero_stage not in (0, 1, 2, 3):
        problems.append("learner.zero_stage must be 0, 1, 2 or 3")
    if cfg.rollout.engine not in ("transformers", "vllm"):
        problems.append("rollout.engine must be transformers or vllm")
    if cfg.perception.vlm.engine not in ("transformers", "vllm", "openai"):
        problems.append("perception.vlm.engine must be transformers, vllm or openai")
    if cfg.perception.source not in ("vlm", "ground_truth"):
        problems.append("perception.source must be vlm or ground_truth")
    if cfg.data.source not in ("synthetic", "manifest"):
        problems.append("data.source must be synthetic or manifest")
    if cfg.data.source == "manifest" and not cfg.data.manifest:
        problems.append("data.source=manifest needs data.manifest=PATH/manifest.parquet")
    starts = [stage.start for stage in cfg.rewards.stages]
    if not starts or starts[0] != 0 or starts != sorted(set(starts)):
        problems.append("rewards.stages must start at 0 and have increasing starts")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def resolved_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
