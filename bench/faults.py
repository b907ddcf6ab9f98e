"""Fault drills: real training runs with a rollout worker, the learner or the driver SIGKILLed mid-run (the driver also
while it writes a checkpoint), each compared row by row with the uninterrupted run of the same config.

    python bench/faults.py                                  # configs/tiny.yaml, 8 steps, a checkpoint every 2
    python bench/faults.py --drills worker@3,driver@5 trainer.prompts_per_step=2
    python bench/faults.py --chaos --seed 7               # one 60-step run that loses 8 victims at random steps

Each run is its own driver process (`python -m cluster.train`), started as a user would, with every real component.
What a drill checks: the run finishes all steps; its metrics rows equal the uninterrupted run's bit for bit, timings
and `faults/*` aside; the fault is counted in `faults/*` and named in train.log; a killed driver leaves no process
behind, and `trainer.resume=true` continues it. Prints one line per drill and exits 1 when any drill fails.

The tests (tests/test_faults.py) run the same drills at a smaller size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from cluster.failpoints import ENV as FAILPOINT_ENV

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "tiny.yaml"
DRILLS = ("worker", "learner", "driver", "checkpoint")


class DrillError(RuntimeError):
    """A run did not do what the drill expected (ended early, timed out, its target never showed up)."""


@dataclass
class RunSpec:
    """One training run: its config file, key=value overrides and a bound on its wall time."""

    config: Path = DEFAULT_CONFIG
    overrides: list[str] = field(default_factory=list)
    timeout_s: float = 900.0


def comparable(row: dict) -> dict:
    """A metrics row less what may differ between equal runs: timings (time/*, any *_s), throughput, fault counts."""
    return {
        key: value for key, value in row.items()
        if not key.startswith(("time/", "throughput/", "faults/")) and not key.endswith("_s")
    }


def read_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def differences(rows: list[dict], expected: list[dict]) -> list[str]:
    """What differs between two runs' rows (comparable parts only): empty when they are the same run."""
    problems = []
    if [r["step"] for r in rows] != [r["step"] for r in expected]:
        problems.append(f"steps {[r['step'] for r in rows]} instead of {[r['step'] for r in expected]}")
    for row, want in zip(rows, expected):
        got, wanted = comparable(row), comparable(want)
        if got != wanted:
            keys = sorted(k for k in set(got) | set(wanted) if got.get(k) != wanted.get(k))
            problems.append(f"step {row['step']}: " + ", ".join(f"{k} {got.get(k)!r} != {wanted.get(k)!r}" for k in keys[:4]))
    return problems


def start_run(run_dir: Path, spec: RunSpec, *extra: str, failpoint: str = "") -> subprocess.Popen:
    """Starts a driver; `failpoint` (NAME@STEP, cluster/failpoints.py) makes it stop there until it is killed."""
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "cluster.train", "--config", str(spec.config), f"run_dir={run_dir}",
               *spec.overrides, *extra]
    log = (run_dir / "driver.out").open("ab")
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    env.pop(FAILPOINT_ENV, None)
    if failpoint:
        env[FAILPOINT_ENV] = failpoint
    return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)


def next_failpoint(kills: list[tuple[str, int]]) -> str:
    """The failpoint the next driver needs: a checkpoint kill is made exact by stopping the driver between the
    learner's write and the driver's completion mark (the window is otherwise a few milliseconds)."""
    for name, step in kills:
        if name == "checkpoint":
            return f"checkpoint.before_driver_state@{step}"
        if name == "driver":
            return ""
    return ""


def kill_tree(pid: int) -> None:
    try:
        parent = psutil.Process(pid)
        family = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for process in family:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def finish(process: subprocess.Popen, run_dir: Path, timeout_s: float) -> None:
    """Waits for the run to end; raises DrillError (with the end of its output) unless it ended well in time."""
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_tree(process.pid)
        raise DrillError(f"the run in {run_dir} did not finish within {timeout_s:.0f} s; see {run_dir / 'driver.out'}") from None
    if process.returncode != 0:
        tail = (run_dir / "driver.out").read_text(errors="replace")[-4000:]
        raise DrillError(f"the run in {run_dir} ended with rc {process.returncode}:\n{tail}")


def wait_for(condition, timeout_s: float, what: str, process: subprocess.Popen):
    """Polls `condition` until it returns something true; raises DrillError if the run ends or time runs out first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if process.poll() is not None:
            raise DrillError(f"the run ended (rc {process.returncode}) before {what}")
        time.sleep(0.05)
    kill_tree(process.pid)
    raise DrillError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def actor_process(driver: subprocess.Popen, title_prefix: str) -> psutil.Process | None:
    """A process of the driver's own Ray instance whose title (Ray sets it to ray::Class.method) starts so."""
    try:
        descendants = psutil.Process(driver.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for process in descendants:
        try:
            title = " ".join(process.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if title.startswith(title_prefix):
            return process
    return None


def prepared_run_dir(run_dir: Path, baseline: Path) -> Path:
    """A run dir holding the baseline's data, tiny models and description cache (built deterministically; copying
    them saves each run the build), with no checkpoint or metrics."""
    for part in ("data", "models", "perception_cache"):
        if (baseline / part).exists():
            shutil.copytree(baseline / part, run_dir / part)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


@dataclass
class DrillResult:
    name: str
    run_dir: Path
    rows: list[dict]
    problems: list[str]  # empty: the drill passed
    wall_s: float
    leftover_processes: int = 0

    @property
    def faults(self) -> dict:
        return {k: v for k, v in (self.rows[-1] if self.rows else {}).items() if k.startswith("faults/")}


def run_baseline(run_dir: Path, spec: RunSpec) -> list[dict]:
    finish(start_run(run_dir, spec), run_dir, spec.timeout_s)
    return read_rows(run_dir)


def _kill_driver(driver: subprocess.Popen) -> int:
    """SIGKILLs the driver; returns how many of its processes were still alive 30 s later."""
    descendants = psutil.Process(driver.pid).children(recursive=True)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    _, alive = psutil.wait_procs(descendants, timeout=30)
    return len(alive)


KILL_LOG_LINES = {  # what train.log must say after each kind of kill
    "worker": "is dead",
    "learner": "rebuilding it from the last checkpoint",
    "driver": "resumed from",
    "checkpoint": "resumed from",
}


def _wait_and_kill(name: str, step: int, driver: subprocess.Popen, run_dir: Path, spec: RunSpec) -> int:
    """Kills drill `name`'s victim during `step` of the run `driver` drives; returns the killed driver's leftover
    processes (0 for the other victims)."""
    checkpoint = run_dir / "checkpoints" / f"step_{step:06d}"
    if name == "checkpoint":  # the checkpoint written at the end of `step`, caught before it is complete
        writing = checkpoint.with_name(checkpoint.name + ".tmp")  # the learner writes here, then renames it
        wait_for(lambda: writing.is_dir() or (checkpoint.is_dir() and not (checkpoint / "driver_state.json").exists()),
                 spec.timeout_s, f"the checkpoint of step {step} being written", driver)
    else:  # `step` is under way: the rows of the steps before it are written
        wait_for(lambda: len(read_rows(run_dir)) >= step - 1, spec.timeout_s, f"step {step - 1}'s metrics", driver)
    if name == "worker":
        wait_for(lambda: actor_process(driver, "ray::RolloutWorker.generate_with_stats"), 120, "a generating worker", driver).kill()
        return 0
    if name == "learner":
        wait_for(lambda: actor_process(driver, "ray::Learner"), 60, "the learner's process", driver).kill()
        return 0
    return _kill_driver(driver)


def drill(kills: list[tuple[str, int]], run_dir: Path, baseline: Path, spec: RunSpec) -> DrillResult:
    """One run in `run_dir` (prepared from `baseline`) that loses, in order, each (victim, step) of `kills`: a victim
    dies during that step (`checkpoint`: the driver, while writing that step's checkpoint). A killed driver's run is
    resumed with trainer.resume=true, and the later kills hit the resumed run."""
    for name, _ in kills:
        if name not in DRILLS:
            raise ValueError(f"unknown drill {name!r}; expected one of {', '.join(DRILLS)}")
    prepared_run_dir(run_dir, baseline)
    started = time.perf_counter()
    driver = start_run(run_dir, spec, failpoint=next_failpoint(kills))
    problems: list[str] = []
    leftover = 0
    counted = {"worker": 0, "learner": 0}  # kills the last driver process must count in faults/*
    for position, (name, step) in enumerate(kills):
        killed_driver_leftover = _wait_and_kill(name, step, driver, run_dir, spec)
        if name in counted:
            counted[name] += 1
            continue
        leftover += killed_driver_leftover
        if killed_driver_leftover:
            problems.append(f"{killed_driver_leftover} process(es) of the driver killed in step {step} still running after 30 s")
        driver = start_run(run_dir, spec, "trainer.resume=true", failpoint=next_failpoint(kills[position + 1:]))
        counted = dict.fromkeys(counted, 0)  # a new driver counts from 0
    finish(driver, run_dir, spec.timeout_s)

    rows = read_rows(run_dir)
    problems += differences(rows, read_rows(baseline))
    log_text = (run_dir / "train.log").read_text(errors="replace")
    for name in {name for name, _ in kills}:
        if KILL_LOG_LINES[name] not in log_text:
            problems.append(f"train.log has no line with {KILL_LOG_LINES[name]!r}")
    last = rows[-1] if rows else {}
    for name, metric in (("worker", "faults/rollout_workers_replaced"), ("learner", "faults/learner_restarts")):
        if last.get(metric) != counted[name]:
            problems.append(f"{metric} is {last.get(metric)}, expected {counted[name]}")
    for name, step in kills:
        partial = run_dir / "checkpoints" / f"step_{step:06d}"
        if name == "checkpoint" and f"skipping checkpoint {partial}" not in log_text:
            problems.append(f"the partial checkpoint {partial.name} was not reported as skipped")
    label = ", ".join(f"{name}@{step}" for name, step in kills)
    return DrillResult(label, run_dir, rows, problems, time.perf_counter() - started, leftover)


def parse_kills(text: str) -> list[tuple[str, int]]:
    """`worker@4,learner@6` -> [("worker", 4), ("learner", 6)]."""
    kills = []
    for part in filter(None, text.split(",")):
        name, _, step = part.partition("@")
        if name not in DRILLS or not step.isdigit():
            raise argparse.ArgumentTypeError(f"{part!r}: expected VICTIM@STEP with VICTIM one of {', '.join(DRILLS)}")
        kills.append((name, int(step)))
    return kills


CHAOS_VICTIMS = ("worker", "learner", "driver")


def chaos_plan(seed: int, faults: int, steps: int, first: int = 3, min_gap: int = 2) -> list[tuple[str, int]]:
    """`faults` (victim, step) kills for one run of `steps` steps, drawn from `seed`: every victim of CHAOS_VICTIMS at
    least once, the rest at random, at steps `first` .. steps - 1 at least `min_gap` apart (a kill never lands while
    the run is still recovering from the one before; `first` after the first checkpoint, which a lost learner is
    rebuilt from)."""
    if faults < len(CHAOS_VICTIMS):
        raise ValueError(f"a chaos run needs at least {len(CHAOS_VICTIMS)} faults (one of each victim), got {faults}")
    last = steps - 1
    if (last - first) < (faults - 1) * min_gap:
        raise ValueError(f"{faults} faults {min_gap} steps apart do not fit in steps {first}..{last}; use more --steps")
    rng = random.Random(seed)
    victims = [*CHAOS_VICTIMS, *(rng.choice(CHAOS_VICTIMS) for _ in range(faults - len(CHAOS_VICTIMS)))]
    rng.shuffle(victims)
    # Gaps: min_gap each, plus the slack spread at random (stars and bars), so the steps cover the whole run.
    slack = (last - first) - (faults - 1) * min_gap
    cuts = sorted(rng.randint(0, slack) for _ in range(faults))
    kill_steps = [first + cut + position * min_gap for position, cut in enumerate(cuts)]
    return list(zip(victims, kill_steps))


def run_chaos(args, spec: RunSpec) -> int:
    """The chaos soak: the uninterrupted run, then one run of the same config that loses every kill of
    chaos_plan(args.seed, ...) in order; passes when its rows equal the uninterrupted run's."""
    kills = chaos_plan(args.seed, args.faults, args.steps, first=args.checkpoint_every + 1)
    print(f"chaos seed {args.seed}: {len(kills)} faults: {', '.join(f'{name}@{step}' for name, step in kills)}", flush=True)
    baseline = args.out / "uninterrupted"
    started = time.perf_counter()
    rows = run_baseline(baseline, spec)
    print(f"uninterrupted: {len(rows)} steps in {time.perf_counter() - started:.0f} s", flush=True)
    try:
        result = drill(kills, args.out / f"chaos_seed_{args.seed}", baseline, spec)
    except DrillError as error:
        print(f"chaos seed {args.seed}: FAILED: {error}", flush=True)
        return 1
    verdict = "metrics equal the uninterrupted run's" if not result.problems else "DIFFERS: " + "; ".join(result.problems)
    print(f"chaos seed {args.seed}: {len(result.rows)} steps in {result.wall_s:.0f} s, {len(kills)} faults, last row "
          f"{result.faults}, {result.leftover_processes} leftover processes; {verdict}", flush=True)
    return 1 if result.problems else 0


DESCRIPTIONS = {
    "worker": "rollout worker SIGKILLed while generating in step {step}",
    "learner": "learner rank SIGKILLed in step {step}",
    "driver": "driver SIGKILLed in step {step}, then resumed",
    "checkpoint": "driver SIGKILLed writing step {step}'s checkpoint, then resumed",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "faults", help="one run dir per drill under it")
    parser.add_argument("--drills", type=parse_kills, default=parse_kills("worker@4,learner@4,driver@5,checkpoint@4"),
                        help="comma-separated VICTIM@STEP, one run each; VICTIM of " + ", ".join(DRILLS)
                        + " (default: worker@4,learner@4,driver@5,checkpoint@4)")
    parser.add_argument("--steps", type=int, default=None, help="steps of each run (default 8; 60 with --chaos)")
    parser.add_argument("--checkpoint-every", type=int, default=2)
    parser.add_argument("--chaos", action="store_true", help="instead of --drills: one run that loses --faults random "
                        "victims (rollout worker, learner, driver then resumed) at random steps drawn from --seed")
    parser.add_argument("--seed", type=int, default=None, help="the chaos plan's seed (default: drawn, and printed)")
    parser.add_argument("--faults", type=int, default=8, help="kills in the chaos run (default 8)")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="bound on each run's wall time")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, as for `embodied-r train`")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 60 if args.chaos else 8
    spec = RunSpec(args.config, [f"trainer.steps={args.steps}", f"trainer.checkpoint_every={args.checkpoint_every}",
                                 "trainer.progress=false", *args.overrides], args.timeout_s)
    if args.out.exists():
        shutil.rmtree(args.out)
    if args.chaos:
        if args.seed is None:
            args.seed = random.SystemRandom().randrange(1_000_000)
        # Every kill of a learner or worker may fall on one driver's life: budgets for all of them, on both runs (the
        # budgets change no metric but faults/*, which the comparison leaves out).
        spec.overrides += [f"trainer.max_restarts={args.faults}", f"trainer.max_worker_replacements={max(8, args.faults)}"]
        return run_chaos(args, spec)
    baseline = args.out / "uninterrupted"
    started = time.perf_counter()
    rows = run_baseline(baseline, spec)
    print(f"uninterrupted: {len(rows)} steps in {time.perf_counter() - started:.0f} s; reward/total per step "
          f"{[round(r['reward/total'], 4) for r in rows]}; loss {[round(r['loss'], 6) for r in rows]}", flush=True)
    failed = 0
    for name, step in args.drills:
        what = DESCRIPTIONS[name].format(step=step)
        try:
            result = drill([(name, step)], args.out / f"{name}_at_{step}", baseline, spec)
        except DrillError as error:
            print(f"{what}: FAILED: {error}", flush=True)
            failed += 1
            continue
        verdict = "metrics equal the uninterrupted run's" if not result.problems else "DIFFERS: " + "; ".join(result.problems)
        failed += bool(result.problems)
        print(f"{what}: {len(result.rows)} steps in {result.wall_s:.0f} s, {result.faults}, "
              f"{result.leftover_processes} leftover processes; {verdict}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
