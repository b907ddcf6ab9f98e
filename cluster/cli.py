"""`embodied-r`: one command with a subcommand per job (train, data, keyframes, ...)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Layers that add subcommands through a `register(subparsers)` function in their cli module.
_LAYER_CLIS = ("embodied_data.cli", "perception.cli", "cluster.sft", "cluster.evaluate", "cluster.perceive_cmd", "cluster.ask")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embodied-r",
        description=(
            "Embodied-R at scale: a frozen VLM describes key frames of egocentric video, a small LM learns to reason "
            "about space with GRPO. Services run as Ray actors: perception, rollout workers, consistency judges, "
            "DeepSpeed learner ranks."
        ),
        epilog="Example: embodied-r train --config configs/tiny.yaml trainer.steps=5 run_dir=runs/tiny",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from cluster.train import build_arg_parser, run_from_args

    train = sub.add_parser(
        "train",
        help="train the reasoning policy with GRPO (local Ray, or a cluster via ray.address / `ray job submit`)",
        description="Train the reasoning policy with GRPO through the whole pipeline; writes metrics.jsonl, "
        "config.yaml and checkpoints under run_dir.",
        epilog="Fixed names that tools rely on: --config FILE, run_dir, trainer.steps. "
        "Other knobs: rollout.num_workers, learner.num_ranks, learner.zero_stage, sampling.num_samples, "
        "trainer.prompts_per_step, trainer.verify_sync, trainer.resume.",
    )
    build_arg_parser(train)
    train.set_defaults(func=run_from_args)

    for module_name in _LAYER_CLIS:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        # Bad input or config: one clear line, not a traceback (the run log keeps the details).
        logging.getLogger("embodied_r").debug("failed", exc_info=True)
        print(f"embodied-r {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
