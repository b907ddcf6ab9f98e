"""GRPO maths against direct computation from the formulas, on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from learner.batch import Sample, pack
from learner.config import GRPOConfig
from learner.grpo import aggregate, group_advantages, grpo_token_loss
from learner.kl import kl_estimate


def test_group_advantages_normalise_within_each_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 2.5])
    adv = group_advantages(rewards, group_size=4)
    first = rewards[:4]
    expected_first = (first - first.mean()) / (first.std() + 1e-4)
    assert torch.allclose(adv[:4], expected_first)
    second = rewards[4:]
    assert torch.allclose(adv[4:], (second - second.mean()) / (second.std() + 1e-4))
    dr = group_advantages(rewards, group_size=4, norm="group_mean")
    assert torch.allclose(dr[4:], second - second.mean())
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(rewards, group_size=3)


def test_equal_rewards_give_zero_advantage():
    assert torch.count_nonzero(group_advantages(torch.ones(8), 4)) == 0


def test_kl_estimators_match_formulas():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -1.0, -0.5])
    r = ref - logp
    assert torch.allclose(kl_estimate(logp, ref, "k1"), -r)
    assert torch.allclose(kl_estimate(logp, ref, "k2"), 0.5 * r**2)
    assert torch.allclose(kl_estimate(logp, ref, "k3"), torch.exp(r) - r - 1)
    assert torch.all(kl_estimate(logp, ref, "k3") >= 0)


def test_clipped_loss_and_gradient_match_direct_formula():
    torch.manual_seed(0)
    cfg = GRPOConfig(beta=0.1, clip_low=0.2, clip_high=0.28)
    logp = torch.randn(2, 3, requires_grad=True)
    old = logp.detach() + torch.tensor([[0.5, -0.5, 0.0], [0.05, 0.3, -0.3]])
    ref = logp.detach() - 0.2
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    per_token, _, clipped = grpo_token_loss(logp, old, ref, adv, mask, cfg)
    loss = aggregate(per_token, mask, cfg, norm_tokens=mask.sum().item(), norm_sequences=2)
    loss.backward()

    # Direct computation, element by element.
    direct_grad = torch.zeros(2, 3)
    direct_loss = 0.0
    for b in range(2):
        for t in range(3):
            if not mask[b, t]:
                continue
            x = logp[b, t].detach().clone().requires_grad_(True)
            ratio = torch.exp(x - old[b, t])
            a = adv[b]
            surrogate = torch.min(ratio * a, torch.clamp(ratio, 0.8, 1.28) * a)
            k3 = torch.exp(ref[b, t] - x) - (ref[b, t] - x) - 1
            term = (-surrogate + 0.1 * k3) / mask.sum()
            term.backward()
            direct_loss += term.item()
            direct_grad[b, t] = x.grad
    assert math.isclose(loss.item(), direct_loss, rel_tol=1e-5)
    assert torch.allclose(logp.grad, direct_grad, atol=1e-6)
    # ratio e^-0.5 with A=+1 is below 1-0.2: clipped; ratio e^0.5 with A=+1 is not (min picks the unclipped side).
    assert clipped[0, 1] and not clipped[0, 0]


def test_sequence_mean_weights_each_sequence_equally():
    cfg = GRPOConfig(loss_aggregation="sequence_mean")
    per_token = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    assert aggregate(per_token, mask, cfg, norm_tokens=5, norm_sequences=2).item() == pytest.approx((1.0 + 4.0) / 2)


def test_micro_batches_add_up_to_the_batch_loss():
    torch.manual_seed(1)
    cfg = GRPOConfig(beta=0.0)
    logp = torch.randn(4, 5)
    mask = (torch.rand(4, 5) > 0.3).float()
    adv = torch.randn(4)
    per_token, _, _ = grpo_token_loss(logp, logp, None, adv, mask, cfg)
    whole = aggregate(per_token, mask, cfg, mask.sum().item(), 4)
    parts = sum(
        aggregate(per_token[i : i + 2], mask[i : i + 2], cfg, mask.sum().item(), 4) for i in (0, 2)
    )
    assert whole.item() == pytest.approx(parts.item(), rel=1e-6)


def test_pack_aligns_completions_and_positions():
    samples = [
        Sample(prompt_ids=[5, 6, 7], completion_ids=[8, 9], rollout_logprobs=[-1.0, -2.0], advantage=1.0),
        Sample(prompt_ids=[5], completion_ids=[8, 9, 10], rollout_logprobs=[-1.0, -1.0, -3.0], advantage=-1.0),
    ]
    batch = pack(samples, pad_id=0)
    assert batch.prompt_width == 3
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9, 0], [0, 0, 5, 8, 9, 10]]
    assert batch.position_ids[1, 2:].tolist() == [0, 1, 2, 3]
    assert batch.completion_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch.completion_ids.tolist() == [[8, 9, 0], [8, 9, 10]]
