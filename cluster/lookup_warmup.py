"""The option-lookup warm-up of SFT: sft.lookup_steps supervised steps on lookup drills (embodied_data.synthetic.lookup)
before the reasoning traces, so that a policy built from random weights learns to copy an option's letter from its words."""

from __future__ import annotations

import logging
import random
from pathlib import Path

log = logging.getLogger("embodied_r.sft")


def run_lookup_warmup(learner, tokenizer, records, sft_cfg, seed: int, out: Path) -> list[float]:
    """Runs the warm-up on `learner` (a LearnerGroup) over the words of the records' questions and choices: each
    drill's options are the prompt and its target the loss. One row per step in <out>/lookup_metrics.jsonl; returns the
    NLL per step."""
    from cluster.supervised import end_of_turn, supervised_steps
    from embodied_data.synthetic.lookup import drill_vocabulary, lookup_drill
    from learner.batch import Sample

    words = drill_vocabulary(text for r in records for text in (r.question, *r.choices))
    end = end_of_turn(tokenizer)
    rng = random.Random(seed)
    log.info("SFT lookup warm-up: %d steps of %d drills over %d words", sft_cfg.lookup_steps,
             sft_cfg.lookup_drills_per_step, len(words))

    def next_batch():
        batch = []
        for _ in range(sft_cfg.lookup_drills_per_step):
            options, target = lookup_drill(rng, words)
            prompt_ids = list(tokenizer(options + "\n", add_special_tokens=False)["input_ids"])
            target_ids = list(tokenizer(target, add_special_tokens=False)["input_ids"]) + end
            batch.append(Sample(prompt_ids, target_ids, [0.0] * len(target_ids), 0.0))
        return batch, {}

    nll = supervised_steps(learner, next_batch, sft_cfg.lookup_steps, sft_cfg.lr, sft_cfg.warmup_ratio,
                           out / "lookup_metrics.jsonl", "SFT lookup warm-up", sft_cfg.progress)
    log.info("SFT lookup warm-up done: NLL %.3f -> %.3f per target token", nll[0], nll[-1])
    return nll
