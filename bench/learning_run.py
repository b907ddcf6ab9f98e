"""Does GRPO teach the policy anything? SFT a tiny random-weight policy on the synthetic benchmark, run GRPO from the
SFT checkpoint, and compare held-out-scene accuracy per category before RL (the SFT checkpoint) and after (the final
GRPO checkpoint), with the training reward curves drawn to PNG.

Perception is the synthetic world's ground-truth captioner (perception.source=ground_truth): no VLM, so what is
measured is the reasoning policy alone. Everything runs through the project's own Python APIs: cluster.sft.sft,
cluster.driver.train, cluster.evaluate.run_eval.

    python bench/learning_run.py --out runs/learning                       # configs/learning.yaml, ~15 min on 2 cores
    python bench/learning_run.py --out runs/l2 trainer.steps=40 sft.steps=60   # key=value overrides, as for `train`

The config is a TrainConfig YAML plus a `bench:` section read only here (which categories to keep, how to evaluate).
Writes to --out: learning.json (everything measured), reward_curves.png, accuracy_before_after.png, and the run
itself under run/ (data, sft/, metrics.jsonl, checkpoints/, eval_sft/, eval_rl/).

The report also gives, per category, a no-model reference: the score of answering from the training split's answers
alone (multiple choice: the option wording most often correct in training, the question's own words removed; numeric:
the median training answer to the same question). It tells how much a policy can reach from answer priors alone,
without reading the video text.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path[:1] != [str(REPO)]:  # first: the script's own folder (bench/, with its engines.py) must not shadow
    sys.path.insert(0, str(REPO))  # the project's packages, even when PYTHONPATH already lists the repo

from omegaconf import OmegaConf

from cluster.plots import before_after_bars, moving_average, reward_curves  # noqa: F401 (moving_average: the curves' trailing mean, bench.moving_average)
from bench.evaluation import best_constant_answer, distinct_answers, evaluate_checkpoint, mean_of_present, shutdown_ray  # noqa: F401 (re-exported: bench.ablations, tests)
from embodied_data.atomic import write_text_atomically

log = logging.getLogger("embodied_r.bench.learning")

DEFAULT_CONFIG = REPO / "configs" / "learning.yaml"
CURVE_METRICS = ("reward/total", "reward/accuracy", "reward/format")
TARGET_GAIN_POINTS = 10.0  # the goal of this benchmark: RL adds this many accuracy points over its SFT start
FORMAT_NEAR_ONE = 0.9  # "the format reward ends near 1": the mean of the last steps' reward/format reaches this
# The benchmark measures reasoning, not answer priors: held-out RL accuracy above the best constant answer's by this
# many points, macro-averaged over at least this many categories (summary.json's target).
TARGET_OVER_CONSTANT_POINTS = 10.0
MIN_TARGET_CATEGORIES = 4


BENCH_JUDGES = ("start", "config", "none")


@dataclass
class BenchSettings:
    """The `bench:` section of the config: what this script does beyond one `train` run."""

    categories: list[str] = field(default_factory=list)  # records (train and test) kept; empty: every category
    eval_split: str = "test"  # held-out scenes: the split is by scene
    eval_workers: int = 2  # rollout workers generating the evaluation answers (greedy, one per question)
    eval_max_records: int = 0  # 0: the whole split
    curve_window: int = 10  # moving-average window of the reward curves, and the "first/last steps" of the summary
    # RL against SFT at equal compute from the same start: after GRPO, SFT continues from the start checkpoint for as
    # many steps as fit in GRPO's wall time (at the start phase's measured seconds per SFT step). False: no SFT arm.
    sft_equal_compute: bool = True
    # The consistency judge of the GRPO phase and of the evaluations: "start" is the SFT start checkpoint (trained on
    # the judge's task too when sft.judge_traces), "config" keeps models.judge as the config says, "none" measures no
    # consistency.
    judge: str = "start"
    ood_scenes: int = 0  # > 0: also evaluate every checkpoint on this many real VSI-Bench layouts (bench/ood_eval.py)
    # An SFT start to reuse (the policy folder of an earlier run's <out>/run/sft/policy, run with the same data and
    # sft settings): the SFT phase is skipped, e.g. for ablations of the GRPO phase that share one start. "": run SFT.
    start_from: str = ""
    # The judge's agreement on "which option does this reasoning conclude?" (rewards/judge_agreement.py), on this many
    # multiple-choice questions of eval_split (round-robin over the categories), letter stated and words only; 0: not
    # measured. Reported as summary.json's judge_agreement.
    judge_agreement_records: int = 100


# ---- config ---------------------------------------------------------------------------------------------------------
def load_bench_config(config_file: str | Path, overrides: list[str], run_dir: Path) -> tuple[str, BenchSettings, list[str]]:
    """Splits the YAML into the TrainConfig part (written to <run_dir>/base_config.yaml for cluster.config.load_config)
    and the bench settings; `bench.*` overrides go to the latter, the rest stay overrides of the TrainConfig."""
    raw = OmegaConf.load(config_file)
    bench_raw = raw.pop("bench", None) or {}
    bench_overrides = [o for o in overrides if o.startswith("bench.")]
    train_overrides = [o for o in overrides if not o.startswith("bench.")]
    schema = OmegaConf.structured(BenchSettings)
    merged = OmegaConf.merge(schema, bench_raw, OmegaConf.from_dotlist([o[len("bench."):] for o in bench_overrides]))
    settings: BenchSettings = OmegaConf.to_object(merged)
    if settings.judge not in BENCH_JUDGES:
        raise ValueError(f"bench.judge must be one of {', '.join(BENCH_JUDGES)}; got {settings.judge!r}")
    run_dir.mkdir(parents=True, exist_ok=True)
    base = run_dir / "base_config.yaml"
    write_text_atomically(base, OmegaConf.to_yaml(raw))
    return str(base), settings, [f"run_dir={run_dir}", *train_overrides]


# ---- data -----------------------------------------------------------------------------------------------------------
def prepare_manifest(cfg, categories: list[str], out_dir: Path) -> tuple[Path, dict]:
    """Renders the synthetic dataset of `cfg.data.synthetic` (reused when complete) and writes the manifest the run
    uses: every record, or only those of `categories`, ground-truth captions kept. Returns its path and the counts."""
    from embodied_data.manifest import (
        GT_CAPTION_COLUMN,
        read_gt_captions,
        read_manifest,
        write_manifest,
    )
    from embodied_data.synthetic.dataset import MANIFEST_NAME, generate_dataset

    syn = cfg.data.synthetic
    generate_dataset(syn.out_dir, num_scenes=syn.scenes, seed=syn.seed, questions_per_scene=syn.questions_per_scene,
                     num_frames=syn.frames, fps=syn.fps, size=syn.size)
    source = Path(syn.out_dir) / MANIFEST_NAME
    records, skipped = read_manifest(source)
    if len(skipped):
        log.warning("%s: %s", source, skipped.summary())
    present = sorted({r.category for r in records})
    unknown = sorted(set(categories) - set(present))
    if unknown:
        raise ValueError(f"bench.categories names {unknown}, which the dataset {source} does not have (it has {present})")
    kept = [r for r in records if not categories or r.category in categories]
    captions = read_gt_captions(source)
    manifest = out_dir / "bench_data" / MANIFEST_NAME
    write_manifest(kept, manifest, extra_columns={GT_CAPTION_COLUMN: [captions[r.video] for r in kept]})
    counts = collections.Counter((r.category, r.split) for r in kept)
    table = {c: {s: counts[(c, s)] for s in ("train", "val", "test")} for c in sorted({r.category for r in kept})}
    return manifest, table


def option_pattern(option: str, question: str) -> str:
    """An option's wording without the words of its question: 'The black tv is on my left.' asked about the black tv
    reads 'on my left', the same for every object, so answer priors can be counted across questions."""
    asked = set(re.findall(r"[a-z-]+", question.lower()))
    return " ".join(w for w in re.findall(r"[a-z-]+", option.lower()) if w not in asked)


def answer_prior_baseline(records, split: str) -> dict[str, float]:
    """Per category, the score on `split` of answering from the training split's answers alone, never reading the
    video text. Multiple choice: the option whose pattern was most often correct in training (ties: the expected score
    of a uniform pick among them). Numeric: the median training answer to the same question text (else the category's
    median), scored with MRA as the evaluation scores it."""
    from rewards.accuracy import accuracy_reward

    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    numbers: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for r in records:
        if r.split != "train":
            continue
        if r.is_numeric:
            numbers[(r.category, r.question)].append(float(r.answer))
            numbers[(r.category, "")].append(float(r.answer))
        else:
            counts[r.category][option_pattern(r.choices[r.letters.index(str(r.answer))], r.question)] += 1
    scores: dict[str, list[float]] = collections.defaultdict(list)
    for r in records:
        if r.split != split:
            continue
        if r.is_numeric:
            seen = numbers.get((r.category, r.question)) or numbers.get((r.category, ""))
            if seen:
                guess = statistics.median(seen)
                scores[r.category].append(accuracy_reward(f"<think> </think><answer> {guess:g} </answer>", r))
            continue
        seen = [counts[r.category][option_pattern(o, r.question)] for o in r.choices]
        best = [i for i, n in enumerate(seen) if n == max(seen)]
        scores[r.category].append((r.letters.index(str(r.answer)) in best) / len(best))
    return {c: sum(v) / len(v) for c, v in sorted(scores.items())}


def summary_by_category(table: list[dict], constant: dict[str, dict], evals: dict[str, dict | None] | None = None,
                        answers: dict[str, dict[str, int]] | None = None) -> dict:
    """summary.json: per category n, sft_accuracy, rl_accuracy, constant_accuracy (best_constant_answer) and
    distinct_answers (the greedy RL policy's), and the macro means with the target the issue sets (RL above the best
    constant answer by TARGET_OVER_CONSTANT_POINTS, macro-averaged over at least MIN_TARGET_CATEGORIES categories, with
    answers that vary with the question).

    `evals` holds the evaluations by arm: "start" (the SFT checkpoint both arms start from), "rl" and "sft" (SFT
    continued at GRPO's compute). sft_accuracy is the "sft" arm's when it ran, else the start's; start_accuracy is
    always the start's. Each arm's consistency rate under the judge is given where a judge ran."""
    evals = evals or {}
    answers = answers or {}
    by_arm = {arm: {r["category"]: r for r in result["categories"]} for arm, result in evals.items() if result}
    categories = {}
    for row in table:
        if row["category"] in ("overall", "macro (mean of categories)"):
            continue
        category = row["category"]
        reference = constant.get(category, {})
        sft_arm = by_arm.get("sft", {}).get(category)
        entry = {
            "n": row["questions"], "start_accuracy": row["before"],
            "sft_accuracy": sft_arm["accuracy"] if sft_arm else row["before"], "rl_accuracy": row["after"],
            "constant_accuracy": reference.get("accuracy"), "constant_answer": reference.get("answer"),
            "distinct_answers": row["distinct_answers_after"],
            "sft_distinct_answers": answers.get("sft", {}).get(category, row.get("distinct_answers_before")),
        }
        for arm in ("start", "sft", "rl"):
            rate = by_arm.get(arm, {}).get(category, {}).get("consistency_rate")
            if rate is not None:
                entry[f"{arm}_consistency_rate"] = rate
        categories[category] = entry
    scored = [c for c in categories.values() if c["rl_accuracy"] is not None and c["constant_accuracy"] is not None]
    margin = 100.0 * sum(c["rl_accuracy"] - c["constant_accuracy"] for c in scored) / len(scored) if scored else None
    varied = all((c["distinct_answers"] or 0) > 1 for c in scored)
    return {
        "categories": categories,
        "macro": {
            "start_accuracy": mean_of_present(c["start_accuracy"] for c in scored),
            "sft_accuracy": mean_of_present(c["sft_accuracy"] for c in scored),
            "rl_accuracy": mean_of_present(c["rl_accuracy"] for c in scored),
            "constant_accuracy": mean_of_present(c["constant_accuracy"] for c in scored),
            "rl_over_constant_points": margin,
            "sft_over_constant_points": 100.0 * mean_of_present(c["sft_accuracy"] - c["constant_accuracy"] for c in scored)
            if scored else None,
        },
        "sft_arm": "equal compute from the start" if "sft" in by_arm else "the start checkpoint (no SFT arm ran)",
        "target": {
            "rl_over_constant_goal_points": TARGET_OVER_CONSTANT_POINTS,
            "categories": len(scored), "min_categories": MIN_TARGET_CATEGORIES,
            "answers_vary": varied,
            "met": margin is not None and margin >= TARGET_OVER_CONSTANT_POINTS and len(scored) >= MIN_TARGET_CATEGORIES
            and varied,
        },
    }


# ---- phases ---------------------------------------------------------------------------------------------------------
def measure_judge_agreement(cfg_object, judge_ref: str, manifest: Path, split: str, max_records: int, seed: int = 0) -> dict:
    """The agreement of the judge `judge_ref` (resolved as the run resolves models.judge: `tiny` is the run's own) on
    `max_records` multiple-choice questions of `split`: the command's result (cluster/judge_agreement_cmd.py), without
    its per-item list."""
    from cluster.judge_agreement_cmd import run as judge_agreement

    result = judge_agreement(cfg_object, judge_ref, str(manifest), split, max_records, seed)
    return {k: v for k, v in result.items() if k != "items"}


def evaluate(cfg, checkpoint: str, manifest: Path, out_dir: Path, bench: BenchSettings, judge: str | None = None) -> dict:
    return evaluate_checkpoint(OmegaConf.to_object(cfg), checkpoint, manifest, out_dir, bench.eval_split,
                               bench.eval_workers, bench.eval_max_records, judge, cfg.trainer.progress)


def reuse_start(policy: Path, sft_out: Path) -> Path:
    """Copies an earlier run's SFT start (its policy folder and the sft_state.json and sft_metrics.jsonl beside it,
    which the report and the equal-compute arm read) into this run's sft folder; returns the copied policy."""
    import shutil

    needed = [policy / "config.json", policy.parent / "sft_state.json", policy.parent / "sft_metrics.jsonl"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"bench.start_from={policy}: not a finished SFT start, missing {missing}")
    sft_out.mkdir(parents=True, exist_ok=True)
    target = sft_out / "policy"
    if target.resolve() != policy.resolve():
        shutil.copytree(policy, target, dirs_exist_ok=True)
        for name in ("sft_state.json", "sft_metrics.jsonl"):
            shutil.copy2(policy.parent / name, sft_out / name)
    log.info("SFT start reused from %s", policy)
    return target


def equal_compute_sft_steps(start_metrics: Path, grpo_seconds: float) -> int:
    """How many SFT steps take `grpo_seconds`, at the SFT start phase's median seconds per step (its sft_metrics.jsonl):
    the SFT arm then gets the GRPO phase's wall time on the same machine (start-up included on both sides)."""
    seconds = [json.loads(line)["time/step"] for line in start_metrics.read_text().splitlines() if line.strip()]
    if not seconds:
        raise ValueError(f"{start_metrics} has no SFT steps to time")
    return max(1, round(grpo_seconds / statistics.median(seconds)))


# ---- plots (cluster/plots.py, matplotlib) ----------------------------------------------------------------------------
def draw_reward_curves(rows: list[dict], path: Path, title: str, window: int) -> Path:
    """reward/total, reward/accuracy and reward/format per GRPO step (thin: each step; thick: trailing mean)."""
    return reward_curves(rows, path, title, window, CURVE_METRICS)


def draw_before_after(table: list[dict], path: Path, title: str) -> Path:
    """Paired horizontal bars per category: accuracy of the SFT checkpoint and of the final GRPO checkpoint."""
    return before_after_bars(table, path, title)


# ---- report ---------------------------------------------------------------------------------------------------------
def compare(before: dict, after: dict, prior: dict[str, float], answers_before: dict[str, int] | None = None,
            answers_after: dict[str, int] | None = None) -> list[dict]:
    """One row per category plus `overall` (mean over questions) and `macro` (mean over categories)."""
    answers_before, answers_after = answers_before or {}, answers_after or {}
    by_before = {r["category"]: r for r in before["categories"]}
    by_after = {r["category"]: r for r in after["categories"]}
    rows = []
    for category in sorted(set(by_before) | set(by_after)):
        b, a = by_before.get(category, {}), by_after.get(category, {})
        rows.append({
            "category": category, "kind": (a or b).get("kind"), "questions": (a or b).get("questions"),
            "before": b.get("accuracy"), "after": a.get("accuracy"),
            "format_before": b.get("format_rate"), "format_after": a.get("format_rate"),
            "answer_prior": prior.get(category),
            "distinct_answers_before": answers_before.get(category), "distinct_answers_after": answers_after.get(category),
        })
    rows.append({
        "category": "overall", "kind": "mixed", "questions": after["overall"]["questions"],
        "before": before["overall"]["accuracy"], "after": after["overall"]["accuracy"],
        "format_before": before["overall"]["format_rate"], "format_after": after["overall"]["format_rate"],
        "answer_prior": None, "distinct_answers_before": None, "distinct_answers_after": None,
    })
    rows.append({
        "category": "macro (mean of categories)", "kind": "mixed", "questions": after["overall"]["questions"],
        "before": before["macro_accuracy"], "after": after["macro_accuracy"],
        "format_before": None, "format_after": None, "answer_prior": None,
        "distinct_answers_before": None, "distinct_answers_after": None,
    })
    for row in rows:
        row["delta_points"] = None if row["before"] is None or row["after"] is None else 100.0 * (row["after"] - row["before"])
    return rows


def format_comparison(rows: list[dict]) -> str:
    header = ("category", "n", "SFT acc", "GRPO acc", "delta pts", "SFT fmt", "GRPO fmt", "prior ref", "answers SFT/GRPO")

    def cell(value, pattern="{:.3f}"):
        return "" if value is None else pattern.format(value)

    lines = [[r["category"], str(r["questions"]), cell(r["before"]), cell(r["after"]), cell(r["delta_points"], "{:+.1f}"),
              cell(r["format_before"]), cell(r["format_after"]), cell(r["answer_prior"]),
              "" if r["distinct_answers_before"] is None else f"{r['distinct_answers_before']}/{r['distinct_answers_after']}"]
             for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def render(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(render(header))
    categories = len(rows) - 2
    return "\n".join([render(header), rule, *(render(line) for line in lines[:categories]), rule,
                      *(render(line) for line in lines[categories:])])


def curve_summary(rows: list[dict], window: int) -> dict:
    """First and last `window` steps' means of the reward curves, and of each category's training accuracy."""
    summary = {}
    per_category = sorted({key for row in rows for key in row if key.startswith("reward/accuracy/")})
    for name in (*CURVE_METRICS, *per_category):
        values = [r[name] for r in rows if r.get(name) is not None]
        head, tail = values[:window], values[-window:]
        summary[name] = {
            f"first_{len(head)}_mean": sum(head) / len(head) if head else None,
            f"last_{len(tail)}_mean": sum(tail) / len(tail) if tail else None,
        }
    return summary


# ---- main -----------------------------------------------------------------------------------------------------------
def run(config_file: str, out: Path, overrides: list[str]) -> dict:
    from cluster.checkpoints import latest_checkpoint
    from cluster.config import load_config
    from cluster.metrics import read_metrics
    from cluster.sft import sft
    from cluster.driver import train
    from embodied_data.manifest import read_manifest

    started = time.perf_counter()
    timings: dict[str, float] = {}
    run_dir = out / "run"
    base_config, bench, train_overrides = load_bench_config(config_file, overrides, run_dir)

    phase = time.perf_counter()
    base = load_config(base_config, train_overrides)
    manifest, counts = prepare_manifest(base, bench.categories, run_dir)
    data_overrides = [*train_overrides, "data.source=manifest", f"data.manifest={manifest}", "data.split=train"]
    timings["data"] = time.perf_counter() - phase
    log.info("data: %s", json.dumps(counts))

    phase = time.perf_counter()
    sft_cfg = load_config(base_config, data_overrides)
    if bench.start_from:
        sft_policy = reuse_start(Path(bench.start_from), Path(sft_cfg.sft.out_dir))
    else:
        try:
            sft_policy = sft(sft_cfg)
        finally:
            shutdown_ray()
    timings["sft"] = time.perf_counter() - phase

    judge = {"start": str(sft_policy), "config": None, "none": None}[bench.judge]
    judge_overrides = [f"models.judge={judge}"] if judge else []
    eval_judge = judge or (sft_cfg.models.judge if bench.judge == "config" and sft_cfg.models.judge != "tiny" else None)

    phase = time.perf_counter()
    before = evaluate(sft_cfg, str(sft_policy), manifest, run_dir / "eval_sft", bench, eval_judge)
    timings["eval_sft"] = time.perf_counter() - phase

    phase = time.perf_counter()
    rl_cfg = load_config(base_config, [*data_overrides, f"models.policy={sft_policy}", "trainer.sft_warmup_steps=0",
                                       "trainer.resume=false", *judge_overrides])
    try:
        train(rl_cfg)
    finally:
        shutdown_ray()
    final = latest_checkpoint(str(run_dir))
    if final is None:
        raise RuntimeError(f"GRPO finished without a complete checkpoint under {run_dir / 'checkpoints'}")
    timings["grpo"] = time.perf_counter() - phase

    phase = time.perf_counter()
    after = evaluate(rl_cfg, final, manifest, run_dir / "eval_rl", bench, eval_judge)
    timings["eval_rl"] = time.perf_counter() - phase

    more = None
    if bench.sft_equal_compute:
        phase = time.perf_counter()
        more_steps = equal_compute_sft_steps(Path(sft_policy).parent / "sft_metrics.jsonl", timings["grpo"])
        more_cfg = load_config(base_config, [*data_overrides, f"models.policy={sft_policy}", f"sft.steps={more_steps}",
                                             "sft.epochs=0", "sft.lookup_steps=0", "sft.warmup_ratio=0", f"sft.out_dir={run_dir / 'sft_more'}"])
        try:
            more_policy = sft(more_cfg)
        finally:
            shutdown_ray()
        timings["sft_more"] = time.perf_counter() - phase
        phase = time.perf_counter()
        more = evaluate(more_cfg, str(more_policy), manifest, run_dir / "eval_sft_more", bench, eval_judge)
        more["steps"] = more_steps
        timings["eval_sft_more"] = time.perf_counter() - phase

    agreement = None
    if bench.judge_agreement_records > 0:  # the judge GRPO's consistency reward asks: the start, or models.judge
        phase = time.perf_counter()
        agreement = measure_judge_agreement(OmegaConf.to_object(rl_cfg), rl_cfg.models.judge, manifest,
                                            bench.eval_split, bench.judge_agreement_records, rl_cfg.trainer.seed)
        timings["judge_agreement"] = time.perf_counter() - phase

    ood = None
    if bench.ood_scenes > 0:  # the real VSI-Bench layouts: out of distribution for every arm
        from bench.ood_eval import ood_eval

        phase = time.perf_counter()
        arms = {"start": str(sft_policy), "rl": final, **({"sft": more["checkpoint"]} if more else {})}
        ood = ood_eval(rl_cfg, arms, out / "ood", bench.ood_scenes, workers=bench.eval_workers)
        timings["ood"] = time.perf_counter() - phase

    records, _ = read_manifest(manifest)
    prior = answer_prior_baseline(records, bench.eval_split)
    table = compare(before, after, prior, distinct_answers(run_dir / "eval_sft"), distinct_answers(run_dir / "eval_rl"))
    metrics = read_metrics(run_dir / "metrics.jsonl")
    curves = draw_reward_curves(metrics, out / "reward_curves.png",
                                f"GRPO from the SFT checkpoint: {len(metrics)} steps, G={rl_cfg.sampling.num_samples}, "
                                f"{rl_cfg.trainer.prompts_per_step} prompts/step", bench.curve_window)
    bars = draw_before_after(table, out / "accuracy_before_after.png",
                             f"accuracy on held-out scenes ({bench.eval_split} split, greedy, n={after['questions']})")
    summary = curve_summary(metrics, bench.curve_window)
    overall = next(r for r in table if r["category"] == "overall")
    format_tail = next(v for k, v in summary["reward/format"].items() if k.startswith("last_"))
    sft_state = json.loads((Path(sft_policy).parent / "sft_state.json").read_text())
    timings["total"] = time.perf_counter() - started
    report = {
        "command": " ".join([Path(sys.executable).name, "bench/learning_run.py", "--config", str(config_file), "--out", str(out), *overrides]),
        "config": str(config_file),
        "overrides": overrides,
        "bench": OmegaConf.to_container(OmegaConf.structured(bench)),
        "data": {"manifest": str(manifest), "questions": counts},
        "sft": {"policy": str(sft_policy), "steps": sft_state["steps"], "traces": sft_state["traces"],
                "nll_first": sft_state["nll_first"], "nll_last": sft_state["nll_last"]},
        "grpo": {"run_dir": str(run_dir), "final_checkpoint": final, "steps": len(metrics),
                 "reward_curves": summary},
        "eval_before": {k: before[k] for k in ("checkpoint", "questions", "macro_accuracy", "overall", "categories")},
        "eval_after": {k: after[k] for k in ("checkpoint", "questions", "macro_accuracy", "overall", "categories")},
        "comparison": table,
        "target": {
            "rl_gain_points_overall": overall["delta_points"],
            "rl_gain_goal_points": TARGET_GAIN_POINTS,
            "rl_gain_met": overall["delta_points"] is not None and overall["delta_points"] >= TARGET_GAIN_POINTS,
            "format_reward_last_steps": format_tail,
            "format_near_one": format_tail is not None and format_tail >= FORMAT_NEAR_ONE,
        },
        "wall_s": timings,
        "outputs": {"reward_curves": str(curves), "accuracy_before_after": str(bars)},
    }
    evaluated = {json.loads(line)["record_id"] for line in (run_dir / "eval_rl" / "eval_samples.jsonl").read_text().splitlines()}
    arm_answers = {"sft": distinct_answers(run_dir / "eval_sft_more")} if more else {}
    report["summary"] = summary_by_category(table, best_constant_answer(records, bench.eval_split, evaluated),
                                            {"start": before, "rl": after, "sft": more}, arm_answers)
    report["summary"]["judge_agreement"] = {"letter": agreement["letter"], "words": agreement["words"]} if agreement else None
    if agreement:
        report["judge_agreement"] = agreement
    if ood:
        report["ood"] = ood
    if more:
        report["eval_sft_more"] = {k: more[k] for k in ("checkpoint", "questions", "macro_accuracy", "overall", "categories", "steps")}
    write_text_atomically(out / "learning.json", json.dumps(report, indent=2))
    write_text_atomically(out / "summary.json", json.dumps(report["summary"], indent=2))  # names read by outside checks
    report["text"] = format_comparison(table)
    return report


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python bench/learning_run.py", description=__doc__.split("\n\n")[0],
        epilog="Config keys: any TrainConfig key (sft.*, trainer.*, learner.*, sampling.*, rewards.*, data.synthetic.*, "
        "models.tiny.*) and bench.categories, bench.eval_split, bench.eval_workers, bench.eval_max_records, "
        "bench.curve_window, bench.judge_agreement_records. models.policy and trainer.sft_warmup_steps are set by the script for the GRPO phase.",
    )
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), metavar="FILE", help="YAML config (default configs/learning.yaml)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder: learning.json, the PNGs, and the run in DIR/run")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. trainer.steps=40 bench.eval_workers=1")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = run(args.config, Path(args.out), list(args.overrides))
    print(report["text"])
    print("prior ref: the score of answering from the training answers alone, no model; answers: distinct greedy answers")
    target = report["target"]
    print(f"\nRL gain over SFT (overall accuracy): {target['rl_gain_points_overall']:+.1f} points "
          f"(goal >= {TARGET_GAIN_POINTS:g}: {'met' if target['rl_gain_met'] else 'NOT met'}); "
          f"format reward over the last steps {target['format_reward_last_steps']:.3f}")
    print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in report["wall_s"].items()))
    summary = report["summary"]
    print(f"\nper category: n, accuracy of the SFT start / SFT ({summary['sft_arm']}) / RL / the best constant answer, "
          "distinct answers of SFT and RL, consistency rate of SFT and RL under the judge")
    for category, c in summary["categories"].items():
        def cell(value):
            return "-" if value is None else f"{value:.3f}"
        print(f"  {category:<32} {c['n']!s:>4}  {cell(c['start_accuracy'])} / {cell(c['sft_accuracy'])} / "
              f"{cell(c['rl_accuracy'])} / {cell(c['constant_accuracy'])} ({c['constant_answer']})  "
              f"{c['sft_distinct_answers']}/{c['distinct_answers']}  "
              f"{cell(c.get('sft_consistency_rate'))}/{cell(c.get('rl_consistency_rate'))}")
    margin = summary["macro"]["rl_over_constant_points"]
    print(f"RL over the best constant answer, macro over {summary['target']['categories']} categories: "
          + ("-" if margin is None else f"{margin:+.1f} points")
          + f" (goal >= {TARGET_OVER_CONSTANT_POINTS:g} over >= {MIN_TARGET_CATEGORIES} categories, answers varying: "
          + ("met" if summary["target"]["met"] else "NOT met") + ")")
    agreement = report.get("judge_agreement")
    if agreement:
        rates = ", ".join(f"{form} {'-' if agreement[form] is None else format(agreement[form], '.3f')}" for form in ("letter", "words"))
        print(f"judge agreement ({agreement['judge']}, {agreement['records']} held-out questions, conclusion swapped to a "
              f"random option): {rates} (target >= 0.9 with the letter stated)")
    if report.get("ood"):
        from bench.ood_eval import format_table as ood_table

        print(f"\nout of distribution (real VSI-Bench layouts, every split; {Path(args.out) / 'ood' / 'ood.json'}):")
        print(ood_table(report["ood"]))
    print(f"written: {Path(args.out) / 'learning.json'}, {Path(args.out) / 'summary.json'}, {report['outputs']['reward_curves']}, "
          f"{report['outputs']['accuracy_before_after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
