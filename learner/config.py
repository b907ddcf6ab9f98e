"""Structured config of the learner: GRPO settings, optimiser, the DeepSpeed engine, LoRA and offload."""

from __future__ import annotations

from configtypes import bounded, choice, one_of
from dataclasses import dataclass, field

# The allowed values of each choice, checked by cluster.config.validate when the config is loaded (OmegaConf does not
# enforce Literal types, so the fields stay plain strings and these tuples are the one list of what each accepts).
KL_ESTIMATORS = ("k1", "k2", "k3")  # GRPOConfig.kl_estimator (learner/kl.py)
KLEstimator = choice("KLEstimator", KL_ESTIMATORS, __name__)
ADVANTAGE_NORMS = ("group_std", "group_mean")  # GRPOConfig.advantage_norm
AdvantageNorm = choice("AdvantageNorm", ADVANTAGE_NORMS, __name__)
LOSS_AGGREGATIONS = ("token_mean", "sequence_mean")  # GRPOConfig.loss_aggregation
LossAggregation = choice("LossAggregation", LOSS_AGGREGATIONS, __name__)
OLD_LOGPROBS_SOURCES = ("learner", "rollout")  # GRPOConfig.old_logprobs
OldLogprobsSource = choice("OldLogprobsSource", OLD_LOGPROBS_SOURCES, __name__)
GRPO_ALGORITHMS = ("grpo", "gspo", "dr_grpo")  # GRPOConfig.algorithm (= the variants registered in learner.algo)
GRPOAlgorithm = choice("GRPOAlgorithm", GRPO_ALGORITHMS, __name__)
LEARNER_DTYPES = ("float32", "bfloat16")  # LearnerConfig.dtype (learner/ds_config.py; the rollout and judge name dtypes alike)
LearnerDtype = choice("LearnerDtype", LEARNER_DTYPES, __name__)
BACKENDS = ("auto", "gloo", "nccl")  # LearnerConfig.backend
Backend = choice("Backend", BACKENDS, __name__)
ZERO_STAGES = (0, 1, 2, 3)  # LearnerConfig.zero_stage (DeepSpeed ZeRO)
OFFLOAD_DEVICES = ("none", "cpu")  # OffloadConfig.optimizer / OffloadConfig.param (DeepSpeed ZeRO-Offload)
OffloadDevice = choice("OffloadDevice", OFFLOAD_DEVICES, __name__)
# Qwen2's attention and MLP projections: LoRAConfig.target_modules' default.
QWEN2_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class GRPOConfig:
    beta: float = 0.001  # KL penalty weight; 0 drops the reference model (no reference engine is built)
    # k3 (gradient of the forward KL(ref || policy), DeepSeek's GRPO) | k2 (gradient of the reverse KL(policy || ref)) |
    # k1 (zero expected gradient: refused when beta > 0). Derivations in learner/kl.py.
    kl_estimator: KLEstimator = KLEstimator.k3
    clip_low: float = 0.2  # the ratio is clipped to [1 - clip_low, 1 + clip_high] (DAPO's clip-higher: clip_high > clip_low)
    clip_high: float = 0.2
    advantage_norm: AdvantageNorm = AdvantageNorm.group_std  # group_std | group_mean (Dr.GRPO)
    loss_aggregation: LossAggregation = LossAggregation.token_mean  # token_mean | sequence_mean
    updates_per_batch: int = 1  # mu: optimiser steps on each batch, each a full pass over it
    # The denominator of the importance ratio, pi_theta / pi_old:
    #   learner: the learner's own log-probs from the first pass over the batch (before any update on it). The first
    #            update's ratio is exactly 1, so rollout-engine/learner numerical mismatch (e.g. vLLM bf16 kernels vs
    #            an fp32 learner) is ignored: the samples are treated as if the learner had drawn them. Costs
    #            nothing extra (the first pass's forward is reused); with mu = 1 the clip never engages.
    #   rollout: the log-probs the rollout engine reported when it sampled each token (Sample.rollout_logprobs), i.e.
    #            importance ratios against the actual behaviour policy: corrects for engine/learner mismatch from the
    #            first update on, at the cost of more variance, and of clipped (gradient-free) tokens where the two
    #            disagree by more than the clip range. Both sides are log-probs at sampling.temperature (the learner
    #            divides its logits by it, learner.batch.completion_logprobs); top_p < 1 is not applied by the
    #            learner, so with it the ratio also carries what the nucleus cut (TIS's correction).
    old_logprobs: OldLogprobsSource = OldLogprobsSource.learner  # learner | rollout
    # DAPO's dynamic sampling: drop the groups whose rewards are all equal (advantage 0 everywhere) before the learner
    # step, so they no longer dilute the token-mean normaliser; a step whose groups are all dropped is skipped.
    filter_equal_reward_groups: bool = False
    # The loss variant (learner/algo/, one file each): grpo (the clipped token-level objective above, bit for bit) |
    # gspo (GSPO: one importance ratio per sequence, the geometric mean of its token ratios, clipped per sequence) |
    # dr_grpo (Dr.GRPO: advantages r - group mean, the loss summed and divided by a constant). gspo and dr_grpo fix
    # their own aggregation (loss_aggregation applies to grpo only); dr_grpo also fixes advantage_norm to group_mean.
    algorithm: GRPOAlgorithm = GRPOAlgorithm.grpo
    # GSPO's sequence ratio is clipped to [1 - gspo_clip_low, 1 + gspo_clip_high]: a geometric mean of token ratios
    # moves far less than one token's ratio, hence ranges some 1000x smaller than clip_low/clip_high (the paper's values).
    gspo_clip_low: float = 3e-4
    gspo_clip_high: float = 4e-4
    # Dr.GRPO's normaliser is max_tokens_norm x the batch's sequences; 0 takes the sampling max_new_tokens the driver
    # passes the learner (a constant, so a sequence's weight no longer depends on its own or its batch's lengths).
    max_tokens_norm: int = 0
    # Truncated importance sampling for off-policy samples (e.g. sampled by an older policy, or by an engine whose
    # kernels differ): each token's policy-gradient term is weighted by min(pi_learner_old / pi_sampler, tis_cap), the
    # sampler's probability taken from Sample.rollout_logprobs. 0 turns it off. Needs old_logprobs=learner (with
    # old_logprobs=rollout the ratio already corrects towards the sampler).
    tis_cap: float = 0.0
    # Completions cut at max_new_tokens (Sample.truncated) are taken out of the loss and of its normaliser: their
    # reward judges an unfinished answer, so their credit is noise.
    mask_truncated: bool = False


@dataclass
class LoRAConfig:
    """LoRA adapters on the policy (learner/lora.py, with peft): only the adapters train; the rollout workers keep the
    plain base model and are sent the merged weights W + alpha/r * B @ A under the base model's names."""

    enabled: bool = False
    r: int = bounded(8, ge=1)  # the adapters' rank
    alpha: float = bounded(16.0, gt=0)  # the update is scaled by alpha / r
    dropout: float = bounded(0.0, ge=0, le=1)  # dropout on the adapters' input (training forward only)
    target_modules: list[str] = field(default_factory=lambda: list(QWEN2_PROJECTIONS))  # module names peft adapts


@dataclass
class OffloadConfig:
    """Memory offload (learner/ds_config.py maps it to DeepSpeed's zero_optimization.offload_*)."""

    optimizer: OffloadDevice = OffloadDevice.none  # none | cpu: Adam's states and step on the CPU (ZeRO-Offload; needs zero_stage >= 1)
    param: OffloadDevice = OffloadDevice.none  # none | cpu: the parameters live on the CPU between uses (ZeRO-Infinity; needs zero_stage 3)
    # The frozen KL reference lives on the CPU and is moved to the device only for its forward (under ZeRO-3:
    # DeepSpeed's parameter offload, layer by layer). With LoRA there is no separate reference, so this does nothing.
    reference: bool = False


@dataclass
class LearnerConfig:
    num_replicas: int = bounded(1, ge=1)
    num_cpus_per_replica: float = bounded(0.5, ge=0)
    num_gpus_per_replica: float = bounded(0.0, ge=0)
    zero_stage: int = one_of(2, ZERO_STAGES)
    dtype: LearnerDtype = LearnerDtype.float32  # float32 | bfloat16: the weights and the compute (bf16 mixed precision)
    lr: float = bounded(1e-4, gt=0)  # the embedded default's tiny random-weight policy (the paper: 5e-7)
    weight_decay: float = bounded(0.0, ge=0)
    warmup_ratio: float = bounded(0.0, ge=0, le=1)  # (the paper: 0.05)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    grad_clip: float = bounded(1.0, ge=0)
    micro_batch_size: int = bounded(8, ge=1)  # sequences per forward/backward on one rank
    # Sequences per forward/backward in supervised steps (the SFT warm-up, `embodied-r sft`); 0: micro_batch_size.
    # Their prompts all differ, so a micro-batch of several pads each to the longest (22% more tokens for 4 of the
    # default job's prompts), where GRPO's rows share their group's prompt. 1 pads nothing: on this CPU, bfloat16 SFT
    # steps of 4 SmolLM2-135M samples (335-698-token prompts, 2 threads, in-process) took 7.7-9.3 s against 10.1-13.1 s
    # in one micro-batch, and the default job's 8-step warm-up 85.6 s against 94.4 s. A tiny model wants the batch
    # instead (configs/learning.yaml).
    sft_micro_batch_size: int = bounded(0, ge=0)
    gradient_checkpointing: bool = False
    backend: Backend = Backend.auto  # auto (gloo on CPU, nccl on GPU) | gloo | nccl
    # Custom Ray resources each rank's bundle asks for, e.g. {"learner_node": 1} to keep the ranks on nodes started
    # with `ray start --resources '{"learner_node": 8}'`.
    resources: dict[str, float] = field(default_factory=dict)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    offload: OffloadConfig = field(default_factory=OffloadConfig)


def supervised_micro_batch_size(cfg: LearnerConfig) -> int:
    """Sequences per forward/backward in a supervised step: learner.sft_micro_batch_size, else micro_batch_size."""
    return cfg.sft_micro_batch_size or cfg.micro_batch_size
