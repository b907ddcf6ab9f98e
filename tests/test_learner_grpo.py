"""GRPO maths against direct computation from the formulas, on small tensors."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from learner.batch import Sample, pack
from learner.config import GRPOConfig
from learner.filtering import kept_sample_indices
from learner.algo.checks import check_grpo_config
from learner.algo.grpo import aggregate, group_advantages, grpo_token_loss
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
    # ratio e^0.5 with A=+1 is above 1+0.28: clipped; ratio e^-0.5 with A=+1 is not (the min keeps the unclipped side).
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


# ---- every learner.grpo option, loss and gradient against the formula ------------------------------------------------
def direct_loss_and_grad(logp, old, ref, adv, mask, cfg: GRPOConfig) -> tuple[float, torch.Tensor]:
    """The GRPO objective written out token by token, with its derivative in closed form (no autograd).

    Per token: -min(r*A, clip(r, 1-low, 1+high)*A) + beta*KL, r = exp(logp - old). d(r*A)/dlogp = r*A; the clipped
    side is constant in logp wherever the min picks it. KL with d = ref - logp: k1 = -d (derivative 1), k2 = d^2/2
    (-d), k3 = e^d - d - 1 (1 - e^d). Weights: token_mean 1/(all tokens); sequence_mean 1/(sequences * its tokens).
    """
    batch, width = logp.shape
    all_tokens = float(mask.sum())
    loss, grad = 0.0, torch.zeros(batch, width, dtype=torch.float64)
    for b in range(batch):
        length = float(mask[b].sum())
        for t in range(width):
            if not mask[b, t]:
                continue
            x, a = float(logp[b, t]), float(adv[b])
            ratio = math.exp(x - float(old[b, t]))
            bounded = min(max(ratio, 1.0 - cfg.clip_low), 1.0 + cfg.clip_high)
            if ratio * a <= bounded * a:
                surrogate, d_surrogate = ratio * a, ratio * a
            else:
                surrogate, d_surrogate = bounded * a, 0.0
            kl, d_kl = 0.0, 0.0
            if ref is not None:
                d = float(ref[b, t]) - x
                kl, d_kl = {"k1": (-d, 1.0), "k2": (0.5 * d * d, -d), "k3": (math.exp(d) - d - 1.0, 1.0 - math.exp(d))}[cfg.kl_estimator]
            weight = 1.0 / all_tokens if cfg.loss_aggregation == "token_mean" else 1.0 / (batch * length)
            loss += weight * (-surrogate + cfg.beta * kl)
            grad[b, t] = weight * (-d_surrogate + cfg.beta * d_kl)
    return loss, grad


def library_loss_and_grad(logp, old, ref, adv, mask, cfg: GRPOConfig):
    """The learner's path: grpo_token_loss then aggregate over the whole batch, differentiated by autograd."""
    x = logp.detach().clone().requires_grad_(True)
    per_token, kl, clipped = grpo_token_loss(x, old, ref, adv, mask, cfg)
    loss = aggregate(per_token, mask, cfg, norm_tokens=mask.sum().item(), norm_sequences=logp.shape[0])
    loss.backward()
    return loss.item(), x.grad.double(), kl, clipped


def assert_matches_formula(logp, old, ref, adv, mask, cfg: GRPOConfig):
    loss, grad, kl, clipped = library_loss_and_grad(logp, old, ref, adv, mask, cfg)
    expected_loss, expected_grad = direct_loss_and_grad(logp, old, ref, adv, mask, cfg)
    assert loss == pytest.approx(expected_loss, rel=1e-5, abs=1e-7)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-7)
    return grad, kl, clipped


def random_batch(seed: int, batch: int = 3, width: int = 5):
    """Log-probs, an old policy within +-0.5 of it, a reference, and a mask of different lengths per row."""
    gen = torch.Generator().manual_seed(seed)
    logp = -torch.rand(batch, width, generator=gen) * 3
    old = logp + (torch.rand(batch, width, generator=gen) - 0.5)
    ref = logp + (torch.rand(batch, width, generator=gen) - 0.5) * 2
    lengths = [width - (i * 2) % width for i in range(batch)]
    mask = torch.tensor([[1.0] * n + [0.0] * (width - n) for n in lengths])
    return logp, old, ref, mask


@pytest.mark.parametrize("norm", ["group_std", "group_mean"])
def test_advantage_norm_through_the_loss_matches_formula(norm):
    # Two groups of three with different spreads, so dividing by the std changes their relative scale.
    rewards = [1.0, 0.0, 0.5, 2.0, -2.0, 0.0]
    expected_adv = []
    for start in (0, 3):
        group = rewards[start : start + 3]
        centred = [r - statistics.fmean(group) for r in group]
        scale = statistics.stdev(group) + 1e-4 if norm == "group_std" else 1.0
        expected_adv += [c / scale for c in centred]
    adv = group_advantages(torch.tensor(rewards), group_size=3, norm=norm)
    torch.testing.assert_close(adv, torch.tensor(expected_adv))

    logp, old, ref, mask = random_batch(seed=3, batch=6)
    cfg = GRPOConfig(beta=0.05, advantage_norm=norm)
    grad, _, _ = assert_matches_formula(logp, old, ref, adv, mask, cfg)
    # Under group_std both groups' gradients are on the same scale; under group_mean the wider group's is larger.
    group_norms = [grad[:3].abs().sum().item(), grad[3:].abs().sum().item()]
    if norm == "group_mean":
        assert group_norms[1] > 2 * group_norms[0]


@pytest.mark.parametrize("estimator", ["k2", "k3"])  # k1 is refused as a loss term (test_rl_correctness.py)
def test_kl_estimator_loss_and_gradient_match_formula(estimator):
    logp, old, ref, mask = random_batch(seed=4)
    adv = torch.tensor([0.7, -1.1, 0.2])
    cfg = GRPOConfig(beta=0.3, kl_estimator=estimator)
    _, kl, _ = assert_matches_formula(logp, old, ref, adv, mask, cfg)
    d = ref - logp
    expected_kl = {"k1": -d, "k2": 0.5 * d**2, "k3": torch.exp(d) - d - 1}[estimator]
    torch.testing.assert_close(kl, expected_kl * mask)
    # The estimators give different gradients, so the option really switches the estimator.
    other = {"k2": "k3", "k3": "k2"}[estimator]
    _, grad_this, _, _ = library_loss_and_grad(logp, old, ref, adv, mask, cfg)
    _, grad_other, _, _ = library_loss_and_grad(logp, old, ref, adv, mask, GRPOConfig(beta=0.3, kl_estimator=other))
    assert not torch.allclose(grad_this, grad_other)


def test_beta_zero_drops_the_kl_term_even_with_a_reference():
    logp, old, ref, mask = random_batch(seed=5)
    adv = torch.tensor([0.7, -1.1, 0.2])
    cfg = GRPOConfig(beta=0.0, kl_estimator="k3")
    loss_with_ref, grad_with_ref, kl, _ = library_loss_and_grad(logp, old, ref, adv, mask, cfg)
    loss_without, grad_without, _, _ = library_loss_and_grad(logp, old, None, adv, mask, cfg)
    assert torch.count_nonzero(kl) == 0
    assert loss_with_ref == loss_without and torch.equal(grad_with_ref, grad_without)
    assert_matches_formula(logp, old, ref, adv, mask, cfg)


def test_clip_range_has_separate_low_and_high_bounds():
    """Ratios on both sides of both bounds, with A > 0 and A < 0, under the asymmetric range [1 - 0.1, 1 + 0.3]."""
    cfg = GRPOConfig(beta=0.0, clip_low=0.1, clip_high=0.3)
    # Below 1-high, between 1-high and 1-low, inside, between 1+low and 1+high, above 1+high.
    ratios = [0.5, 0.85, 0.95, 1.2, 1.5]
    old = torch.zeros(2, 5)
    logp = torch.log(torch.tensor([ratios, ratios]))
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 5)
    grad, _, clipped = assert_matches_formula(logp, old, None, adv, mask, cfg)
    # A > 0: min(r, clip(r))*A takes the clipped side only above 1+high (a low ratio is never lifted); 1.2 stays
    # unclipped, which a symmetric range of 0.1 would clip. A < 0: max(r, clip(r))*A takes it only below 1-low; 0.85 is
    # clipped, which a symmetric range of 0.3 would not clip.
    expected_clipped = torch.tensor([[False, False, False, False, True], [True, True, False, False, False]])
    assert torch.equal(clipped, expected_clipped)
    # Where the clipped side is taken the gradient is exactly 0; elsewhere it is -A*r / tokens.
    assert torch.equal(grad == 0, expected_clipped)
    expected_grad = (-adv.unsqueeze(1) * torch.tensor([ratios, ratios]) / mask.sum()).double()
    torch.testing.assert_close(grad[~expected_clipped], expected_grad[~expected_clipped])


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean"])
def test_loss_aggregation_loss_and_gradient_match_formula(aggregation):
    logp, old, ref, mask = random_batch(seed=6, batch=4, width=6)
    assert mask.sum(dim=1).tolist() == [6, 4, 2, 6]
    adv = torch.tensor([0.5, 1.5, -0.8, -0.3])
    cfg = GRPOConfig(beta=0.02, loss_aggregation=aggregation, clip_low=0.2, clip_high=0.28)
    grad, _, _ = assert_matches_formula(logp, old, ref, adv, mask, cfg)
    # A token of the 2-token row weighs 1/18 of the loss under token_mean and 1/(4*2) under sequence_mean.
    other = "sequence_mean" if aggregation == "token_mean" else "token_mean"
    _, other_grad, _, _ = library_loss_and_grad(logp, old, ref, adv, mask, GRPOConfig(beta=0.02, loss_aggregation=other, clip_low=0.2, clip_high=0.28))
    ratio = (other_grad[2, :2] / grad[2, :2]).tolist()
    expected = 18 / 8 if aggregation == "token_mean" else 8 / 18
    assert ratio == pytest.approx([expected, expected])


def test_check_grpo_config_names_the_bad_setting():
    check_grpo_config(GRPOConfig())
    check_grpo_config(GRPOConfig(beta=0.0, old_logprobs="rollout", updates_per_batch=4, clip_low=0.2, clip_high=0.28))
    bad = [
        ({"kl_estimator": "k4"}, "kl_estimator"),
        ({"advantage_norm": "batch_std"}, "advantage_norm"),
        ({"loss_aggregation": "sum"}, "loss_aggregation"),
        ({"old_logprobs": "reference"}, "old_logprobs"),
        ({"beta": -0.1}, "beta"),
        ({"clip_low": 1.0}, "clip"),
        ({"clip_high": -0.1}, "clip"),
        ({"updates_per_batch": 0}, "updates_per_batch"),
    ]
    for fields, name in bad:
        with pytest.raises(ValueError, match=name):
            check_grpo_config(GRPOConfig(**fields))


# ---- DAPO's filter of equal-reward groups ---------------------------------------------------------------------------
def test_filter_keeps_only_groups_whose_rewards_differ():
    rewards = [1.0, 1.0, 1.0, 0.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.3, 0.3 + 1e-9, 0.3]
    assert kept_sample_indices(rewards, group_size=3) == [3, 4, 5]
    # A spread below atol is round-off (the fourth group); with atol 0 it counts as a difference.
    assert kept_sample_indices(rewards, group_size=3, atol=0.0) == [3, 4, 5, 9, 10, 11]
    assert kept_sample_indices([0.7] * 8, group_size=4) == []
    assert kept_sample_indices([0.0, 1.0], group_size=1) == []  # a group of one never has a spread
    with pytest.raises(ValueError, match="groups of 5"):
        kept_sample_indices(rewards, group_size=5)
    with pytest.raises(ValueError, match="group 1 .*non-finite"):
        kept_sample_indices([0.0, 1.0, math.nan, 1.0], group_size=2)


def test_filtering_equal_groups_raises_the_kept_tokens_weight_under_token_mean():
    # Group 0 has rewards that differ, group 1 is all equal (advantage 0): it adds nothing to the gradient but its
    # tokens count in the token-mean normaliser, so dropping it scales every kept token's gradient by all/kept tokens.
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5])
    adv = group_advantages(rewards, group_size=2)
    logp, old, _, mask = random_batch(seed=7, batch=4, width=5)
    cfg = GRPOConfig(beta=0.0)
    _, grad_all, _, _ = library_loss_and_grad(logp, old, None, adv, mask, cfg)
    assert torch.count_nonzero(grad_all[2:]) == 0
    kept = kept_sample_indices(rewards.tolist(), group_size=2)
    assert kept == [0, 1]
    _, grad_kept, _, _ = library_loss_and_grad(logp[kept], old[kept], None, adv[kept], mask[kept], cfg)
    scale = mask.sum() / mask[kept].sum()
    torch.testing.assert_close(grad_kept, grad_all[kept] * scale.double())
