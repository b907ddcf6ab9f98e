"""The optimiser around the GRPO loss on a real DeepSpeed rank (in this process, world size 1, gloo): the warm-up
learning-rate schedule (learner.warmup_ratio), which SFT steps leave where it was; gradient clipping
(learner.grad_clip); and the optimiser reset of restart_from_current_policy.

Adam's first moment after a step from empty state is exactly (1 - beta1) x the gradient it was given, so its norm
shows the clipped gradient's norm, and whether the moments were cleared before that step."""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = pytest.mark.slow
pytest.importorskip("deepspeed")

from learner.config import GRPOConfig, LearnerConfig  # noqa: E402
from learner.ds_config import policy_ds_config  # noqa: E402
from learner_inproc import learner_process_group, make_learner, make_samples  # noqa: E402

LR, TOTAL_STEPS, WARMUP_RATIO, CLIP = 1e-2, 10, 0.3, 0.05
GRPO_STEPS_BEFORE_SFT, GRPO_STEPS_AFTER_SFT = 3, 3


def _inner_optimizer(learner):
    inner = learner.engine.optimizer
    while hasattr(inner, "optimizer"):
        inner = inner.optimizer
    return inner


def _first_moment_norm(learner) -> float:
    state = _inner_optimizer(learner).state
    return torch.cat([s["exp_avg"].flatten() for s in state.values()]).norm().item()


def _adam_steps(learner) -> set[int]:
    return {int(s["step"]) for s in _inner_optimizer(learner).state.values()}


@pytest.fixture(scope="module")
def history(tiny_policy_path):
    """GRPO steps, SFT steps, GRPO steps, then restart_from_current_policy and one more GRPO step; what each saw."""
    cfg = LearnerConfig(zero_stage=2, lr=LR, warmup_ratio=WARMUP_RATIO, micro_batch_size=2, num_cpus_per_replica=1,
                        grad_clip=CLIP, grpo=GRPOConfig(beta=0.0))
    samples = make_samples(400, [1.0, -0.5, 0.3, -1.2], seed=1)
    tokens = sum(len(s.completion_ids) for s in samples)
    record: dict = {"lr_used": [], "grad_norm": [], "moment_norm": []}
    with learner_process_group():
        learner = make_learner(cfg, tiny_policy_path, total_steps=TOTAL_STEPS)

        def grpo_step():
            record["lr_used"].append(learner.engine.optimizer.param_groups[0]["lr"])
            metrics = learner.train_step(samples, 2, tokens, len(samples))
            record["grad_norm"].append(metrics["grad_norm"])
            record["moment_norm"].append(_first_moment_norm(learner))

        for _ in range(GRPO_STEPS_BEFORE_SFT):
            grpo_step()
        record["lr_before_sft"] = learner.engine.optimizer.param_groups[0]["lr"]
        for _ in range(2):
            learner.sft_step(samples, 2, tokens, 3e-3)
        record["lr_after_sft"] = learner.engine.optimizer.param_groups[0]["lr"]
        for _ in range(GRPO_STEPS_AFTER_SFT):
            grpo_step()
        record["adam_steps_before_restart"] = _adam_steps(learner)
        learner.restart_from_current_policy()
        record["state_after_restart"] = len(_inner_optimizer(learner).state)
        grpo_step()
        record["adam_steps_after_restart"] = _adam_steps(learner)
    return record


def test_warmup_rises_linearly_to_the_lr_and_sft_steps_do_not_advance_it(history):
    warmup = math.ceil(WARMUP_RATIO * TOTAL_STEPS)
    scheduler = policy_ds_config(LearnerConfig(lr=LR, warmup_ratio=WARMUP_RATIO), 2, 1, TOTAL_STEPS)["scheduler"]["params"]
    assert scheduler["warmup_min_lr"] == pytest.approx(LR / (warmup + 1)) and scheduler["warmup_num_steps"] == warmup + 1
    # DeepSpeed's WarmupLR: iteration i (the scheduler steps after each optimiser step; -1 before the first) sets
    # min + (max - min) * max(i, 0) / N, N = warmup + 1, then max. The SFT steps in between count for nothing.
    low, steps = LR / (warmup + 1), warmup + 1
    expected = [low + (LR - low) * min(max(i, 0), steps) / steps for i in range(-1, len(history["lr_used"]) - 1)]
    assert history["lr_used"] == pytest.approx(expected, rel=1e-9)
    assert history["lr_used"][0] == pytest.approx(LR / (warmup + 1))  # never a step at lr 0
    assert history["lr_used"][-2] == pytest.approx(LR) and history["lr_used"][-3] < LR  # warm-up over, not earlier
    assert history["lr_after_sft"] == history["lr_before_sft"] < LR  # SFT ran at its own lr, then gave this one back


def test_gradients_are_clipped_to_grad_clip(history):
    # The reported grad_norm is the norm before clipping; every step's is far above CLIP.
    assert min(history["grad_norm"]) > 10 * CLIP
    # First step from empty Adam state: exp_avg = (1 - beta1) * the clipped gradient, whose norm is CLIP.
    assert history["moment_norm"][0] == pytest.approx(0.1 * CLIP, rel=1e-4)


def test_restart_from_current_policy_clears_the_optimizer_moments(history):
    assert history["adam_steps_before_restart"] == {GRPO_STEPS_BEFORE_SFT + 2 + GRPO_STEPS_AFTER_SFT}  # SFT steps count
    assert history["state_after_restart"] == 0
    assert history["adam_steps_after_restart"] == {1}
    # The step after the reset starts its moments afresh (continued ones would be 0.9 x the old + 0.1 x the new).
    assert history["moment_norm"][-1] == pytest.approx(0.1 * CLIP, rel=1e-4)
    assert history["moment_norm"][-2] != pytest.approx(0.1 * CLIP, rel=1e-2)
