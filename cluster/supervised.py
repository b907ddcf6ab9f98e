"""The supervised step loop that every SFT-style phase shares (the traces of `embodied-r sft`, the option-lookup drills):
a learning-rate schedule, one LearnerGroup.sft_step per batch, a metrics row per step and a progress bar."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path


def end_of_turn(tokenizer) -> list[int]:
    """The token that ends every SFT target: the chat template's <|im_end|>, else the tokenizer's EOS."""
    vocab = tokenizer.get_vocab()
    end = [vocab["<|im_end|>"]] if "<|im_end|>" in vocab else [tokenizer.eos_token_id]
    if end[0] is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path} has neither <|im_end|> nor an EOS token to end a trace with")
    return end


def lr_at(step: int, steps: int, lr: float, warmup_ratio: float) -> float:
    """The learning rate of 1-based `step`: a linear warm-up from lr/(W+1) over W = ceil(warmup_ratio * steps) steps, then lr."""
    warmup = math.ceil(warmup_ratio * steps)
    return lr * min(1.0, step / (warmup + 1)) if warmup else lr


def supervised_steps(learner, next_batch, steps: int, lr: float, warmup_ratio: float, metrics_path: Path, desc: str,
                     progress: bool) -> list[float]:
    """`steps` optimiser steps of `learner` (a LearnerGroup), each on `next_batch()` -> (samples, extra metric fields),
    at lr_at's schedule; one row per step (step, the extra fields, nll, lr, target_tokens, time/step) in a fresh
    `metrics_path`. Returns the NLL per step."""
    from cluster.metrics import MetricsWriter
    from tqdm import tqdm

    metrics = MetricsWriter(metrics_path, truncate_after_step=0)  # a fresh file: SFT does not resume
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress, file=sys.stderr)
    nll = []
    try:
        for step in range(1, steps + 1):
            started = time.perf_counter()
            batch, extra = next_batch()
            step_lr = lr_at(step, steps, lr, warmup_ratio)
            nll.append(learner.sft_step(batch, step_lr))
            row = {
                "step": step, **extra, "nll": nll[-1], "lr": step_lr,
                "target_tokens": sum(len(s.completion_ids) for s in batch), "time/step": time.perf_counter() - started,
            }
            metrics.write(row)
            bar.set_postfix(nll=f"{nll[-1]:.3f}", s=f"{row['time/step']:.2f}")
            bar.update(1)
    finally:
        bar.close()
        metrics.close()
    return nll
