"""`embodied-r` builds its parser and runs light subcommands without importing torch, Ray or transformers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ray", "transformers", "deepspeed", "vllm")


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_help_and_keyframes_parsing_import_no_heavy_module():
    out = _run(
        "import json, sys\n"
        "import cluster.cli\n"
        "parser = cluster.cli.build_parser()\n"
        "parser.format_help()\n"
        "args = parser.parse_args(['keyframes', 'clip.mp4', '--max', '8'])\n"
        "assert args.max_keyframes == 8 and callable(args.func)\n"
        "import perception.keyframes\n"
        "parser.parse_args(['data', 'build-manifest', 'vsi_bench', 'x', '--out', 'm.parquet'])\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_version_is_the_package_version():
    from importlib.metadata import version

    done = subprocess.run([sys.executable, "-m", "cluster.cli", "--version"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"embodied-r {version('embodied-r')}"


def cluster_commands() -> dict:
    import cluster.cli

    return cluster.cli._COMMANDS


def test_listed_help_lines_equal_the_registered_ones():
    # One subprocess: loading every subcommand imports the training driver.
    out = _run(
        "import json, cluster.cli\n"
        "parser = cluster.cli.build_parser()\n"
        "sub = next(a for a in parser._actions if isinstance(a, cluster.cli.LazySubParsers))\n"
        "listed = {n: sub.loaded_help(n) for n in cluster.cli._COMMANDS}\n"
        "for n in cluster.cli._COMMANDS: sub.load(n)\n"
        "print(json.dumps([listed, {n: sub.loaded_help(n) for n in cluster.cli._COMMANDS}, sorted(sub.choices)]))\n"
    )
    listed, registered, choices = json.loads(out.strip().splitlines()[-1])
    assert listed == registered
    assert choices == sorted(listed)
    # Written once: no command module registers a help line of its own for its subcommand.
    for name, (module, _, _) in cluster_commands().items():
        source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
        assert not re.search(rf"""add_parser\(\s*["']{re.escape(name)}["'][^)]*?\bhelp=""", source, re.DOTALL), (name, module)


def test_train_refuses_a_bad_config_before_importing_the_driver():
    """`embodied-r train` checks the whole config first: a bad value is refused, naming the key, with torch, Ray and
    DeepSpeed never imported (at scale the alternative is hours of perception before the first step fails)."""
    code = (
        "import json, sys\n"
        "import cluster.cli\n"
        "rc = cluster.cli.main(['train', '--config', 'configs/tiny.yaml', 'learner.grpo.kl_estimator=k9',"
        " 'rewards.judge.timeout_s=-1'])\n"
        f"print(json.dumps([rc, [m for m in {HEAVY!r} if m in sys.modules]]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    rc, imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert rc == 2 and imported == []
    assert "learner.grpo.kl_estimator must be one of k1, k2, k3; got 'k9'" in done.stderr
    assert "rewards.judge.timeout_s must be > 0" in done.stderr
