"""`embodied-r`: one command with a subcommand per job (train, data, keyframes, ...), each importing only its own code.

The top-level parser knows every subcommand's name and one-line help without importing it; a subcommand's module
(and with it torch, Ray or transformers where that job needs them) is imported only when that subcommand is chosen,
so `embodied-r --help`, `embodied-r --version` and light jobs such as `embodied-r keyframes` start in a fraction of a
second instead of paying for the training driver's imports.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

# Subcommand -> (module, function registering it into the subparsers, one-line help shown by `embodied-r --help`).
# The module is imported only when its subcommand is chosen; the help line is written here only (the module's parser
# takes it from LazySubParsers.add_parser; tests/test_cli_imports.py checks no module registers another).
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": (
        "cluster.cli", "_register_train",
        "train the reasoning policy with GRPO (local Ray, or a cluster via ray.address / `ray job submit`)",
    ),
    "config": (
        "cluster.config_cmd", "register",
        "check a config and print the resolved tree that train would run (defaults, file, overrides)",
    ),
    "data": ("embodied_data.cli", "register", "data sets: synthetic egocentric videos, benchmark loaders and manifests"),
    "keyframes": ("perception.cli", "register", "print the key frames of a video as JSON"),
    "sft": ("cluster.sft", "register", "supervised fine-tuning of the policy on reasoning traces, before GRPO"),
    "eval": (
        "cluster.evaluate", "register",
        "evaluate a policy checkpoint on a manifest split: accuracy per category, format, consistency, length",
    ),
    "perceive": (
        "cluster.perceive_cmd", "register",
        "describe a dataset's videos with the VLM pool into the run's cache (before train / eval)",
    ),
    "ask": (
        "cluster.ask", "register",
        "answer one question about one video: key frames -> VLM descriptions -> the policy's thinking and answer",
    ),
    "view": (
        "cluster.view_cmd", "register",
        "write a static HTML viewer of a run's recorded samples: key frames, captions, completions, rewards",
    ),
    "judge-agreement": (
        "cluster.judge_agreement_cmd", "register",
        "measure the consistency judge: how often it names the option a reasoning concludes (letter stated / words only)",
    ),
    "models": (
        "cluster.models_cmd", "register",
        "named registry models: list them (cached or not) and pull one into the cache ($EMBODIED_R_CACHE)",
    ),
}


def package_version() -> str:
    """The installed embodied-r distribution's version, or "unknown" when the package is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("embodied-r")
    except PackageNotFoundError:
        return "unknown (not installed)"


class LazySubParsers(argparse._SubParsersAction):
    """Subparsers whose entries start as help-only placeholders and become the real parser (its module imported,
    its `register(subparsers)` run) the moment they are chosen on the command line, or `load`ed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._lazy: dict[str, tuple[str, str]] = {}
        self._listed_help: dict[str, str] = {}  # the one-line help of each listed subcommand, written once (_COMMANDS)

    def add_lazy(self, name: str, module: str, function: str, help: str) -> None:
        """A placeholder for `name` listed with `help`; `module.function(self)` registers the real one on use."""
        super().add_parser(name, help=help, add_help=False)
        self._lazy[name] = (module, function)
        self._listed_help[name] = help

    def _drop_placeholder(self, name: str) -> None:
        if self._lazy.pop(name, None) is not None:
            del self._name_parser_map[name]
            self._choices_actions = [a for a in self._choices_actions if a.dest != name]

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        """A module registering a subcommand replaces its placeholder, and takes the help line listed for it."""
        if name in self._listed_help:
            kwargs.setdefault("help", self._listed_help[name])
        self._drop_placeholder(name)
        return super().add_parser(name, **kwargs)

    def load(self, name: str) -> argparse.ArgumentParser:
        """The real parser of subcommand `name`, importing its module if it is still a placeholder."""
        if name in self._lazy:
            module, function = self._lazy[name]
            register: Callable[[argparse._SubParsersAction], None] = getattr(importlib.import_module(module), function)
            register(self)
            if name in self._lazy:
                raise RuntimeError(f"{module}.{function} did not register the subcommand {name!r}")
        return self._name_parser_map[name]

    def loaded_help(self, name: str) -> str | None:
        """The help line listed for subcommand `name` (after `load`, the one its module registered)."""
        return next((a.help for a in self._choices_actions if a.dest == name), None)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if values and values[0] in self._lazy:
            self.load(values[0])
        super().__call__(parser, namespace, values, option_string)


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    from cluster.train import build_arg_parser, run_from_args

    train = subparsers.add_parser(
        "train",
        description="Train the reasoning policy with GRPO through the whole pipeline; writes metrics.jsonl, "
        "config.yaml and checkpoints under run_dir.",
        epilog="Fixed names that tools rely on: --config FILE, run_dir, trainer.steps. "
        "Other knobs: rollout.num_replicas, learner.num_replicas, learner.zero_stage, sampling.num_samples, "
        "trainer.prompts_per_step, weight_sync.verify, trainer.resume. `embodied-r config --print` shows the "
        "resolved tree.",
    )
    build_arg_parser(train)
    train.set_defaults(func=run_from_args)


def build_parser() -> argparse.ArgumentParser:
    """The `embodied-r` parser; no subcommand's module is imported until that subcommand is parsed."""
    parser = argparse.ArgumentParser(
        prog="embodied-r",
        description=(
            "Embodied-R at scale: a frozen VLM describes key frames of egocentric video, a small LM learns to reason "
            "about space with GRPO. Services run as Ray actors: perception, rollout workers, consistency judges, "
            "DeepSpeed learner ranks."
        ),
        epilog="Example: embodied-r train --config configs/tiny.yaml trainer.steps=5 run_dir=runs/tiny",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.register("action", "parsers", LazySubParsers)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, function, help_line) in _COMMANDS.items():
        sub.add_lazy(name, module, function, help_line)
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
