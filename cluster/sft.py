"""Supervised fine-tuning of the policy on reasoning traces (the training prompt -> a `<think>` citing the video and
concluding the answer, then `<answer>`) with the DeepSpeed learner, ending in an HF checkpoint that GRPO starts from.

`embodied-r sft --config configs/tiny.yaml sft.steps=50` writes <sft.out_dir>/policy; then
`embodied-r train --config configs/tiny.yaml models.policy=<sft.out_dir>/policy trainer.sft_warmup_steps=0`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cluster.sft_config import SFTConfig, num_steps, validate_sft
from cluster.supervised import end_of_turn, supervised_steps

log = logging.getLogger("embodied_r.sft")


@dataclass
class TraceItem:
    record_id: str
    prompt_ids: list[int]
    target_ids: list[int]  # the trace's tokens and the end-of-turn token
    text: str


def build_traces(prompts, video_texts: dict[str, str], gt_captions: dict[str, str], tokenizer, trace_source: str,
                 judge_traces: bool = False, seed: int = 0) -> list[TraceItem]:
    """One trace per prompt; the text it cites is the record's ground-truth caption (trace_source=auto, where there is
    one) or the video text its prompt shows. With `judge_traces`, one judge trace (judge_trace) per multiple-choice
    prompt follows its trace."""
    import random

    from embodied_data.synthetic.traces import reasoning_trace

    end = end_of_turn(tokenizer)
    rng = random.Random(seed)
    items = []
    for prompt in prompts:
        record = prompt.record
        cited = gt_captions.get(record.video) if trace_source == "auto" else None
        text = reasoning_trace(record, cited if cited is not None else video_texts.get(record.id))
        target = list(tokenizer(text, add_special_tokens=False)["input_ids"]) + end
        items.append(TraceItem(record.id, list(prompt.token_ids), target, text))
        if judge_traces and not record.is_numeric:
            items.append(judge_trace(record, text, tokenizer, end, rng))
    return items


def judge_trace(record, trace: str, tokenizer, end: list[int], rng) -> TraceItem:
    """The consistency judge's task on `record`: `trace`'s reasoning with its conclusion swapped for an option drawn at
    random (half the time without the sentence naming its letter, so the option's words have to be matched to the
    choices), in the judge's own prompt; the target is that option's letter. The judge so learns to read which option
    a reasoning leads to, not which one is right: a policy's reasoning is then judged on what it says."""
    from embodied_data.synthetic.traces import conclusion
    from engines.loading import encode
    from rewards.answer import extract_think
    from rewards.judge import JudgeRequest, judge_prompt

    think = (extract_think(trace) or "").strip().removesuffix(conclusion(record, str(record.answer))).rstrip()
    letter = record.letters[rng.randrange(len(record.letters))]
    think += " " + conclusion(record, letter, with_letter=rng.random() < 0.5)
    # The judge's prompt tokens exactly as Judge.prompt_token_ids makes them, so training and scoring see the same input.
    prompt_ids = encode(tokenizer, judge_prompt(tokenizer, JudgeRequest(record.question, tuple(record.choices), think), think))
    target = list(tokenizer(letter, add_special_tokens=False)["input_ids"]) + end
    return TraceItem(f"{record.id}#judge", prompt_ids, target, f"{think} -> {letter}")


def run_sft(cfg) -> Path:
    """Runs SFT for a TrainConfig object `cfg` (with its `sft` section); returns the folder of the HF policy."""
    import dataclasses

    from actors import reserve_pool
    from cluster.data import load_run_data, tokenizer_corpus
    from cluster.learner_group import LearnerGroup
    from cluster.lookup_warmup import run_lookup_warmup
    from cluster.models import prepare_models
    from cluster.perceive import describe_videos
    from cluster.prompts import build_prompt_table
    from cluster.runtime import start_ray
    from embodied_data.atomic import write_text_atomically
    from transformers import AutoTokenizer

    sft_cfg: SFTConfig = cfg.sft
    validate_sft(sft_cfg)
    out = Path(sft_cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.namespace)

    # The same data, models and perception path as `train`, so the prompts are exactly the ones GRPO will see (and the
    # tiny models, tokenizer and description cache under run_dir are shared with a later `train` in the same run_dir).
    data = load_run_data(cfg)
    models = prepare_models(cfg, tokenizer_corpus(data))
    video_texts = describe_videos(cfg, data, models.vlm)
    prompts = build_prompt_table(cfg, data.records, video_texts, models.policy)
    tokenizer = AutoTokenizer.from_pretrained(models.policy)
    traces = build_traces(prompts, video_texts, data.gt_captions, tokenizer, sft_cfg.trace_source, sft_cfg.judge_traces,
                          cfg.trainer.seed)
    write_text_atomically(
        out / "traces.jsonl", "".join(json.dumps({"id": t.record_id, "trace": t.text}) + "\n" for t in traces)
    )
    steps = num_steps(sft_cfg, len(traces))
    cited = "ground-truth captions" if sft_cfg.trace_source == "auto" and data.gt_captions else "the prompts' video texts"
    log.info("SFT: %d traces citing %s, %d steps of %d traces, lr %g", len(traces), cited, steps, sft_cfg.prompts_per_step, sft_cfg.lr)

    # SFT needs no KL reference: beta 0 keeps the learner from loading a second copy of the model.
    learner_cfg = dataclasses.replace(cfg.learner, grpo=dataclasses.replace(cfg.learner.grpo, beta=0.0))
    learner_pool = reserve_pool("learner", learner_cfg.num_replicas, learner_cfg.num_cpus_per_replica, learner_cfg.num_gpus_per_replica)
    learner = LearnerGroup(learner_cfg, models.policy, learner_pool, total_steps=steps, seed=cfg.trainer.seed)
    log.info(
        "learner: %d rank(s), DeepSpeed %s ZeRO-%d, %s on %s, %s", learner.info["world_size"], learner.info["deepspeed"],
        learner.info["zero_stage"], learner.info["backend"], learner.info["device"], learner.info["dtype"],
    )
    try:
        if sft_cfg.lookup_steps:
            run_lookup_warmup(learner, tokenizer, data.records, sft_cfg, cfg.trainer.seed, out)
        nll = train_on_traces(learner, traces, steps, sft_cfg, cfg.trainer.seed, out)
        policy = save_policy(learner, out, {"sft_steps": steps, "lookup_steps": sft_cfg.lookup_steps})
    finally:
        learner.shutdown()
        learner_pool.release()
    write_text_atomically(out / "sft_state.json", json.dumps({
        "policy": str(policy), "base_policy": models.policy, "steps": steps, "lookup_steps": sft_cfg.lookup_steps,
        "traces": len(traces), "trace_source": cited,
        "nll_first": nll[0], "nll_last": nll[-1],
    }, indent=2))  # written last: its presence marks a complete SFT run
    log.info("SFT done: NLL %.3f -> %.3f per target token; policy in %s", nll[0], nll[-1], policy)
    return policy


def train_on_traces(learner, traces: list[TraceItem], steps: int, sft_cfg: SFTConfig, seed: int, out: Path) -> list[float]:
    """`steps` supervised steps on the traces, a seeded shuffle per epoch; one row per step in <out>/sft_metrics.jsonl.
    Returns the NLL per step."""
    from cluster.data import EpochSampler
    from learner.batch import Sample

    sampler = EpochSampler(len(traces), seed)

    def next_batch():
        indices, epoch = sampler.take(min(sft_cfg.prompts_per_step, len(traces)))
        samples = [Sample(traces[i].prompt_ids, traces[i].target_ids, [0.0] * len(traces[i].target_ids), 0.0) for i in indices]
        return samples, {"epoch": epoch}

    return supervised_steps(learner, next_batch, steps, sft_cfg.lr, sft_cfg.warmup_ratio, out / "sft_metrics.jsonl",
                            "SFT", sft_cfg.progress)


def save_policy(learner, out: Path, client_state: dict) -> Path:
    """Saves through the learner's checkpoint (atomic, ZeRO-3 gathered) into a side folder, then moves its HF policy to
    <out>/policy; the DeepSpeed optimiser state is dropped (SFT does not resume, and GRPO starts with fresh moments)."""
    staging = out / ".checkpoint"
    learner.save_checkpoint(str(staging), client_state=client_state)
    target = out / "policy"
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging / "policy", target)
    shutil.rmtree(staging)
    return target


def sft(config) -> Path:
    """Runs SFT for an OmegaConf config (cluster.config.load_config); the run's log goes to <out_dir>/sft.log too."""
    from omegaconf import OmegaConf

    from cluster.config import resolved_yaml
    from cluster.runtime import run_log
    from embodied_data.atomic import write_text_atomically

    out = Path(config.sft.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out / "config.yaml", resolved_yaml(config))
    with run_log(out / "sft.log"):
        return run_sft(OmegaConf.to_object(config))


def _run_from_args(args: argparse.Namespace) -> int:
    from cluster.config import load_config

    cfg = load_config(args.config, args.overrides)
    policy = sft(cfg)
    print(f"SFT finished: policy in {policy} (start GRPO from it with models.policy={policy}); "
          f"NLL per step in {Path(cfg.sft.out_dir) / 'sft_metrics.jsonl'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sft",
        description="Train the policy on (prompt, <think> citing the video and concluding the answer, <answer>) traces "
        "with the DeepSpeed learner. Data, models and perception come from the same config as `train`. Writes "
        "sft.out_dir/policy (HF format), sft_metrics.jsonl (NLL per step), traces.jsonl and sft_state.json.",
        epilog="Example: embodied-r sft --config configs/tiny.yaml run_dir=runs/a sft.steps=50 sft.lr=3e-3, then "
        "embodied-r train --config configs/tiny.yaml run_dir=runs/a models.policy=runs/a/sft/policy "
        "trainer.sft_warmup_steps=0. Knobs: sft.steps or sft.epochs, sft.prompts_per_step, sft.lr, sft.warmup_ratio, "
        "sft.out_dir, sft.trace_source (auto | video_text), learner.* (ranks, ZeRO stage, micro-batch).",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML config (e.g. configs/tiny.yaml); defaults to the built-in schema")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides in OmegaConf dot notation, e.g. sft.steps=50 sft.out_dir=runs/a/sft")
    parser.set_defaults(func=_run_from_args)
