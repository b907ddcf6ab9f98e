"""Truncated importance sampling: per-token weights min(exp(learner_old_logp - sampler_logp), cap) on the policy-gradient term."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TISStats:
    """Sums over the tokens in the loss, so that micro-batches and ranks add up; the weights here are before the cap."""

    weight_sum: float = 0.0
    weight_max: float = 0.0
    capped_tokens: float = 0.0
    tokens: float = 0.0

    def __add__(self, other: TISStats) -> TISStats:
        return TISStats(
            self.weight_sum + other.weight_sum, max(self.weight_max, other.weight_max),
            self.capped_tokens + other.capped_tokens, self.tokens + other.tokens,
        )

    def metrics(self) -> dict[str, float]:
        """The rank's sums (learner.algo.metrics.combine_rank_results adds the ranks up) and its own means."""
        return {
            "tis_weight_sum": self.weight_sum, "tis_capped_tokens": self.capped_tokens, "tis_tokens": self.tokens,
            "tis/weight_mean": self.weight_sum / max(self.tokens, 1.0),
            "tis/weight_max": self.weight_max,
            "tis/capped_fraction": self.capped_tokens / max(self.tokens, 1.0),
        }


def tis_weights(old_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, mask: torch.Tensor, cap: float) -> tuple[torch.Tensor, TISStats]:
    """[B, T] detached weights min(pi_old / pi_sampler, cap) (1 off the mask), and their statistics over the mask.

    pi_old is the learner's policy before this batch's updates; pi_sampler the one the tokens were drawn from (an older
    version, or the same weights in a different engine). The cap bounds the variance a rare token could add.
    """
    raw = torch.exp((old_logprobs - sampler_logprobs).detach())
    on = mask.bool()
    weights = torch.where(on, torch.clamp(raw, max=cap), torch.ones_like(raw))
    in_loss = raw[on]
    stats = TISStats(
        weight_sum=in_loss.sum().item(),
        weight_max=in_loss.max().item() if in_loss.numel() else 0.0,
        capped_tokens=(in_loss > cap).sum().item(),
        tokens=float(in_loss.numel()),
    )
    return weights, stats
