"""The option-lookup warm-up of SFT: `steps` supervised steps on lookup drills (embodied_data.synthetic.lookup) before
the reasoning traces, so that a policy built from random weights learns to copy an option's letter from its words."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path


def run_lookup_warmup(learner, tokenizer, words: list[str], end: list[int], steps: int, drills_per_step: int,
                      lr: float, warmup_ratio: float, seed: int, metrics_path: Path, progress: bool) -> list[float]:
    """Runs the warm-up on `learner` (a LearnerGroup); each drill's options are the prompt and its target the loss.
    Writes one row per step (nll, lr, time/step) to `metrics_path`; returns the NLL per step."""
    from tqdm import tqdm

    from cluster.metrics import MetricsWriter
    from cluster.sft import lr_at
    from embodied_data.synthetic.lookup import lookup_drill
    from learner.batch import Sample

    rng = random.Random(seed)
    metrics = MetricsWriter(metrics_path, truncate_after_step=0)
    bar = tqdm(total=steps, desc="SFT lookup warm-up", unit="step", disable=not progress, file=sys.stderr)
    nll: list[float] = []
    try:
        for step in range(1, steps + 1):
            started = time.perf_counter()
            batch = []
            for _ in range(drills_per_step):
                options, target = lookup_drill(rng, words)
                prompt_ids = list(tokenizer(options + "\n", add_special_tokens=False)["input_ids"])
                target_ids = list(tokenizer(target, add_special_tokens=False)["input_ids"]) + end
                batch.append(Sample(prompt_ids, target_ids, [0.0] * len(target_ids), 0.0))
            lr_now = lr_at(step, steps, lr, warmup_ratio)
            nll.append(learner.sft_step(batch, lr_now))
            row = {"step": step, "nll": nll[-1], "lr": lr_now, "time/step": time.perf_counter() - started}
            metrics.write(row)
            bar.set_postfix(nll=f"{nll[-1]:.3f}")
            bar.update(1)
    finally:
        bar.close()
        metrics.close()
    return nll
