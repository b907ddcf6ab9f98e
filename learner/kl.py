"""Per-token estimators of KL(policy || reference) from log-probs of the sampled tokens (Schulman's k1, k2, k3).

Their values estimate the same KL; their gradients, as a loss term on samples from the policy, differ (x = log(ref / pi)):
- k1 = -x: gradient grad log pi, zero in expectation: it regularises nothing (refused as a loss term by
  learner.algo.checks; fine as a metric);
- k2 = x^2 / 2: gradient -x grad log pi, in expectation the gradient of KL(policy || ref), the reverse KL;
- k3 = e^x - x - 1 (DeepSeek's GRPO, the default): gradient (1 - e^x) grad log pi, in expectation the gradient of
  KL(ref || policy), the forward KL. Always >= 0 and low-variance as a value.
"""

from __future__ import annotations

import torch


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    log_ratio = ref_logprobs - logprobs  # log(p_ref / p_policy) at the sampled token
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        # exp(x) - x - 1 >= 0, unbiased, low variance; clamp so a rare huge gap does not overflow.
        log_ratio = log_ratio.clamp(-20.0, 20.0)
        return torch.exp(log_ratio) - log_ratio - 1.0
    raise ValueError(f"kl_estimator must be k1, k2 or k3, got {estimator!r}")
