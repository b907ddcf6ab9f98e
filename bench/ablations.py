"""The paper's ablations on the learning benchmark: one bench/learning_run.py run per variant (key frames vs the same
number of uniformly sampled frames, ground-truth captions vs the VLM's text, the consistency reward on vs off), each in
its own folder, then one table of held-out accuracy and consistency rate per variant.

    python -m bench.ablations --out runs/ablations                       # every variant at configs/learning.yaml's size
    python -m bench.ablations --out runs/abl --variants keyframes,uniform sft.steps=300 trainer.steps=20
    python -m bench.ablations --out runs/ablations --report-only         # the table of the runs already there

Each variant is `learning_run` with the overrides below (and the command line's, applied to every variant); a
variant whose summary.json is already in its folder is not run again. Writes OUT/ablations.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path[:1] != [str(REPO)]:  # first: the script's own folder (bench/, with its engines.py) must not shadow
    sys.path.insert(0, str(REPO))  # the project's packages, even when PYTHONPATH already lists the repo

from bench import learning_run  # noqa: E402
from embodied_data.atomic import write_text_atomically  # noqa: E402

# Variant -> overrides of the learning run. The traces cite the text the prompt shows wherever the frames differ from
# the manifest's 1-fps caption (sft.trace_source=video_text), so SFT never cites a frame its prompt lacks.
VARIANTS: dict[str, list[str]] = {
    "gt_captions_1fps": [],  # the benchmark as configured: ground-truth captions at 1 fps, consistency reward on
    "keyframes": ["perception.ground_truth_frames=keyframes", "sft.trace_source=video_text"],
    "uniform": ["perception.ground_truth_frames=uniform", "sft.trace_source=video_text"],
    "vlm_text": ["perception.source=vlm", "sft.trace_source=video_text"],
    "consistency_off": ["rewards.stages=[{start: 0, format: 0.2, accuracy: 0.8, consistency: 0.0}]"],
}


def variant_row(name: str, summary: dict) -> dict:
    """One table row from a learning run's summary.json: macro accuracies and the macro consistency rate of each arm."""
    categories = summary["categories"].values()

    def macro(key: str) -> float | None:
        return learning_run.mean_of_present(c.get(key) for c in categories)

    return {
        "variant": name, "categories": len(summary["categories"]),
        "start_accuracy": summary["macro"].get("start_accuracy"), "sft_accuracy": summary["macro"]["sft_accuracy"],
        "rl_accuracy": summary["macro"]["rl_accuracy"], "constant_accuracy": summary["macro"]["constant_accuracy"],
        "rl_over_constant_points": summary["macro"]["rl_over_constant_points"],
        "sft_consistency_rate": macro("sft_consistency_rate"), "rl_consistency_rate": macro("rl_consistency_rate"),
    }


def format_table(rows: list[dict]) -> str:
    keys = ("variant", "start_accuracy", "sft_accuracy", "rl_accuracy", "constant_accuracy", "rl_over_constant_points",
            "sft_consistency_rate", "rl_consistency_rate")
    heads = ("variant", "start", "SFT", "RL", "constant", "RL-const pts", "SFT consist.", "RL consist.")
    cells = [[r["variant"]] + ["-" if r[k] is None else f"{r[k]:+.1f}" if k.endswith("points") else f"{r[k]:.3f}"
                               for k in keys[1:]] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in [list(heads), *cells])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ablations", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, metavar="DIR", help="one folder per variant in DIR, and DIR/ablations.json")
    parser.add_argument("--config", default=str(learning_run.DEFAULT_CONFIG), metavar="FILE")
    parser.add_argument("--variants", default=",".join(VARIANTS), metavar="A,B",
                        help=f"comma-separated variants (default all: {','.join(VARIANTS)})")
    parser.add_argument("--report-only", action="store_true", help="run nothing: tabulate the variants already run")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides applied to every variant")
    args = parser.parse_args(argv)
    variants = [name for name in args.variants.split(",") if name]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    out = Path(args.out)
    rows = []
    for name in variants:
        summary_path = out / name / "summary.json"
        if not summary_path.exists():
            if args.report_only:
                print(f"{name}: not run ({summary_path} missing)")
                continue
            learning_run.main(["--config", args.config, "--out", str(out / name), *VARIANTS[name], *args.overrides])
        rows.append(variant_row(name, json.loads(summary_path.read_text())))
    write_text_atomically(out / "ablations.json", json.dumps({"overrides": args.overrides, "variants": VARIANTS,
                                                              "rows": rows}, indent=2))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
