"""`embodied-r train` / `python -m cluster.train` (the entry for `ray job submit`): the command line of the training
driver (cluster/driver.py), which checks the whole config before it imports torch, Ray or DeepSpeed."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from cluster.config import load_config
from cluster.runtime import VERBOSE_ENV


def build_arg_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="python -m cluster.train",
        description="The GRPO training driver: data -> perception -> rollouts -> rewards -> DeepSpeed learner -> weight broadcast.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML config (e.g. configs/tiny.yaml); defaults to the built-in schema")
    parser.add_argument("--verbose", action="store_true",
                        help="print the actors' output (model loading bars, library warnings) between the driver's lines; "
                        "without it, it goes to the Ray session's worker log files")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value",
        help="config overrides in OmegaConf dot notation, e.g. run_dir=runs/a trainer.steps=10 rollout.num_replicas=4",
    )
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A bad value is refused here, in a second, not after the driver's imports and hours of perception.
    cfg = load_config(args.config, args.overrides)
    if getattr(args, "verbose", False):
        os.environ[VERBOSE_ENV] = "1"
    else:  # transformers' own bars in the driver (tokenizers, tiny models written): before transformers is imported
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from cluster.preemption import CheckpointFailed, Preempted, ResourcesLost
    from cluster.driver import train

    try:
        run_dir = train(cfg)
    except (Preempted, CheckpointFailed, ResourcesLost) as stopped:  # exit 75 / 74 / 69: cluster/preemption.py
        print(f"run stopped: {stopped}; resume with: {stopped.resume}", file=sys.stderr, flush=True)
        return stopped.exit_code
    print(f"run finished: metrics in {run_dir / 'metrics.jsonl'}, checkpoints in {run_dir / 'checkpoints'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_from_args(build_arg_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
