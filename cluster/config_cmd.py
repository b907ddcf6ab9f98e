"""`embodied-r config`: loads and checks a config (schema defaults <- --config FILE <- key=value overrides), and with
--print shows the resolved tree, every default filled in, exactly as `train` would run it."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config",
        description="Loads the config as `embodied-r train` does (schema defaults, then --config FILE, then key=value "
        "overrides), checks every choice and bound, and with --print writes the resolved YAML to stdout.",
        epilog="Example: embodied-r config --print --config configs/paper.yaml rollout.num_replicas=8",
    )
    parser.add_argument("--config", default=None, help="a YAML config (omit for the schema defaults, the embedded default)")
    parser.add_argument("--print", dest="print_tree", action="store_true", help="print the resolved config as YAML")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, as for train")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cluster.config import load_config, resolved_yaml

    cfg = load_config(args.config, args.overrides)  # a ConfigError (a ValueError) is reported by the CLI in one line
    if args.print_tree:
        sys.stdout.write(resolved_yaml(cfg))
    else:
        print(f"config OK: {args.config or 'schema defaults'}{' with ' + ' '.join(args.overrides) if args.overrides else ''}")
    return 0
