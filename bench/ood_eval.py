"""Out-of-distribution check: policy checkpoints trained on the synthetic benchmark, evaluated on the real VSI-Bench
room layouts' own geometric questions (`embodied-r data real-layouts`), beside the best constant answer per category.

None of these questions was trained on, so every split of the real-layout manifest is evaluated (run_eval's split
"all"). Perception is the renderer's ground-truth captioner, as in bench/learning_run.py: what is measured is the
reasoning policy alone. The constant answer is bench.learning_run.best_constant_answer over exactly the questions
evaluated: the score a policy reaches that ignores the question.

    python -m bench.ood_eval --config runs/learning/run/config.yaml --checkpoint sft=runs/learning/run/sft/policy \
        --checkpoint rl=runs/learning/run/checkpoints/step_000060 --out runs/ood --scenes 20

Writes to --out: data/ (the real-layout dataset, reused when complete), eval_<name>/ (run_eval's outputs per
checkpoint) and ood.json (per category n, <name>_accuracy, <name>_distinct_answers, constant_accuracy and
constant_answer; the macro means).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path[:1] != [str(REPO)]:  # first: the script's own folder (bench/, with its engines.py) must not shadow
    sys.path.insert(0, str(REPO))  # the project's packages, even when PYTHONPATH already lists the repo

from omegaconf import DictConfig, OmegaConf

from bench.evaluation import best_constant_answer, distinct_answers, evaluate_checkpoint, mean_of_present
from embodied_data.atomic import write_text_atomically

log = logging.getLogger("embodied_r.bench.ood")

# The captions come from the renderer's ground truth, not the pixels: small frames render fast and change nothing.
FRAME_SIZE = 96
EVERY_SPLIT = "all"  # run_eval's (records_of_split's) name for every record of the manifest
ALL_SPLITS = "all"  # the one split name the records get for best_constant_answer, which scores a single split
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # a checkpoint's name is a folder name (eval_<name>) and a JSON key prefix


def real_layout_manifest(out_dir: Path, scenes: int | None, seed: int, size: int = FRAME_SIZE,
                         realdata_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Renders (or reuses, when complete with the same parameters) the real-layout dataset in out_dir/data and
    returns its manifest; the questions left out and why are logged."""
    from embodied_data.synthetic.dataset import MANIFEST_NAME
    from embodied_data.synthetic.real_layout import generate_real_layouts

    data_dir = out_dir / "data"
    records, report = generate_real_layouts(data_dir, num_scenes=scenes, seed=seed, size=size,
                                            realdata_dir=realdata_dir, progress=progress)
    log.info("real layouts: %d questions in %s; not attached: %s", len(records), data_dir, report.summary())
    return data_dir / MANIFEST_NAME


def ood_config(cfg, manifest: Path):
    """The run's TrainConfig (OmegaConf, or its object) set to read `manifest` with its ground-truth captions; returns
    the TrainConfig object run_eval takes. The rest (sampling, rollout, ray) stays the run's."""
    from cluster.config import validate

    merged = OmegaConf.merge(_as_dictconfig(cfg), OmegaConf.from_dotlist([
        "data.source=manifest", f"data.manifest={manifest}", "perception.source=ground_truth",
    ]))
    validate(merged)
    return OmegaConf.to_object(merged)


def _as_dictconfig(cfg) -> DictConfig:
    return cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg)


def read_samples(eval_dir: Path) -> list[dict]:
    """eval_samples.jsonl of one evaluation: record_id, category, accuracy, ... per answer."""
    path = eval_dir / "eval_samples.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {eval_dir} holds no finished evaluation")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ood_summary(records, eval_dirs: dict[str, Path]) -> dict:
    """Per category, over the questions every checkpoint answered (the same set unless a checkpoint's tokenizer left a
    prompt out): n, <name>_accuracy (the mean over those questions; numeric: MRA), <name>_distinct_answers,
    constant_accuracy and constant_answer (best_constant_answer over exactly those questions); and the macro means."""
    samples = {name: read_samples(folder) for name, folder in eval_dirs.items()}
    answered = {name: {s["record_id"] for s in rows} for name, rows in samples.items()}
    common = set.intersection(*answered.values())
    if not common:
        raise ValueError(f"the evaluations {sorted(eval_dirs)} have no question in common")
    for name, ids in answered.items():
        if ids != common:
            log.warning("%s answered %d questions the other checkpoints did not; they are left out of ood.json",
                        name, len(ids - common))
    # best_constant_answer scores one split: here every split is one out-of-distribution set.
    pooled = [dataclasses.replace(r, split=ALL_SPLITS) for r in records]
    constant = best_constant_answer(pooled, ALL_SPLITS, common)
    accuracy: dict[str, dict[str, list[float]]] = {name: collections.defaultdict(list) for name in samples}
    for name, rows in samples.items():
        for s in rows:
            if s["record_id"] in common:
                accuracy[name][s["category"]].append(float(s["accuracy"]))
    answers = {name: distinct_answers(folder) for name, folder in eval_dirs.items()}
    kinds = {r.category: ("numeric" if r.is_numeric else "multiple_choice") for r in records}
    categories = {}
    for category, reference in constant.items():
        row = {"n": reference["n"], "kind": kinds[category]}
        for name in samples:
            scores = accuracy[name][category]
            row[f"{name}_accuracy"] = sum(scores) / len(scores)
        row["constant_accuracy"], row["constant_answer"] = reference["accuracy"], reference["answer"]
        for name in samples:
            row[f"{name}_distinct_answers"] = answers[name].get(category)
        categories[category] = row
    macro = {f"{name}_accuracy": mean_of_present(c[f"{name}_accuracy"] for c in categories.values()) for name in samples}
    macro["constant_accuracy"] = mean_of_present(c["constant_accuracy"] for c in categories.values())
    for name in samples:
        macro[f"{name}_over_constant_points"] = 100.0 * (macro[f"{name}_accuracy"] - macro["constant_accuracy"])
    return {"questions": len(common), "categories": categories, "macro": macro}


def ood_eval(cfg, checkpoints: dict[str, str], out_dir: Path, scenes: int | None, seed: int = 0, workers: int = 2,
             max_records: int = 0) -> dict:
    """Evaluates each named checkpoint ({"sft": path, "rl": path}) on every question of `scenes` real VSI-Bench
    layouts (None: all 288; the first `max_records` in manifest order when > 0) under the run's TrainConfig `cfg`, and
    writes and returns out_dir/ood.json: per category n, one accuracy per checkpoint, the best constant answer and
    its accuracy, and each checkpoint's number of distinct answers."""
    from embodied_data.manifest import read_manifest

    if not checkpoints:
        raise ValueError("no checkpoint to evaluate")
    bad = [name for name in checkpoints if not NAME.match(name)]
    if bad:
        raise ValueError(f"checkpoint names {bad}: use letters, digits, '_', '.' or '-' (they name eval_<name>/)")
    out_dir = Path(out_dir)
    progress = bool(_as_dictconfig(cfg).trainer.progress)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    manifest = real_layout_manifest(out_dir, scenes, seed, progress=progress)
    timings["data"] = time.perf_counter() - started
    cfg_object = ood_config(cfg, manifest)
    reports, eval_dirs = {}, {}
    for name, checkpoint in checkpoints.items():
        phase = time.perf_counter()
        eval_dirs[name] = out_dir / f"eval_{name}"
        reports[name] = evaluate_checkpoint(cfg_object, checkpoint, manifest, eval_dirs[name], EVERY_SPLIT, workers,
                                            max_records, progress=progress)
        timings[f"eval_{name}"] = time.perf_counter() - phase
    records, _ = read_manifest(manifest)
    summary = ood_summary(records, eval_dirs)
    timings["total"] = time.perf_counter() - started
    by_split = collections.Counter(r.split for r in records)
    result = {
        "manifest": str(manifest),
        "scenes": len({r.scene for r in records}),
        "seed": seed,
        "frame_size": FRAME_SIZE,
        "split": EVERY_SPLIT,  # every split: no real-layout question was trained on
        "manifest_questions": {"total": len(records), **dict(sorted(by_split.items()))},
        "max_records": max_records,
        "checkpoints": {name: reports[name]["checkpoint"] for name in checkpoints},
        "questions_without_prompt": {name: reports[name]["questions_without_prompt"] for name in checkpoints},
        **summary,
        "wall_s": timings,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out_dir / "ood.json", json.dumps(result, indent=2))
    return result


def format_table(result: dict) -> str:
    """One line per category: n, each checkpoint's accuracy, the constant answer's accuracy (and the answer), and each
    checkpoint's distinct answers; then the macro line."""
    names = list(result["checkpoints"])
    header = ["category", "n", *(f"{n} acc" for n in names), "constant acc", "constant", *(f"{n} answers" for n in names)]
    lines = [[category, str(row["n"]), *(f"{row[f'{n}_accuracy']:.3f}" for n in names), f"{row['constant_accuracy']:.3f}",
              str(row["constant_answer"]), *(str(row[f"{n}_distinct_answers"]) for n in names)]
             for category, row in result["categories"].items()]
    macro = result["macro"]
    lines.append(["macro (mean of categories)", str(result["questions"]), *(f"{macro[f'{n}_accuracy']:.3f}" for n in names),
                  f"{macro['constant_accuracy']:.3f}", "", *("" for _ in names)])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def render(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(render(header))
    return "\n".join([render(header), rule, *(render(line) for line in lines[:-1]), rule, render(lines[-1])])


# ---- command line ---------------------------------------------------------------------------------------------------
def load_run_config(config_file: str, overrides: list[str], out_dir: Path) -> DictConfig:
    """A run's config.yaml (or a bench config such as configs/learning.yaml, its `bench:` section dropped: it is no
    TrainConfig key) with `key=value` overrides, through cluster.config.load_config."""
    from cluster.config import load_config

    raw = OmegaConf.load(config_file)
    if "bench" in raw:
        raw.pop("bench")
        out_dir.mkdir(parents=True, exist_ok=True)
        config_file = str(out_dir / "base_config.yaml")
        write_text_atomically(Path(config_file), OmegaConf.to_yaml(raw))
    return load_config(config_file, overrides)


def parse_checkpoint(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--checkpoint wants NAME=PATH, got {text!r}")
    return name, path


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.ood_eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, metavar="FILE", help="the run's config.yaml (TrainConfig YAML)")
    parser.add_argument("--checkpoint", required=True, action="append", type=parse_checkpoint, metavar="NAME=PATH",
                        help="a policy checkpoint to evaluate, named (repeat: --checkpoint sft=... --checkpoint rl=...)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder: data/, eval_<name>/, ood.json")
    parser.add_argument("--scenes", type=int, default=None, help="real layouts to render (default: all 288)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scene order and rendering (default 0)")
    parser.add_argument("--workers", type=int, default=2, help="rollout workers generating the answers (default 2)")
    parser.add_argument("--max-records", type=int, default=0, help="evaluate only the first N questions (default all)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. sampling.max_new_tokens=128")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    checkpoints = dict(args.checkpoint)
    if len(checkpoints) != len(args.checkpoint):
        raise SystemExit("--checkpoint: each NAME once")
    out = Path(args.out)
    cfg = load_run_config(args.config, list(args.overrides), out)
    result = ood_eval(cfg, checkpoints, out, args.scenes, seed=args.seed, workers=args.workers,
                      max_records=args.max_records)
    print(format_table(result))
    print("acc: greedy accuracy (numeric: MRA) on the real layouts' questions, every split; constant: the best single "
          "answer over the same questions; answers: distinct greedy answers")
    print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result["wall_s"].items()))
    print(f"written: {out / 'ood.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
