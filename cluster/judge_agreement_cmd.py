"""`embodied-r judge-agreement`: how often the consistency judge names the option a reasoning concludes
(rewards/judge_agreement.py), on a manifest's held-out split, with the letter stated and with the words only.

    embodied-r judge-agreement --judge smollm2-135m-instruct --config configs/learning.yaml \
        --data runs/learning/run/bench_data --max-records 60 --out agreement.json

The judge is built in this process (no Ray): `--judge` is any model reference (`tiny`, a folder, a hub id, a named
registry model; default: the config's models.judge), judged with the config's rewards.judge settings (engine, dtype,
batch size, max_think_tokens). The records are the split of `--data`, else of the config's data section (a synthetic
data set is rendered first if it is not there yet, as `train` does); each reasoning cites the record's ground-truth
caption where the manifest has one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

log = logging.getLogger("embodied_r.judge_agreement")



def load_records(cfg, manifest: str | None, split: str, max_records: int):
    """The RunData of `split`'s multiple-choice records of `manifest` (else the config's data), at most `max_records`
    of them (0: all) taken round-robin over the categories."""
    from cluster.data import load_run_data
    from cluster.evaluate import held_out_records, load_split, resolve_manifest

    path = resolve_manifest(manifest) if manifest else Path(load_run_data(cfg).manifest)
    data = load_split(path, split, 0)
    data.records = held_out_records([r for r in data.records if not r.is_numeric], max_records)
    if not data.records:
        raise ValueError(f"{path}: no multiple-choice records in split {split!r}")
    return data


def judge_path(cfg, ref: str, data) -> str:
    """`ref` resolved as a run resolves models.judge (a named model pulled, `tiny` built under run_dir/models)."""
    from cluster.data import tokenizer_corpus
    from cluster.models import UNUSED, prepare_models

    only_judge = dataclasses.replace(cfg, models=dataclasses.replace(cfg.models, policy=UNUSED, judge=ref, vlm=UNUSED))
    return prepare_models(only_judge, tokenizer_corpus(data)).judge


def run(cfg, judge_ref: str | None, manifest: str | None = None, split: str = "test", max_records: int = 0,
        seed: int = 0) -> dict:
    """Builds the judge and measures its agreement; returns what the JSON output holds (rewards.judge_agreement's
    result with the judge, the data and the timings)."""
    from rewards.judge import make_judge
    from rewards.judge_agreement import measure_agreement

    data = load_records(cfg, manifest, split, max_records)
    ref = judge_ref or cfg.models.judge
    path = judge_path(cfg, ref, data)
    judge = make_judge(path, dataclasses.replace(cfg.rewards.judge, enabled=True, model=path))
    started = time.perf_counter()
    result = measure_agreement(judge, data.records, data.gt_captions, seed=seed)
    return {
        "judge": ref, "judge_path": path, "engine": str(getattr(judge.engine, "value", judge.engine)),
        "manifest": data.manifest, "split": split, **result,
        "wall_s": {"load": judge.load_s, "judge": time.perf_counter() - started},
    }


def _run_from_args(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from cluster.config import load_config
    from embodied_data.atomic import write_text_atomically
    from rewards.judge_agreement import format_table

    if args.max_records < 0:
        raise ValueError(f"--max-records must be >= 0, got {args.max_records}")
    cfg = OmegaConf.to_object(load_config(args.config, list(args.overrides)))
    report = run(cfg, args.judge, args.data, args.split, args.max_records, args.seed)
    print(f"judge {report['judge']} ({report['engine']}), {report['records']} multiple-choice questions of split "
          f"{report['split']} of {report['manifest']}, seed {report['seed']}: agreement (agreed/judged)")
    print(format_table(report))
    rates = ", ".join(f"{form} {'-' if report[form] is None else format(report[form], '.3f')}" for form in ("letter", "words"))
    print(f"agreement: {rates}; judged in {report['wall_s']['judge']:.1f} s")
    if args.out:
        write_text_atomically(Path(args.out), json.dumps(report, indent=2))
        print(f"written: {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "judge-agreement",
        description="For each multiple-choice question of the split, the gold reasoning trace (citing the ground-truth "
        "caption) with its conclusion swapped for an option drawn at random (seeded), once stating the option's letter "
        "('... So the answer is: <text>. That is option X.') and once naming it by its words only. The judge reads "
        "each and names an option; agreement is the share naming the drawn option, per form and per category "
        "(failed judgements counted, left out of the rate). Prints the table; --out writes JSON with every item.",
        epilog="Example: embodied-r judge-agreement --judge smollm2-135m-instruct --config configs/learning.yaml "
        "--data runs/learning/run/bench_data --max-records 60 --out agreement.json. The judge runs in this process with the "
        "config's rewards.judge settings (engine, dtype, batch_size, max_think_tokens).",
    )
    parser.add_argument("--judge", default=None, metavar="MODEL_REF",
                        help="the judge: tiny, a model folder, a hub id or a named model (default: the config's models.judge)")
    parser.add_argument("--config", metavar="FILE", help="YAML config: data, models.judge, rewards.judge settings")
    parser.add_argument("--data", default=None, metavar="MANIFEST",
                        help="manifest.parquet or the folder holding it (default: the config's data section)")
    parser.add_argument("--split", default="test", help="the manifest split to measure on (default test; all: every split)")
    parser.add_argument("--max-records", type=int, default=0,
                        help="at most N multiple-choice questions, taken round-robin over the categories (default all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the drawn options (default 0)")
    parser.add_argument("--out", default=None, metavar="FILE.json", help="write the result (every item included) here")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. rewards.judge.batch_size=8 rewards.judge.dtype=bfloat16")
    parser.set_defaults(func=_run_from_args)
