"""The loss variants of learner/algo/ against their formulas written out by hand (float64, element by element), and the
options that work with every variant: truncated importance sampling, masking truncated completions, staleness; plus
DAPO's soft overlong penalty (rewards/overlong.py)."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from learner.algo import ALGORITHMS, LossInputs, LossMetrics, LossNorm, check_grpo_config, make_algorithm
from learner.algo.metrics import combine_rank_results
from learner.algo.staleness import staleness_stats
from learner.algo.tis import tis_weights
from learner.algo.truncation import loss_mask
from learner.batch import Sample, pack
from learner.config import GRPOConfig
from learner.kl import kl_estimate
from rewards.config import RewardConfig
from rewards.overlong import soft_overlong_penalty


# ---- helpers --------------------------------------------------------------------------------------------------------
def random_batch(seed: int, batch: int = 4, width: int = 6, spread: float = 0.5, dtype=torch.float64):
    """Log-probs, pi_old within +-spread/2 of them, a reference, a sampler, and rows of different lengths."""
    gen = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(batch, width, generator=gen) * 3).to(dtype)
    old = logp + ((torch.rand(batch, width, generator=gen) - 0.5) * spread).to(dtype)
    ref = logp + ((torch.rand(batch, width, generator=gen) - 0.5) * 2).to(dtype)
    sampler = old + ((torch.rand(batch, width, generator=gen) - 0.5) * 2).to(dtype)
    lengths = [width - (i * 2) % width for i in range(batch)]
    mask = torch.tensor([[1.0] * n + [0.0] * (width - n) for n in lengths], dtype=dtype)
    return logp, old, ref, sampler, mask


def library(algorithm, logp, old, ref, adv, mask, norm: LossNorm, is_weights=None):
    """The learner's path: the algorithm's loss on the batch, differentiated by autograd."""
    x = logp.detach().clone().requires_grad_(True)
    out = algorithm.loss(LossInputs(x, old, ref, adv, mask, is_weights), norm)
    out.loss.backward()
    return out, x.grad


def kl_and_derivative(x: float, ref: float, estimator: str) -> tuple[float, float]:
    """KL estimate at one token and its derivative in logp, d = ref - logp (see learner/kl.py)."""
    d = ref - x
    return {"k1": (-d, 1.0), "k2": (0.5 * d * d, -d), "k3": (math.exp(d) - d - 1.0, 1.0 - math.exp(d))}[estimator]


def clipped_surrogate(ratio: float, a: float, low: float, high: float) -> tuple[float, bool]:
    """min(r*A, clip(r)*A) and whether the clipped side is taken (then the surrogate is constant in logp)."""
    bounded = min(max(ratio, 1.0 - low), 1.0 + high)
    if bounded * a < ratio * a:
        return bounded * a, True
    return ratio * a, False


def token_objective_by_hand(logp, old, ref, adv, mask, cfg: GRPOConfig, weight_of, is_weights=None):
    """Sum over tokens of weight_of(b) * (-w*min(r*A, clip(r)*A) + beta*KL), and its derivative in closed form.

    d(r*A)/dlogp = r*A; the clipped side has derivative 0; the TIS weight w is a constant.
    """
    batch, width = logp.shape
    loss, grad = 0.0, torch.zeros(batch, width, dtype=torch.float64)
    for b in range(batch):
        for t in range(width):
            if not mask[b, t]:
                continue
            x, a = float(logp[b, t]), float(adv[b])
            ratio = math.exp(x - float(old[b, t]))
            w = 1.0 if is_weights is None else float(is_weights[b, t])
            surrogate, clipped = clipped_surrogate(ratio, a, cfg.clip_low, cfg.clip_high)
            d_surrogate = 0.0 if clipped else ratio * a
            kl, d_kl = kl_and_derivative(x, float(ref[b, t]), cfg.kl_estimator) if ref is not None else (0.0, 0.0)
            loss += weight_of(b) * (-w * surrogate + cfg.beta * kl)
            grad[b, t] = weight_of(b) * (-w * d_surrogate + cfg.beta * d_kl)
    return loss, grad


# ---- GRPO: bit for bit the loss before learner/algo/ ---------------------------------------------------------------
def old_grpo_token_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, cfg):
    """A verbatim copy of learner/grpo.py's grpo_token_loss before the algorithm objects."""
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages.unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - cfg.clip_low, 1.0 + cfg.clip_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    if cfg.beta > 0 and ref_logprobs is not None:
        kl = kl_estimate(logprobs, ref_logprobs, cfg.kl_estimator)
        per_token = per_token + cfg.beta * kl
    else:
        kl = torch.zeros_like(per_token)
    was_clipped = (clipped < unclipped) & mask.bool()
    return per_token * mask, kl * mask, was_clipped


def old_aggregate(per_token, mask, cfg, norm_tokens, norm_sequences):
    """A verbatim copy of learner/grpo.py's aggregate before the algorithm objects."""
    if cfg.loss_aggregation == "token_mean":
        return per_token.sum() / norm_tokens
    if cfg.loss_aggregation == "sequence_mean":
        per_sequence = per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return per_sequence.sum() / norm_sequences
    raise ValueError(cfg.loss_aggregation)


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean"])
@pytest.mark.parametrize("estimator", ["k2", "k3"])  # k1 is refused as a loss term (test_rl_correctness.py)
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_is_bit_for_bit_the_loss_before_the_change(aggregation, estimator, beta):
    cfg = GRPOConfig(beta=beta, kl_estimator=estimator, loss_aggregation=aggregation, clip_low=0.2, clip_high=0.28)
    assert cfg.algorithm == "grpo" and cfg.tis_cap == 0 and not cfg.mask_truncated  # the defaults are today's loss
    logp, old, ref, _, mask = random_batch(seed=1, dtype=torch.float32, spread=1.0)
    adv = torch.tensor([0.9, -1.3, 0.2, -0.4])
    norm = LossNorm(tokens=mask.sum().item(), sequences=4)

    x = logp.clone().requires_grad_(True)
    per_token, kl, clipped = old_grpo_token_loss(x, old, ref, adv, mask, cfg)
    expected = old_aggregate(per_token, mask, cfg, norm.tokens, norm.sequences)
    expected.backward()
    assert clipped.any()  # the batch reaches past the clip range, so the clipped branch is compared too

    out, grad = library(make_algorithm(cfg), logp, old, ref, adv, mask, norm)
    assert torch.equal(out.loss, expected.detach())
    assert torch.equal(out.per_token, per_token.detach()) and torch.equal(out.kl, kl) and torch.equal(out.clipped, clipped)
    assert torch.equal(grad, x.grad)
    torch.testing.assert_close(out.ratio, torch.exp(logp - old), rtol=0, atol=0)


def test_grpo_advantages_are_the_group_normalised_rewards():
    rewards = torch.tensor([1.0, 0.0, 0.5, 2.0, -2.0, 0.0])
    for norm in ("group_std", "group_mean"):
        adv = make_algorithm(GRPOConfig(advantage_norm=norm)).advantages(rewards, group_size=3)
        expected = []
        for start in (0, 3):
            group = rewards[start : start + 3].tolist()
            scale = statistics.stdev(group) + 1e-4 if norm == "group_std" else 1.0
            expected += [(r - statistics.fmean(group)) / scale for r in group]
        torch.testing.assert_close(adv, torch.tensor(expected))


# ---- GSPO ---------------------------------------------------------------------------------------------------------
def gspo_batch():
    """Four sequences whose mean log-ratio lands inside [log(1 - 3e-4), log(1 + 4e-4)] for rows 0 and 2, above it for
    row 1 and below it for row 3, with token log-ratios that differ within each row (so the mean matters)."""
    logp, _, ref, _, mask = random_batch(seed=2, width=5)
    targets = [1e-4, 2e-3, -2e-4, -2e-3]  # the mean log-ratio of each row
    old = logp.clone()
    for b, target in enumerate(targets):
        n = int(mask[b].sum())
        wiggle = torch.linspace(-1e-3, 1e-3, n, dtype=torch.float64)
        wiggle = wiggle - wiggle.mean()  # sums to 0 (a one-token row gets none)
        old[b, :n] = logp[b, :n] - (target + wiggle)
    return logp, old, ref, mask


def gspo_by_hand(logp, old, ref, adv, mask, cfg: GRPOConfig, is_weights=None):
    """GSPO's objective per sequence, s = exp(mean_t (logp - old)): loss_i = -mean_t(w_t) * min(s*A, clip(s)*A) +
    beta * mean_t KL, the batch loss the mean over sequences. Gradient per token: inside the clip range
    -(w_t/L) * s * A (the sequence ratio times the token's share of d mean_t logp), 0 for the surrogate outside it."""
    batch, width = logp.shape
    loss, grad, clipped_rows = 0.0, torch.zeros(batch, width, dtype=torch.float64), []
    for b in range(batch):
        tokens = [t for t in range(width) if mask[b, t]]
        length = len(tokens)
        s = math.exp(sum(float(logp[b, t]) - float(old[b, t]) for t in tokens) / length)
        a = float(adv[b])
        surrogate, clipped = clipped_surrogate(s, a, cfg.gspo_clip_low, cfg.gspo_clip_high)
        clipped_rows.append(clipped)
        for t in tokens:
            w = 1.0 if is_weights is None else float(is_weights[b, t])
            kl, d_kl = kl_and_derivative(float(logp[b, t]), float(ref[b, t]), cfg.kl_estimator) if ref is not None else (0.0, 0.0)
            loss += (-w * surrogate + cfg.beta * kl) / length / batch
            grad[b, t] = ((0.0 if clipped else -w * s * a) + cfg.beta * d_kl) / length / batch
    return loss, grad, clipped_rows


@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_gspo_loss_and_gradient_match_the_sequence_formula(beta):
    logp, old, ref, mask = gspo_batch()
    adv = torch.tensor([0.8, 1.1, -0.6, -1.4], dtype=torch.float64)
    cfg = GRPOConfig(algorithm="gspo", beta=beta)
    assert (cfg.gspo_clip_low, cfg.gspo_clip_high) == (3e-4, 4e-4)
    out, grad = library(make_algorithm(cfg), logp, old, ref, adv, mask, LossNorm(tokens=mask.sum().item(), sequences=4))
    expected_loss, expected_grad, clipped_rows = gspo_by_hand(logp, old, ref, adv, mask, cfg)
    # Rows 1 (s above 1 + 4e-4, A > 0) and 3 (s below 1 - 3e-4, A < 0) are clipped: their surrogate has no gradient.
    assert clipped_rows == [False, True, False, True]
    assert out.loss.item() == pytest.approx(expected_loss, rel=1e-12, abs=1e-15)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-15)
    assert torch.equal(out.clipped.any(dim=1), torch.tensor(clipped_rows))
    assert torch.equal(out.clipped, out.clipped.any(dim=1, keepdim=True) & mask.bool())  # a whole sequence is clipped
    # The reported ratio is the sequence's, at each of its tokens.
    s = torch.exp(((logp - old) * mask).sum(dim=1) / mask.sum(dim=1))
    torch.testing.assert_close(out.ratio[mask.bool()], s.unsqueeze(1).expand_as(mask)[mask.bool()])
    if beta == 0:
        assert torch.count_nonzero(grad[1]) == 0 and torch.count_nonzero(grad[3]) == 0


def test_gspo_token_form_equals_a_differentiable_sequence_ratio():
    """Autograd through s = exp(masked mean of logp - old) itself gives the same loss and gradient as the token form."""
    logp, old, ref, mask = gspo_batch()
    adv = torch.tensor([0.8, 1.1, -0.6, -1.4], dtype=torch.float64)
    cfg = GRPOConfig(algorithm="gspo", beta=0.0, gspo_clip_low=0.01, gspo_clip_high=0.01)  # nothing clipped
    out, grad = library(make_algorithm(cfg), logp, old, ref, adv, mask, LossNorm(tokens=mask.sum().item(), sequences=4))
    x = logp.clone().requires_grad_(True)
    s = torch.exp(((x - old) * mask).sum(dim=1) / mask.sum(dim=1))
    direct = -torch.minimum(s * adv, torch.clamp(s, 0.99, 1.01) * adv).mean()
    direct.backward()
    assert out.loss.item() == pytest.approx(direct.item(), rel=1e-12)
    torch.testing.assert_close(grad, x.grad, rtol=1e-10, atol=1e-15)
    # Inside the range, each token's gradient is the sequence ratio times the gradient of the mean token log-prob.
    torch.testing.assert_close(grad, (-(s * adv).unsqueeze(1) * mask / mask.sum(dim=1, keepdim=True) / 4).detach(), rtol=1e-10, atol=1e-15)


def test_gspo_weighs_every_sequence_equally_whatever_its_length():
    # A 6-token and a 2-token sequence with the same A and s: the same share of the loss each.
    cfg = GRPOConfig(algorithm="gspo", beta=0.0, loss_aggregation="token_mean")  # token_mean is grpo's alone
    logp = torch.full((2, 6), -1.0, dtype=torch.float64)
    mask = torch.tensor([[1.0] * 6, [1.0] * 2 + [0.0] * 4], dtype=torch.float64)
    adv = torch.tensor([1.0, 1.0], dtype=torch.float64)
    out, grad = library(make_algorithm(cfg), logp, logp, None, adv, mask, LossNorm(tokens=8, sequences=2))
    per_sequence = out.per_token.sum(dim=1) / mask.sum(dim=1)
    assert per_sequence[0].item() == pytest.approx(per_sequence[1].item()) == pytest.approx(-1.0)
    assert grad[0].sum().item() == pytest.approx(grad[1].sum().item())


# ---- Dr.GRPO ------------------------------------------------------------------------------------------------------
def test_dr_grpo_advantages_subtract_the_group_mean_only():
    rewards = torch.tensor([1.0, 0.0, 0.5, 2.0, -2.0, 0.0, 0.3, 0.3, 0.9])
    adv = make_algorithm(GRPOConfig(algorithm="dr_grpo", advantage_norm="group_std"), max_new_tokens=8).advantages(rewards, 3)
    expected = []
    for start in (0, 3, 6):
        group = rewards[start : start + 3].tolist()
        expected += [r - statistics.fmean(group) for r in group]
    torch.testing.assert_close(adv, torch.tensor(expected))


@pytest.mark.parametrize("tokens_norm,max_new_tokens", [(0, 16), (10, 16), (12, None)])
def test_dr_grpo_loss_and_gradient_match_the_constant_normaliser(tokens_norm, max_new_tokens):
    logp, old, ref, _, mask = random_batch(seed=3, spread=1.0)
    adv = torch.tensor([0.5, 1.5, -0.8, -0.3], dtype=torch.float64)
    cfg = GRPOConfig(algorithm="dr_grpo", beta=0.03, max_tokens_norm=tokens_norm, clip_low=0.2, clip_high=0.28)
    constant = tokens_norm or max_new_tokens
    # The token counts passed in must not matter: only the constant and the sequence count do.
    out, grad = library(make_algorithm(cfg, max_new_tokens), logp, old, ref, adv, mask, LossNorm(tokens=999.0, sequences=4))
    expected_loss, expected_grad = token_objective_by_hand(logp, old, ref, adv, mask, cfg, lambda b: 1.0 / (constant * 4))
    assert out.loss.item() == pytest.approx(expected_loss, rel=1e-12, abs=1e-15)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-15)


def test_dr_grpo_needs_a_normaliser():
    with pytest.raises(ValueError, match="max_tokens_norm"):
        make_algorithm(GRPOConfig(algorithm="dr_grpo"))
    assert make_algorithm(GRPOConfig(algorithm="dr_grpo", max_tokens_norm=7), max_new_tokens=64).tokens_norm == 7
    assert make_algorithm(GRPOConfig(algorithm="dr_grpo"), max_new_tokens=64).tokens_norm == 64


def test_dr_grpo_token_weight_does_not_depend_on_lengths():
    # Under token_mean a token's weight is 1/(batch tokens); under sequence_mean 1/(B * its length); under Dr.GRPO it is
    # 1/(constant * B) whatever the lengths: shortening another row leaves row 0's gradient exactly as it was.
    logp, old, _, _, mask = random_batch(seed=4)
    adv = torch.tensor([0.5, 1.5, -0.8, -0.3], dtype=torch.float64)
    algorithm = make_algorithm(GRPOConfig(algorithm="dr_grpo", beta=0.0), max_new_tokens=6)
    _, grad = library(algorithm, logp, old, None, adv, mask, LossNorm(tokens=mask.sum().item(), sequences=4))
    shorter = mask.clone()
    shorter[3, 2:] = 0.0
    _, grad_shorter = library(algorithm, logp, old, None, adv, shorter, LossNorm(tokens=shorter.sum().item(), sequences=4))
    assert torch.equal(grad[0], grad_shorter[0])


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_micro_batches_add_up_to_the_batch_loss(name):
    logp, old, ref, _, mask = random_batch(seed=5, spread=1.0)
    adv = torch.tensor([0.5, 1.5, -0.8, -0.3], dtype=torch.float64)
    algorithm = make_algorithm(GRPOConfig(algorithm=name, beta=0.02), max_new_tokens=6)
    norm = LossNorm(tokens=mask.sum().item(), sequences=4)
    whole, grad = library(algorithm, logp, old, ref, adv, mask, norm)
    parts = [library(algorithm, logp[i : i + 2], old[i : i + 2], ref[i : i + 2], adv[i : i + 2], mask[i : i + 2], norm) for i in (0, 2)]
    assert sum(p[0].loss.item() for p in parts) == pytest.approx(whole.loss.item(), rel=1e-12)
    torch.testing.assert_close(torch.cat([p[1] for p in parts]), grad, rtol=1e-12, atol=0)


# ---- truncated importance sampling --------------------------------------------------------------------------------
def test_tis_weights_are_the_capped_ratio_learner_over_sampler():
    _, old, _, sampler, mask = random_batch(seed=6)
    cap = 1.5
    weights, stats = tis_weights(old, sampler, mask, cap)
    raw_in_loss, capped = [], 0
    for b in range(old.shape[0]):
        for t in range(old.shape[1]):
            raw = math.exp(float(old[b, t]) - float(sampler[b, t]))
            if mask[b, t]:
                assert weights[b, t].item() == pytest.approx(min(raw, cap), rel=1e-12)
                raw_in_loss.append(raw)
                capped += raw > cap
            else:
                assert weights[b, t].item() == 1.0  # off the mask a weight is never used; 1 keeps it harmless
    assert 0 < capped < len(raw_in_loss)  # some tokens on each side of the cap
    assert stats.tokens == len(raw_in_loss) == mask.sum().item()
    assert stats.weight_sum == pytest.approx(sum(raw_in_loss), rel=1e-12)
    assert stats.weight_max == pytest.approx(max(raw_in_loss), rel=1e-12)
    assert stats.capped_tokens == capped
    assert not weights.requires_grad


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_tis_weights_multiply_the_policy_gradient_term_only(name):
    logp, old, ref, sampler, mask = random_batch(seed=7, spread=1.0)
    if name == "gspo":
        logp, old, ref, mask = gspo_batch()
        sampler = old + (torch.rand(old.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64) - 0.5) * 2
    adv = torch.tensor([0.5, 1.5, -0.8, -0.3], dtype=torch.float64)
    cfg = GRPOConfig(algorithm=name, beta=0.05, tis_cap=2.0, clip_low=0.2, clip_high=0.28)
    weights, _ = tis_weights(old, sampler, mask, cfg.tis_cap)
    norm = LossNorm(tokens=mask.sum().item(), sequences=4)
    out, grad = library(make_algorithm(cfg, max_new_tokens=6), logp, old, ref, adv, mask, norm, is_weights=weights)
    if name == "gspo":
        expected_loss, expected_grad, _ = gspo_by_hand(logp, old, ref, adv, mask, cfg, is_weights=weights)
    else:
        weight_of = {
            "grpo": lambda b: 1.0 / norm.tokens,  # token_mean, the default
            "dr_grpo": lambda b: 1.0 / (6 * 4),
        }[name]
        expected_loss, expected_grad = token_objective_by_hand(logp, old, ref, adv, mask, cfg, weight_of, is_weights=weights)
    assert out.loss.item() == pytest.approx(expected_loss, rel=1e-12, abs=1e-15)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-15)
    # Weights of 1 give exactly the loss without TIS.
    plain, plain_grad = library(make_algorithm(cfg, max_new_tokens=6), logp, old, ref, adv, mask, norm)
    ones, ones_grad = library(make_algorithm(cfg, max_new_tokens=6), logp, old, ref, adv, mask, norm, is_weights=torch.ones_like(mask))
    assert torch.equal(plain.loss, ones.loss) and torch.equal(plain_grad, ones_grad)


# ---- masking truncated completions ----------------------------------------------------------------------------------
def kept_norm(mask: torch.Tensor) -> LossNorm:
    """What the learner counts under mask_truncated: tokens and sequences left in the loss."""
    return LossNorm(tokens=mask.sum().item(), sequences=float((mask.sum(dim=1) > 0).sum()))


@pytest.mark.parametrize("name,aggregation", [("grpo", "token_mean"), ("grpo", "sequence_mean"), ("gspo", "token_mean"), ("dr_grpo", "token_mean")])
def test_masking_truncated_removes_exactly_their_tokens_from_loss_and_normaliser(name, aggregation):
    logp, old, ref, _, completion_mask = random_batch(seed=8, spread=1.0)
    if name == "gspo":
        logp, old, ref, completion_mask = gspo_batch()
    adv = torch.tensor([0.5, 1.5, -0.8, -0.3], dtype=torch.float64)
    truncated = torch.tensor([False, True, False, True])
    kept = [0, 2]
    cfg = GRPOConfig(algorithm=name, beta=0.05, mask_truncated=True, loss_aggregation=aggregation)
    algorithm = make_algorithm(cfg, max_new_tokens=6)

    mask = loss_mask(completion_mask, truncated, cfg.mask_truncated)
    assert torch.equal(mask[kept], completion_mask[kept]) and torch.count_nonzero(mask[truncated]) == 0
    norm = kept_norm(mask)
    assert norm.tokens == completion_mask[kept].sum().item() and norm.sequences == 2
    out, grad = library(algorithm, logp, old, ref, adv, mask, norm)
    # The same as a batch that never held the truncated samples.
    alone, alone_grad = library(algorithm, logp[kept], old[kept], ref[kept], adv[kept], completion_mask[kept], kept_norm(completion_mask[kept]))
    assert out.loss.item() == pytest.approx(alone.loss.item(), rel=1e-12)
    assert torch.count_nonzero(grad[truncated]) == 0 and torch.count_nonzero(out.per_token[truncated]) == 0
    assert torch.count_nonzero(out.clipped[truncated]) == 0 and torch.count_nonzero(out.kl[truncated]) == 0
    torch.testing.assert_close(grad[kept], alone_grad, rtol=1e-12, atol=0)


def test_without_mask_truncated_the_mask_is_the_completion_mask_itself():
    completion_mask = torch.ones(2, 3)
    assert loss_mask(completion_mask, torch.tensor([True, False]), False) is completion_mask


# ---- samples, staleness, metrics ------------------------------------------------------------------------------------
def test_sample_new_fields_default_and_pack():
    old_style = Sample([5, 6], [7, 8], [-1.0, -2.0], 0.5)  # positional, as every existing caller builds one
    assert old_style.truncated is False and old_style.policy_version == 0
    batch = pack([old_style, Sample([5], [7], [-1.0], -0.5, truncated=True, policy_version=3)], pad_id=0)
    assert batch.truncated.tolist() == [False, True] and batch.truncated.dtype == torch.bool
    assert batch.policy_versions.tolist() == [0, 3]


def test_staleness_is_versions_behind_the_learner():
    stats = staleness_stats([4, 5, 5, 2], current_version=5)
    assert stats.total == (5 - 4) + 0 + 0 + (5 - 2) and stats.max == 3 and stats.sequences == 4
    assert staleness_stats([], 2).max == 0
    with pytest.raises(ValueError, match="policy_version"):
        staleness_stats([6], current_version=5)


def test_combine_rank_results_adds_sums_and_takes_maxima():
    ranks = [
        {"loss": 0.5, "kl_sum": 1.0, "clipped_tokens": 2.0, "tokens": 10.0, "logprob_mismatch": 0.1, "grad_norm": 3.0, "lr": 1e-3,
         "truncated_masked": 1.0, "sequences": 3.0, "tis_weight_sum": 12.0, "tis_capped_tokens": 1.0, "tis_tokens": 10.0,
         "tis/weight_max": 2.5, "staleness_sum": 3.0, "staleness/max": 2.0},
        {"loss": 0.25, "kl_sum": 3.0, "clipped_tokens": 0.0, "tokens": 30.0, "logprob_mismatch": 0.3, "grad_norm": 3.0, "lr": 1e-3,
         "truncated_masked": 0.0, "sequences": 2.0, "tis_weight_sum": 28.0, "tis_capped_tokens": 5.0, "tis_tokens": 30.0,
         "tis/weight_max": 4.0, "staleness_sum": 0.0, "staleness/max": 0.0},
    ]
    metrics = combine_rank_results(ranks)
    assert metrics["loss"] == 0.75 and metrics["kl"] == pytest.approx(4 / 40) and metrics["clip_fraction"] == pytest.approx(2 / 40)
    assert metrics["logprob_mismatch"] == pytest.approx((0.1 * 10 + 0.3 * 30) / 40)
    assert metrics["truncated_masked"] == 1.0
    assert metrics["tis/weight_mean"] == pytest.approx(40 / 40) and metrics["tis/weight_max"] == 4.0
    assert metrics["tis/capped_fraction"] == pytest.approx(6 / 40)
    assert metrics["staleness/mean"] == pytest.approx(3 / 5) and metrics["staleness/max"] == 2.0
    bare = combine_rank_results([{k: v for k, v in r.items() if not k.startswith(("tis", "staleness"))} for r in ranks])
    assert not any(k.startswith(("tis", "staleness")) for k in bare)


# ---- the algorithm object: its options, its loss's metrics, built once ------------------------------------------------
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_the_loss_output_carries_its_metrics_over_the_tokens_in_the_loss(name):
    logp, old, ref, _, mask = random_batch(seed=11, spread=1.0)
    adv = torch.tensor([0.5, 1.5, -0.8, -0.3], dtype=torch.float64)
    algorithm = make_algorithm(GRPOConfig(algorithm=name, beta=0.05), max_new_tokens=6)
    out, _ = library(algorithm, logp, old, ref, adv, mask, LossNorm(tokens=mask.sum().item(), sequences=4))
    on, metrics = mask.bool(), out.metrics
    assert metrics.tokens == on.sum().item() and metrics.clipped_tokens == out.clipped.sum().item()
    assert metrics.kl_sum == pytest.approx(out.kl.sum().item(), rel=1e-12) and metrics.kl_sum > 0
    assert metrics.ratio_sum == pytest.approx(out.ratio[on].sum().item(), rel=1e-12)
    assert (metrics.ratio_min, metrics.ratio_max) == (out.ratio[on].min().item(), out.ratio[on].max().item())
    both = metrics + LossMetrics(tokens=1.0, ratio_min=0.0, ratio_max=9.0)
    assert both.tokens == metrics.tokens + 1 and (both.ratio_min, both.ratio_max) == (0.0, 9.0)


def test_the_options_mask_truncations_fix_the_old_policy_and_its_tis_weights():
    samples = [Sample([5, 6], [7, 8, 9], [-1.0, -2.0, -0.5], 0.5), Sample([5], [7, 8], [-0.3, -0.2], -0.5, truncated=True)]
    batch = pack(samples, pad_id=0)
    first = (-torch.rand(batch.completion_mask.shape, generator=torch.Generator().manual_seed(4))).requires_grad_(True)
    algorithm = make_algorithm(GRPOConfig(tis_cap=1.5, mask_truncated=True))
    mask = algorithm.loss_mask(batch)
    assert torch.equal(mask[0], batch.completion_mask[0]) and mask[1].sum() == 0
    old = algorithm.old_policy(first, batch, mask)
    assert torch.equal(old.logprobs, first.detach()) and not old.logprobs.requires_grad
    weights, stats = tis_weights(first.detach(), batch.rollout_logprobs, mask, 1.5)
    assert torch.equal(old.is_weights, weights) and old.tis == stats
    rollout = make_algorithm(GRPOConfig(old_logprobs="rollout")).old_policy(first, batch, batch.completion_mask)
    assert rollout.logprobs is batch.rollout_logprobs and rollout.is_weights is None and rollout.tis is None
    short = Sample([5], [7, 8], [-0.3], 0.0)
    with pytest.raises(ValueError, match="rank 2, sample 1: learner.grpo.tis_cap > 0 needs one finite"):
        algorithm.check_samples([samples[0], short], rank=2)
    make_algorithm(GRPOConfig()).check_samples([short], rank=0)  # pi_old from the learner needs no engine log-probs


def test_the_algorithm_is_built_once_per_settings():
    from omegaconf import OmegaConf

    cfg = GRPOConfig(algorithm="dr_grpo")
    built = make_algorithm(cfg, max_new_tokens=8)
    assert make_algorithm(GRPOConfig(algorithm="dr_grpo"), max_new_tokens=8) is built
    assert make_algorithm(OmegaConf.structured(GRPOConfig(algorithm="dr_grpo")), max_new_tokens=8) is built  # the driver's node
    assert make_algorithm(cfg, max_new_tokens=16) is not built
    cfg.clip_high = 0.3  # a changed setting gives a new object; the built one keeps its own copy
    changed = make_algorithm(cfg, max_new_tokens=8)
    assert changed is not built and changed.cfg.clip_high == 0.3 and built.cfg.clip_high == 0.2


# ---- config checks ------------------------------------------------------------------------------------------------
def test_check_grpo_config_names_the_bad_algorithm_setting():
    for name in ALGORITHMS:
        check_grpo_config(GRPOConfig(algorithm=name))
    check_grpo_config(GRPOConfig(tis_cap=2.0, mask_truncated=True, max_tokens_norm=128))
    bad = [
        ({"algorithm": "ppo"}, "learner.grpo.algorithm"),
        ({"tis_cap": -1.0}, "learner.grpo.tis_cap"),
        ({"tis_cap": math.inf}, "learner.grpo.tis_cap"),
        ({"tis_cap": math.nan}, "learner.grpo.tis_cap"),
        ({"tis_cap": 2.0, "old_logprobs": "rollout"}, "learner.grpo.tis_cap > 0 needs learner.grpo.old_logprobs=learner"),
        ({"gspo_clip_low": 1.0}, "learner.grpo.gspo_clip_low"),
        ({"gspo_clip_low": -1e-4}, "learner.grpo.gspo_clip_low"),
        ({"gspo_clip_high": -1e-4}, "learner.grpo.gspo_clip_high"),
        ({"max_tokens_norm": -1}, "learner.grpo.max_tokens_norm"),
        ({"mask_truncated": "yes"}, "learner.grpo.mask_truncated"),
    ]
    for fields, message in bad:
        with pytest.raises(ValueError, match=message.replace(".", r"\.")):
            check_grpo_config(GRPOConfig(**fields))
        with pytest.raises(ValueError, match=message.replace(".", r"\.")):
            make_algorithm(GRPOConfig(**fields), max_new_tokens=8)


# ---- DAPO's soft overlong penalty -----------------------------------------------------------------------------------
def test_soft_overlong_penalty_has_three_regions():
    max_length, cache = 100, 20
    assert [soft_overlong_penalty(n, max_length, cache) for n in (0, 50, 80)] == [0.0, 0.0, 0.0]
    for n in (81, 90, 99, 100):
        assert soft_overlong_penalty(n, max_length, cache) == pytest.approx((80 - n) / 20)
    assert soft_overlong_penalty(90, max_length, cache) == pytest.approx(-0.5)
    assert soft_overlong_penalty(101, max_length, cache) == -1.0 and soft_overlong_penalty(500, max_length, cache) == -1.0


def test_soft_overlong_penalty_is_continuous_at_both_boundaries():
    max_length, cache = 1000, 200
    # At the window's start it leaves 0 by one step of 1/cache; at max_length it meets -1 exactly, and stays there.
    assert soft_overlong_penalty(800, max_length, cache) == 0.0
    assert soft_overlong_penalty(801, max_length, cache) == pytest.approx(-1 / cache)
    assert soft_overlong_penalty(1000, max_length, cache) == -1.0 == soft_overlong_penalty(1001, max_length, cache)
    lengths = range(0, 1100)
    values = [soft_overlong_penalty(n, max_length, cache) for n in lengths]
    assert max(abs(b - a) for a, b in zip(values, values[1:])) == pytest.approx(1 / cache)  # no jump anywhere
    assert all(b <= a for a, b in zip(values, values[1:]))  # never rewards a longer completion


def test_soft_overlong_penalty_edges_and_config():
    assert soft_overlong_penalty(10, 10, 0) == 0.0 and soft_overlong_penalty(11, 10, 0) == -1.0  # no window: a step
    assert soft_overlong_penalty(1, 10, 10) == pytest.approx(-0.1)  # the whole range is the window
    for args, message in [((5, 0, 0), "max_length"), ((5, 10, 11), "cache_length"), ((5, 10, -1), "cache_length"), ((-1, 10, 2), "length")]:
        with pytest.raises(ValueError, match=message):
            soft_overlong_penalty(*args)
    cfg = RewardConfig()
    assert cfg.overlong_penalty is False and cfg.overlong_cache_tokens > 0
