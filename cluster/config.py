"""The one OmegaConf tree: every layer's structured config composed, loaded from YAML plus `key=value` overrides."""

from __future__ import annotations

from configtypes import bounded, choice, is_number, one_of, violations
import copy
import functools
import importlib.util
import math
import re
import warnings
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cluster.sft_config import SFTConfig
from learner.config import LearnerConfig
from perception.config import PerceptionConfig
from rewards.config import RewardConfig
from rollout.config import RolloutConfig, SamplingConfig


@dataclass
class TinyModelsConfig:
    """Sizes of the locally built random-weight models (used when a model path is `tiny`)."""

    vocab_size: int = bounded(4096, ge=1)
    hidden_size: int = bounded(64, ge=1)
    num_layers: int = bounded(2, ge=1)
    num_heads: int = bounded(2, ge=1)  # head_dim 32 (hidden / heads): vLLM's CPU attention has no kernel for head sizes below 32
    num_kv_heads: int = bounded(1, ge=1)
    intermediate_size: int = bounded(128, ge=1)
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
    scenes: int = bounded(4, ge=1)
    seed: int = 0
    questions_per_scene: int = bounded(6, ge=1)
    frames: int = bounded(16, ge=1)
    fps: float = bounded(2.0, gt=0)
    size: int = bounded(224, ge=1)


DATA_SOURCES = ("synthetic", "manifest")  # DataConfig.source, checked by validate
DataSource = choice("DataSource", DATA_SOURCES, __name__)


@dataclass
class DataConfig:
    source: DataSource = DataSource.synthetic  # synthetic | manifest
    manifest: str = ""  # a manifest.parquet (source=manifest)
    split: str = "train"  # the split the trainer samples from
    max_records: int = bounded(0, ge=0)  # 0: all
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)


@dataclass
class RayConfig:
    address: str = ""  # "": start a local Ray in-process; "auto" or host:port: join a cluster (ray job submit sets it)
    num_cpus: int | None = bounded(2, gt=0)  # local Ray only (None: every core of the machine); the embedded default fits in 2
    namespace: str = "embodied-r"


WEIGHT_BACKENDS = ("auto", "gloo", "nccl", "shm")  # WeightSyncConfig.backend, resolved in cluster/weight_sync.py
CHECKPOINT_FAILURE_POLICIES = ("continue", "stop")  # TrainerConfig.checkpoint_failure
WeightBackend = choice("WeightBackend", WEIGHT_BACKENDS, __name__)


@dataclass
class WeightSyncConfig:
    """The learner -> rollout workers weight broadcast after every update (cluster/weight_sync.py, weightsync/)."""

    # The transport: auto = nccl on GPU pools, shm when every rollout worker is on learner rank 0's node, else gloo.
    backend: WeightBackend = WeightBackend.auto
    bucket_mb: int = bounded(64, ge=1)  # tensors are sent in buckets of about this size (bounds the memory of a ZeRO-3 gather)
    timeout_s: float = bounded(300.0, gt=0)
    verify: bool = True  # after each broadcast, check every worker's weights equal the learner's (sync/match)


@dataclass
class TrainerConfig:
    steps: int = bounded(5, ge=1)
    prompts_per_step: int = bounded(4, ge=1)  # the paper: 32 prompts (x G samples)
    seed: int = 0
    checkpoint_every: int = bounded(0, ge=0)  # 0: only at the end
    keep_checkpoints: int = bounded(2, ge=1)
    resume: bool = False  # continue from the newest complete checkpoint in <run_dir>/checkpoints
    # Supervised steps on the training answers before GRPO (0: none). For random-weight policies, which never emit the
    # answer format on their own; a real instruct checkpoint needs none.
    sft_warmup_steps: int = bounded(100, ge=0)
    sft_warmup_prompts_per_step: int = bounded(8, ge=1)
    sft_warmup_lr: float = bounded(3e-3, gt=0)
    progress: bool = True
    # Completions of each step's first group shown in the log (the best and the worst by reward first), with their
    # reward terms, the judge's letter and the advantage; 0 shows none.
    log_completions: int = bounded(2, ge=0)
    # Faults: a lost learner rank sends the run back to its last complete checkpoint, at most this many times (then it
    # stops and names the resume command); dead rollout workers are replaced, at most this many over the run.
    max_restarts: int = bounded(1, ge=0)
    max_worker_replacements: int = bounded(8, ge=0)
    # SIGTERM (preemption, `ray job stop`): the step in flight is finished, checkpointed, every actor shut down, and the
    # driver exits 75 naming the resume command, all within this many seconds, else the step is abandoned (exit 75
    # too; the newest complete checkpoint stays). Keep it under the platform's notice (RAY_JOB_STOP_WAIT_TIME_S).
    preemption_grace_s: float = bounded(60.0, gt=0)
    # A lost node: each pool's bundles (learner, rollout, judge) may go this long without a live node, at the start and
    # after their node died (a replacement node may join meanwhile: the run replaces what it lost and goes on); past
    # it the run stops with exit 69, naming the resources no node has and the resume command.
    placement_timeout_s: float = bounded(120.0, gt=0)
    # A checkpoint that cannot be written (a full disk): removed, the previous one kept, and the run goes on
    # (continue: checkpoints are best effort, faults/checkpoint_failures counts them) or stops with exit 74 (stop).
    checkpoint_failure: str = one_of("continue", CHECKPOINT_FAILURE_POLICIES)
    # Asynchronous GRPO: 1 generates the next step's rollouts while the learner takes this step, so they are sampled
    # by the policy one step behind (correct with learner.grpo.tis_cap); 0 is the synchronous loop. A checkpoint step
    # is a barrier, so resume stays exact.
    max_staleness: int = one_of(0, (0, 1))  # 0: synchronous; 1: the next step's rollouts overlap this step's learning
    # DAPO's dynamic sampling with refill (cluster/dynamic_sampling.py), with learner.grpo.filter_equal_reward_groups:
    # up to this many extra generation rounds per step top the batch up to prompts_per_step informative groups.
    dynamic_sampling_rounds: int = bounded(0, ge=0)
    # Held-out evaluation during training: every eval_every steps (and after the last step) the rollout workers answer
    # up to eval_max_questions questions of data.manifest's eval_split greedily (one sample, temperature 0), scored as
    # `embodied-r eval` scores them; eval/* metrics in that step's row. 0: off.
    eval_every: int = bounded(0, ge=0)
    eval_max_questions: int = bounded(64, ge=0)  # 0: the whole split; else taken round-robin over the categories
    eval_split: str = "test"
    # The viewer's record (cluster/samples.py, `embodied-r view`): every samples_every steps (0: never) the step's first
    # samples_max_groups groups go to <run_dir>/samples/ with their key frames, captions and completions (and each
    # held-out evaluation's answers); past samples_max_mb the oldest pages are thinned.
    samples_every: int = bounded(1, ge=0)
    samples_max_groups: int = bounded(4, ge=1)
    samples_max_mb: int = bounded(256, ge=1)


TRACKING_BACKENDS = ("jsonl", "tensorboard", "wandb")  # TrackingConfig.backends (cluster/tracking/: one file each)
WANDB_MODES = ("", "online", "offline", "disabled")  # "": the WANDB_MODE environment variable decides (else online)


@dataclass
class WandbConfig:
    """Weights & Biases (tracking.backends with wandb; `pip install '.[wandb]'`)."""

    project: str = "embodied-r"
    name: str = ""  # the run's name; "": the run dir's folder name
    entity: str = ""  # "": the account's default
    dir: str = "${run_dir}"  # wandb writes its wandb/ folder here (offline runs: `wandb sync` it later)
    mode: str = ""  # online | offline | disabled; "": WANDB_MODE decides, as wandb itself does


@dataclass
class TrackingConfig:
    """Where the per-step metrics rows go: every backend gets the same names (the keys of metrics.jsonl's rows)."""

    backends: list[str] = field(default_factory=lambda: ["jsonl", "tensorboard"])  # jsonl is required (resume reads it)
    tensorboard_dir: str = "${run_dir}/tensorboard"
    plots: bool = True  # PNG curves in <run_dir>/plots at each checkpoint and at the end of the run
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class TrainConfig:
    run_dir: str = "runs/tiny"
    ray: RayConfig = field(default_factory=RayConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    weight_sync: WeightSyncConfig = field(default_factory=WeightSyncConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


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
        layer = OmegaConf.load(path)
        # A benchmark's config (configs/learning.yaml) is a TrainConfig plus a `bench:` section that only its script
        # reads (bench/learning_run.py): train, sft and eval take the same file and leave that section alone.
        if isinstance(layer, DictConfig) and "bench" in layer:
            layer.pop("bench")
        layers.append(layer)
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"overrides must look like key=value, got {bad}")
        layers.append(OmegaConf.from_dotlist(list(overrides)))
    try:
        cfg = OmegaConf.merge(*layers)
    except OmegaConfBaseException:
        # A typed field refused a value (a choice, a number's type, an unknown key). OmegaConf stops at the first;
        # merging value by value names every one, and the bounds are then checked on the values that were accepted.
        cfg, problems = _merge_each_value(layers)
        try:
            validate(cfg)
        except ConfigError as err:
            problems += [line.strip() for line in str(err).splitlines()[1:] if line.strip() not in problems]
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems)) from None
    validate(cfg)
    return cfg


def _leaves(node, prefix: str = ""):
    """(dotted key, value) of every value in a plain config tree; a list is one value."""
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaves(value, path + ".")
        else:
            yield path, value


def _merge_each_value(layers: list) -> tuple[DictConfig, list[str]]:
    """The schema with every value of the later layers merged in one at a time: the config of the accepted values,
    and one problem per refused value, naming its key (a choice's allowed values, a number's expected type)."""
    cfg, problems = layers[0], []
    for layer in layers[1:]:
        for key, value in _leaves(OmegaConf.to_container(layer, resolve=False)):
            single: dict = {}
            cursor = single
            *parents, leaf = key.split(".")
            for part in parents:
                cursor = cursor.setdefault(part, {})
            cursor[leaf] = value
            try:
                cfg = OmegaConf.merge(cfg, single)
            except OmegaConfBaseException as err:
                problems.append(_typed_problem(err, key))
    return cfg, problems


def _typed_problem(err: OmegaConfBaseException, key: str) -> str:
    reason = (getattr(err, "msg", None) or str(err)).splitlines()[0]
    refused = re.fullmatch(r"Invalid value (.*), expected one of \[(.*)\]", reason)
    if refused:
        return f"{key} must be one of {refused[2]}; got {refused[1]}"
    return f"{getattr(err, 'full_key', None) or key}: {reason}"


def _check_learner_memory(learner: DictConfig, problems: list[str]) -> None:
    """learner.offload needs the ZeRO stage DeepSpeed implements it for; learner.lora needs modules to adapt."""
    if learner.offload.param == "cpu" and learner.zero_stage != 3:
        problems.append(f"learner.offload.param={learner.offload.param} needs learner.zero_stage=3 (DeepSpeed offloads "
                        f"parameters only under ZeRO-3); got learner.zero_stage={learner.zero_stage!r}")
    if learner.offload.optimizer == "cpu" and learner.zero_stage == 0:
        problems.append(f"learner.offload.optimizer={learner.offload.optimizer} needs learner.zero_stage >= 1 (ZeRO-Offload "
                        f"offloads the ZeRO optimizer's partitions); got learner.zero_stage=0")
    if learner.lora.enabled and not learner.lora.target_modules:
        problems.append("learner.lora.target_modules is empty: name the modules to adapt (e.g. q_proj, v_proj)")
    if is_number(learner.lora.dropout) and learner.lora.dropout == 1:
        problems.append("learner.lora.dropout must be < 1 (1 zeroes every adapter input); got 1")


def _check_stages(rewards: DictConfig, problems: list[str]) -> None:
    """rewards.stages: sorted by a strictly increasing start from 0, each weight finite and >= 0, not all 0."""
    stages = rewards.stages
    if not stages:
        problems.append("rewards.stages is empty: give at least one stage with start 0")
        return
    for index, stage in enumerate(stages):
        where = f"rewards.stages[{index}]"
        if not is_number(stage.start) or stage.start < 0:
            problems.append(f"{where}.start must be an integer >= 0; got {stage.start!r}")
        weights = {name: stage[name] for name in ("format", "accuracy", "consistency")}
        for name, weight in weights.items():
            if not is_number(weight) or not math.isfinite(weight) or weight < 0:
                problems.append(f"{where}.{name} must be a finite weight >= 0; got {weight!r}")
        if all(is_number(w) for w in weights.values()) and sum(weights.values()) == 0:
            problems.append(f"{where}: all weights are 0, so every completion would get the same reward")
    starts = [stage.start for stage in stages]
    if starts[0] != 0:
        problems.append(f"rewards.stages[0].start must be 0 (the first stage is in force from the start); got {starts[0]!r}")
    if any(b <= a for a, b in zip(starts, starts[1:])):
        problems.append(f"rewards.stages must be sorted by strictly increasing start; got starts {starts}")


def _check_tracking(cfg: DictConfig, problems: list[str]) -> None:
    """tracking.backends: known names, each once, jsonl among them; wandb installed when chosen."""
    backends = list(cfg.tracking.backends)
    unknown = [b for b in backends if b not in TRACKING_BACKENDS]
    if unknown:
        problems.append(f"tracking.backends must each be one of {', '.join(TRACKING_BACKENDS)}; got {unknown}")
    if len(set(backends)) != len(backends):
        problems.append(f"tracking.backends names a backend twice; got {backends}")
    if "jsonl" not in backends:
        problems.append(f"tracking.backends must include jsonl (metrics.jsonl is what resume, the plots and the run's "
                        f"summary read); got {backends}")
    if "wandb" in backends and importlib.util.find_spec("wandb") is None:
        problems.append("tracking.backends has wandb, but the wandb package is not installed: pip install '.[wandb]'")
    if cfg.tracking.wandb.mode not in WANDB_MODES:
        problems.append(f"tracking.wandb.mode must be one of {', '.join(repr(m) for m in WANDB_MODES)}; "
                        f"got {cfg.tracking.wandb.mode!r}")
    if cfg.trainer.eval_every and cfg.trainer.eval_split == cfg.data.split:
        problems.append(f"trainer.eval_split ({cfg.trainer.eval_split!r}) must differ from data.split: the evaluation "
                        f"is on held-out questions")


@functools.lru_cache(maxsize=1)
def _learner_checks():
    """learner/algo/checks.py (check_grpo_config), loaded without its package: `import learner.algo` imports torch and
    the loss variants, which a config check does not need. A process that already imported it gets that module."""
    module = sys.modules.get("learner.algo.checks")
    if module is not None:
        return module
    import learner.config

    path = Path(learner.config.__file__).parent / "algo" / "checks.py"
    spec = importlib.util.spec_from_file_location("_embodied_r_grpo_checks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def validate(cfg: DictConfig) -> None:
    """Every choice against its allowed values and every bound, all at load: one ConfigError lists each problem by key."""
    from cluster.sft_config import validate_sft
    from rewards.schedule import validate_reward_config

    problems: list[str] = []
    refused_choices = []
    # Every choice and bound, as declared on its field (configtypes).
    for rule, problem in violations(TrainConfig, lambda key: OmegaConf.select(cfg, key)):
        problems.append(problem)
        if rule.choices is not None:
            refused_choices.append(rule.key)
    if cfg.sampling.num_samples < 2:
        problems.append("sampling.num_samples (G) must be >= 2: group-normalised advantages need a group")
    if not 0 <= cfg.sampling.min_new_tokens <= cfg.sampling.max_new_tokens:
        problems.append(f"sampling.min_new_tokens ({cfg.sampling.min_new_tokens}) must be in [0, "
                        f"sampling.max_new_tokens={cfg.sampling.max_new_tokens}]")
    if cfg.rewards.overlong_penalty and not 0 <= cfg.rewards.overlong_cache_tokens <= cfg.sampling.max_new_tokens:
        problems.append(f"rewards.overlong_cache_tokens ({cfg.rewards.overlong_cache_tokens}) must be in [0, "
                        f"sampling.max_new_tokens={cfg.sampling.max_new_tokens}] when rewards.overlong_penalty is on")
    if cfg.trainer.dynamic_sampling_rounds and not cfg.learner.grpo.filter_equal_reward_groups:
        problems.append("trainer.dynamic_sampling_rounds refills the groups that learner.grpo.filter_equal_reward_groups "
                        "drops: set learner.grpo.filter_equal_reward_groups=true, or the rounds to 0")
    if cfg.data.source == "manifest" and not cfg.data.manifest:
        problems.append("data.source=manifest needs data.manifest=PATH/manifest.parquet")
    keyframes = cfg.perception.keyframes
    if is_number(keyframes.min_keyframes) and is_number(keyframes.max_keyframes) and keyframes.max_keyframes < keyframes.min_keyframes:
        problems.append(f"perception.keyframes.max_keyframes ({keyframes.max_keyframes}) must be >= "
                        f"perception.keyframes.min_keyframes ({keyframes.min_keyframes})")
    tiny = cfg.models.tiny
    if tiny.num_heads >= 1 and tiny.num_kv_heads >= 1:
        if tiny.hidden_size % tiny.num_heads or tiny.num_heads % tiny.num_kv_heads:
            problems.append(f"models.tiny.hidden_size ({tiny.hidden_size}) must be a multiple of models.tiny.num_heads "
                            f"({tiny.num_heads}), and num_heads of models.tiny.num_kv_heads ({tiny.num_kv_heads})")
    betas = list(cfg.learner.betas)
    if len(betas) != 2 or not all(is_number(b) and 0 <= b < 1 for b in betas):
        problems.append(f"learner.betas must be two numbers in [0, 1) (Adam's beta1, beta2); got {betas}")
    for name, amount in cfg.learner.resources.items():
        if not is_number(amount) or amount < 0:
            problems.append(f"learner.resources.{name} must be >= 0; got {amount!r}")
    _check_learner_memory(cfg.learner, problems)
    _check_stages(cfg.rewards, problems)
    _check_tracking(cfg, problems)

    # The layers' own checks, run here too so that nothing they refuse gets past the load. Each stops at its first
    # problem, so it sees its part with the choices refused above put back to their defaults (its first problem is
    # then one not named yet); a problem already named is not repeated. The reward schedule's check is skipped when
    # the stages are already refused (it would name the same problem again in other words).
    defaults = OmegaConf.structured(TrainConfig)

    def layer(check, prefix: str, skip_if: tuple[str, ...] = ()) -> None:
        if skip_if and any(problem.startswith(skip_if) for problem in problems):
            return
        part = copy.deepcopy(OmegaConf.select(cfg, prefix))
        for key in refused_choices:
            if key.startswith(prefix + "."):
                OmegaConf.update(part, key[len(prefix) + 1:], OmegaConf.select(defaults, key))
        try:
            check(part)
        except ValueError as err:
            for line in str(err).splitlines():
                line = line.strip()
                if line and not line.startswith("invalid ") and line not in problems:
                    problems.append(line if line.startswith(prefix) else f"{prefix}: {line}")

    layer(_learner_checks().check_grpo_config, "learner.grpo")
    layer(validate_reward_config, "rewards", skip_if=("rewards.stages",))
    layer(validate_sft, "sft")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    for message in config_warnings(cfg):
        warnings.warn(message, ConfigWarning, stacklevel=2)


class ConfigWarning(UserWarning):
    """A valid config that probably does not do what its user wants (the message says what to change)."""


def config_warnings(cfg: DictConfig) -> list[str]:
    """Settings that are allowed but are likely a mistake, each with what to set instead."""
    found = []
    grpo = cfg.learner.grpo
    if cfg.trainer.max_staleness > 0 and grpo.tis_cap == 0 and grpo.old_logprobs == "learner":
        found.append(
            "trainer.max_staleness=1 samples with the policy one step behind, and learner.grpo.tis_cap=0 leaves that "
            "uncorrected (the ratio's pi_old is the learner's, not the sampler's): set learner.grpo.tis_cap (e.g. 2.0) "
            "to weight each token by min(pi_old / pi_sampler, cap)"
        )
    return found


def resolved_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
