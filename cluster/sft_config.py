"""The `sft` section of the config (SFTConfig) and its check: what `embodied-r sft` and the learning benchmark's SFT phase
run. Imports nothing of the SFT run itself, so cluster/config.py can hold it in the one config tree."""

from __future__ import annotations

import math
from dataclasses import dataclass

from configtypes import bounded, choice, violations

TRACE_SOURCES = ("auto", "video_text")
TraceSource = choice("TraceSource", TRACE_SOURCES, __name__)


@dataclass
class SFTConfig:
    steps: int = 100  # optimiser steps (ignored when epochs > 0)
    epochs: int = bounded(0, ge=0)  # > 0: this many passes over the traces instead: steps = ceil(epochs * traces / prompts_per_step)
    prompts_per_step: int = bounded(8, ge=1)  # traces per optimiser step
    lr: float = bounded(1e-5, gt=0)
    warmup_ratio: float = bounded(0.0, ge=0, lt=1)  # linear warm-up over this share of the steps, then constant
    out_dir: str = "${run_dir}/sft"  # gets policy/ (HF format), sft_metrics.jsonl, traces.jsonl, sft_state.json
    # auto: cite the manifest's ground-truth captions where it has them (synthetic data), else the prompt's video text;
    # video_text: always cite the text the prompt shows (the VLM's description under perception.source=vlm).
    trace_source: TraceSource = TraceSource.auto
    # Also teach the policy the consistency judge's task, so that the SFT checkpoint can be `models.judge` (a trained
    # judge instead of random weights): per multiple-choice trace, one judge prompt whose reasoning concludes an option
    # drawn at random (the right one or not), with that option's letter as the target. See judge_trace.
    judge_traces: bool = False
    # Steps of option-lookup drills (cluster/lookup_warmup.py) before the traces, at the same lr: they drill a policy
    # from random weights (the tiny models) in copying an option's letter from its words, which an instruct model
    # brings. Measured on configs/learning.yaml: learnt in the drills' own form after ~600 steps, not yet in the traces.
    lookup_steps: int = bounded(0, ge=0)
    lookup_drills_per_step: int = bounded(64, ge=1)
    progress: bool = True


def num_steps(cfg: SFTConfig, num_traces: int) -> int:
    if cfg.epochs > 0:
        return max(1, math.ceil(cfg.epochs * num_traces / cfg.prompts_per_step))
    return cfg.steps


def validate_sft(cfg: SFTConfig) -> None:
    """The sft section on its own (`embodied-r sft`): the bounds and choices declared on its fields, and steps."""
    problems = []
    if cfg.steps < 1 and cfg.epochs < 1:
        problems.append("sft.steps (or sft.epochs) must be >= 1")
    problems += [problem for _, problem in violations(SFTConfig, lambda key: getattr(cfg, key), prefix="sft.")]
    if problems:
        raise ValueError("invalid sft config:\n  " + "\n  ".join(problems))
