"""The batch's learner metrics from the per-rank results of Learner.train_step (sums added, maxima taken)."""

from __future__ import annotations


def combine_rank_results(results: list[dict]) -> dict[str, float]:
    """loss, kl, clip_fraction, logprob_mismatch, grad_norm, lr as LearnerGroup reports them today, plus, when the ranks
    reported them: tis/weight_mean, tis/weight_max, tis/capped_fraction (importance weights before the cap, over the
    tokens in the loss), staleness/mean, staleness/max (policy versions behind the learner, over the samples), and
    truncated_masked (samples taken out of the loss for being cut at max_new_tokens)."""
    total_tokens = max(sum(r["tokens"] for r in results), 1.0)
    metrics = {
        "loss": sum(r["loss"] for r in results),
        "kl": sum(r["kl_sum"] for r in results) / total_tokens,
        "clip_fraction": sum(r["clipped_tokens"] for r in results) / total_tokens,
        "logprob_mismatch": sum(r["logprob_mismatch"] * r["tokens"] for r in results) / total_tokens,
        "grad_norm": results[0]["grad_norm"],  # DeepSpeed's global norm: the same on every rank
        "lr": results[0]["lr"],
        "truncated_masked": sum(r.get("truncated_masked", 0.0) for r in results),
    }
    if all("tis_tokens" in r for r in results):
        tis_tokens = max(sum(r["tis_tokens"] for r in results), 1.0)
        metrics["tis/weight_mean"] = sum(r["tis_weight_sum"] for r in results) / tis_tokens
        metrics["tis/weight_max"] = max(r["tis/weight_max"] for r in results)
        metrics["tis/capped_fraction"] = sum(r["tis_capped_tokens"] for r in results) / tis_tokens
    if all("staleness_sum" in r for r in results):
        sequences = max(sum(r["sequences"] for r in results), 1.0)
        metrics["staleness/mean"] = sum(r["staleness_sum"] for r in results) / sequences
        # A rank with no samples reports 0, which never exceeds a real lag.
        metrics["staleness/max"] = max(r["staleness/max"] for r in results)
    return metrics
