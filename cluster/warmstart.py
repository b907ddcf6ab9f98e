"""An optional supervised warm-up before GRPO: a random-weight policy never emits the answer format, so every reward
is 0 and GRPO has no signal; a few SFT steps on the training answers give it the format first (the paper instead starts
from an instruct model that already follows it)."""

from __future__ import annotations

import logging
import random

from cluster.learner_group import LearnerGroup
from cluster.prompts import PromptItem
from embodied_data.records import Record
from learner.batch import Sample

log = logging.getLogger(__name__)


def target_text(record: Record) -> str:
    """A well-formed completion for `record`: a short thinking that names the answer, then the answer."""
    # Short on purpose: the warm-up teaches the shape; GRPO is left to find the answers.
    if record.is_numeric:
        answer = f"{float(record.answer):g}"
        think = f"I estimate {answer}."
    else:
        answer = str(record.answer)
        think = f"{record.choices[record.letters.index(answer)]} fits."
    return f"<think> {think} </think>\n<answer> {answer} </answer>"


def sft_warmup(learner: LearnerGroup, prompts: list[PromptItem], tokenizer, steps: int, prompts_per_step: int, lr: float, seed: int) -> list[float]:
    """Runs `steps` SFT steps on random batches of the training prompts, then makes the result the start of RL (KL
    reference and optimiser state); returns the NLL per target token of each step."""
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>")] if "<|im_end|>" in tokenizer.get_vocab() else [tokenizer.eos_token_id]
    targets = [tokenizer(target_text(p.record), add_special_tokens=False)["input_ids"] + eos for p in prompts]
    rng = random.Random(seed)
    losses = []
    for step in range(steps):
        picked = rng.sample(range(len(prompts)), min(prompts_per_step, len(prompts)))
        samples = [Sample(prompts[i].token_ids, targets[i], [0.0] * len(targets[i]), 0.0) for i in picked]
        losses.append(learner.sft_step(samples, lr))
        if step == 0 or (step + 1) % 10 == 0 or step + 1 == steps:
            log.info("SFT warm-up step %d/%d: NLL %.3f per target token", step + 1, steps, losses[-1])
    learner.restart_from_current_policy()
    return losses
