"""Every chart the project draws, with matplotlib's Agg backend (no display), each PNG written atomically: the
training run's curves in <run_dir>/plots (rewards, accuracy per category, response length, KL, phase seconds,
held-out evaluation), `embodied-r eval`'s accuracy bars, and the learning benchmark's curves and before/after bars."""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from pathlib import Path

from embodied_data.atomic import atomic_path

DPI = 100
BLUE, ORANGE, GRAY, DARK, GREEN, RED = "#4276b4", "#e68c32", "#5a5a5a", "#282828", "#78a05a", "#c83c3c"
# reward/<name> entries that are counts or seconds, not reward terms: left out of the reward plot.
REWARD_BOOKKEEPING = ("judged", "judge_failures", "judge_failure_rate", "judge_latency_s", "score_s")


def _figure(width_px: int, height_px: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(figure)  # pyplot-free: no global state, safe in any thread, never opens a window
    return figure


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=DPI)
    return path


def moving_average(values: Sequence[float | None], window: int) -> list[float | None]:
    """Trailing mean over the last `window` finite values (None where there is none yet)."""
    out, kept = [], collections.deque(maxlen=window)
    for v in values:
        if v is not None and math.isfinite(v):
            kept.append(v)
        out.append(sum(kept) / len(kept) if kept else None)
    return out


def _points(rows: Sequence[dict], name: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows where `name` is a finite number: absent or null steps are gaps, never 0."""
    steps, values = [], []
    for row in rows:
        value = row.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            steps.append(int(row["step"]))
            values.append(float(value))
    return steps, values


# ---- the training run's plots ---------------------------------------------------------------------------------------
def _names(rows: Sequence[dict], keep) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for name in row:
            if keep(name):
                seen[name] = None
    return sorted(seen)


def _is_reward_term(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and parts[0] == "reward" and parts[1] not in REWARD_BOOKKEEPING


def _category(prefix: str):
    return lambda name: name.startswith(prefix) and len(name) > len(prefix)


def _line_plot(rows: Sequence[dict], series: list[tuple[str, dict]], path: Path, title: str, ylabel: str,
               unit_range: bool = False) -> Path | None:
    """One line per (metric name, line style); None (nothing written) when no row has any of them."""
    drawn = [(name, style, *_points(rows, name)) for name, style in series]
    drawn = [d for d in drawn if d[2]]
    if not drawn:
        return None
    figure = _figure(900, 480)
    axes = figure.add_subplot()
    for name, style, steps, values in drawn:
        axes.plot(steps, values, label=name, marker="o", markersize=3, linewidth=1.6, **style)
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    if unit_range:
        axes.set_ylim(-0.02, 1.02)
    axes.grid(True, color="#dddddd")
    axes.legend(fontsize=8, loc="best", ncol=2 if len(drawn) > 6 else 1)
    figure.tight_layout()
    return _save(figure, path)


def training_plots(rows: Sequence[dict], out_dir: str | Path) -> list[Path]:
    """The PNGs of a run's metrics rows (metrics.jsonl): reward terms, accuracy per category (training batches solid,
    held-out evaluation dashed), response length, KL, phase seconds and, when the run evaluated, eval/*. Plots whose
    metrics no row holds are not written."""
    out = Path(out_dir)
    rows = [r for r in rows if "step" in r]
    train_categories = _names(rows, _category("reward/accuracy/"))
    eval_categories = _names(rows, _category("eval/accuracy/"))
    categories = sorted({n.split("/", 2)[2] for n in train_categories + eval_categories})
    colours = {c: f"C{i % 10}" for i, c in enumerate(categories)}
    per_category = [(f"reward/accuracy/{c}", {"color": colours[c]}) for c in categories] + [
        (f"eval/accuracy/{c}", {"color": colours[c], "linestyle": "--"}) for c in categories]
    plots = [
        _line_plot(rows, [(n, {}) for n in _names(rows, _is_reward_term)], out / "rewards.png",
                   "reward terms (mean over the step's completions)", "reward"),
        _line_plot(rows, per_category, out / "accuracy_by_category.png",
                   "accuracy per category (solid: training batch, dashed: held-out eval)", "accuracy", unit_range=True),
        _line_plot(rows, [("response/length", {}), ("eval/response_length", {"linestyle": "--"})],
                   out / "response_length.png", "response length (tokens)", "tokens"),
        _line_plot(rows, [("kl", {})], out / "kl.png", "KL to the reference policy", "kl"),
        _line_plot(rows, [(n, {}) for n in _names(rows, lambda n: n.startswith("time/"))], out / "time.png",
                   "seconds per phase of each step", "seconds"),
        _line_plot(rows, [(n, {}) for n in ("eval/accuracy", "eval/accuracy_macro", "eval/format")], out / "eval.png",
                   "held-out evaluation (greedy, one sample per question)", "rate", unit_range=True),
    ]
    return [p for p in plots if p is not None]


def _run_rows(run_dir: Path) -> list[dict]:
    from cluster.metrics import read_metrics

    metrics = run_dir / "metrics.jsonl"
    return read_metrics(metrics) if metrics.is_file() else []


def plot_run(run_dir: str | Path) -> list[Path]:
    """training_plots of <run_dir>/metrics.jsonl into <run_dir>/plots."""
    run_dir = Path(run_dir)
    return training_plots(_run_rows(run_dir), run_dir / "plots")


class RunPlots:
    """The driver's plots: `request` (at a checkpoint) reads the rows now and draws them in a worker thread, so the
    training loop does not wait for matplotlib (about a second a time on 2 cores); `finish` (at the end of the run)
    waits for it and draws the final rows. A failed background drawing is logged, not raised: it must not end a run."""

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self._executor = None
        self._pending = None

    def request(self) -> None:
        if not self.enabled:
            return
        from concurrent.futures import ThreadPoolExecutor

        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plots")
        rows = _run_rows(self.run_dir)  # read here: the file is not read while the driver appends to it
        self._pending = self._executor.submit(self._draw, rows)

    def _draw(self, rows: list[dict]) -> None:
        import logging

        try:
            training_plots(rows, self.run_dir / "plots")
        except Exception:
            logging.getLogger("embodied_r.train").exception("drawing the plots in %s failed", self.run_dir / "plots")

    def finish(self) -> list[Path]:
        """Waits for a background drawing, then draws every row; returns the PNGs written (none when disabled)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        return plot_run(self.run_dir) if self.enabled else []


# ---- bar charts on a 0..1 axis --------------------------------------------------------------------------------------
def _bar_axes(labels: Sequence[str], title: str, legend: str, row_px: int):
    width = 900
    figure = _figure(width, row_px * len(labels) + 130)
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=11, loc="left")
    axes.set_xlim(0, 1)
    axes.set_ylim(len(labels) - 0.5, -0.5)  # the first row on top
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    axes.grid(True, axis="x", color="#d7d7d7")
    axes.set_axisbelow(True)
    figure.text(0.01, 0.01, legend, fontsize=8, color="#505050")
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    return figure, axes


def _bar(axes, row: float, value: float | None, height: float, colour: str, text: str | None = None) -> None:
    """A bar for `value` (None draws as 0) with its value written right of it. Not antialiased: the bar's pixels are
    exactly its colour, so its length can be read off the image."""
    value = value or 0.0
    axes.barh(row, value, height=height, color=colour, antialiased=False, linewidth=0)
    axes.text(value + 0.01, row, f"{value:.3f}" if text is None else text, va="center", fontsize=8)


def accuracy_bars(rows: Sequence[dict], path: str | Path, title: str, overall: str = "overall") -> Path:
    """Accuracy per category (`embodied-r eval`'s rows, the overall row last): blue multiple choice, orange numeric
    (MRA), green mixed, gray overall."""
    colours = {"multiple_choice": BLUE, "numeric": ORANGE, "mixed": GREEN}
    figure, axes = _bar_axes([r["category"] for r in rows], title,
                             "blue: multiple-choice accuracy   orange: numeric MRA   gray: overall (mean over samples)", 40)
    for index, row in enumerate(rows):
        colour = GRAY if row["category"] == overall else colours[row["kind"]]
        _bar(axes, index, row["accuracy"], 0.7, colour, f"{row['accuracy'] or 0.0:.3f}" + (" MRA" if row["kind"] == "numeric" else ""))
    return _save(figure, path)


def before_after_bars(table: Sequence[dict], path: str | Path, title: str) -> Path:
    """Paired bars per category: `before` (gray) and `after` (blue) accuracy, with `answer_prior` as a red tick."""
    figure, axes = _bar_axes([r["category"] for r in table], title,
                             "gray: SFT checkpoint (before RL)   blue: final GRPO checkpoint   "
                             "red tick: answer-prior reference (no model)", 52)
    for index, row in enumerate(table):
        _bar(axes, index - 0.19, row["before"], 0.36, "#a0a0a0")
        _bar(axes, index + 0.19, row["after"], 0.36, BLUE)
        if row.get("answer_prior") is not None:
            axes.vlines(row["answer_prior"], index - 0.42, index + 0.42, colors=RED, linewidth=2)
    return _save(figure, path)


def reward_curves(rows: Sequence[dict], path: str | Path, title: str, window: int,
                  metrics: Sequence[str] = ("reward/total", "reward/accuracy", "reward/format")) -> Path:
    """`metrics` per step (thin, faint: each step; thick: the trailing mean of `window` steps), on a 0..1 axis."""
    colours = {"reward/total": DARK, "reward/accuracy": BLUE, "reward/format": ORANGE}
    figure = _figure(900, 480)
    axes = figure.add_subplot()
    for index, name in enumerate(metrics):
        colour = colours.get(name, f"C{index}")
        steps = [r["step"] for r in rows]
        raw = [r.get(name) for r in rows]
        shown = [(s, v) for s, v in zip(steps, raw) if v is not None and math.isfinite(v)]
        if shown:
            axes.plot(*zip(*shown), color=colour, alpha=0.35, linewidth=1)
        smooth = [(s, v) for s, v in zip(steps, moving_average(raw, window)) if v is not None]
        if smooth:
            axes.plot(*zip(*smooth), color=colour, linewidth=3, label=name)
    axes.set_title(title, fontsize=11, loc="left")
    axes.set_xlabel(f"GRPO step (thin: per step; thick: mean of the last {window} steps)")
    axes.set_ylim(0, 1)
    axes.grid(True, color="#dcdcdc")
    axes.legend(loc="lower right", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)
