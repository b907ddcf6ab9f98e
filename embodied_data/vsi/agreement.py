"""Measure how many published VSI-Bench answers our layout-based answers reproduce, per question type, with the cause
of every question we cannot answer and of every answer that differs."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from embodied_data.atomic import write_text_atomically
from embodied_data.loaders.common import read_parquet_rows
from embodied_data.vsi.answers import CategoryDistances, Verdict, judge
from embodied_data.vsi.geometry import DISTANCE_METHODS
from embodied_data.vsi.layout import load_meta_dir

REQUIRED_COLUMNS = ("id", "scene_name", "question_type", "question", "ground_truth", "options")
DISTANCE_TYPES = ("object_abs_distance", "object_rel_distance")
# Alternative "closest point" measures scored beside the main one, to show which convention the benchmark used.
COMPARED_METHODS = ("sampled", "sampled_uncropped", "box", "centroid")


@dataclass
class TypeAgreement:
    total: int = 0
    covered: int = 0
    agree: int = 0
    not_covered: Counter = field(default_factory=Counter)  # cause -> questions
    disagreements: Counter = field(default_factory=Counter)  # cause -> questions
    agree_by_method: dict[str, int] = field(default_factory=dict)  # distance types only
    causes_by_method: dict[str, Counter] = field(default_factory=dict)  # distance types: method -> cause -> n

    def add(self, verdict: Verdict) -> None:
        self.total += 1
        if not verdict.covered:
            self.not_covered[verdict.cause] += 1
            return
        self.covered += 1
        if verdict.agree:
            self.agree += 1
        else:
            self.disagreements[verdict.cause] += 1

    @property
    def coverage(self) -> float:
        return self.covered / self.total if self.total else 0.0

    @property
    def agreement(self) -> float:
        return self.agree / self.covered if self.covered else 0.0

    def to_json(self) -> dict:
        out = {
            "total": self.total,
            "covered": self.covered,
            "agree": self.agree,
            "coverage_pct": round(100 * self.coverage, 2),
            "agreement_pct": round(100 * self.agreement, 2),
            "not_covered_causes": dict(self.not_covered.most_common()),
            "disagreement_causes": dict(self.disagreements.most_common()),
        }
        if self.agree_by_method:
            out["agree_by_distance_method"] = dict(self.agree_by_method)
            out["disagreement_causes_by_distance_method"] = {
                m: dict(c.most_common()) for m, c in self.causes_by_method.items()
            }
        return out

    def score_method(self, method: str, verdict: Verdict) -> None:
        """Count a covered distance question judged with an alternative closest-point measure."""
        self.agree_by_method[method] = self.agree_by_method.get(method, 0) + int(verdict.agree)
        causes = self.causes_by_method.setdefault(method, Counter())
        if not verdict.agree:
            causes[verdict.cause] += 1


@dataclass
class AgreementReport:
    by_type: dict[str, TypeAgreement]
    verdicts: list[Verdict]
    method: str

    def to_json(self) -> dict:
        return {question_type: stats.to_json() for question_type, stats in sorted(self.by_type.items())}

    def table(self) -> str:
        header = f"{'question type':30s} {'total':>6s} {'covered':>8s} {'agree':>6s} {'coverage':>9s} {'agreement':>10s}"
        lines = [header, "-" * len(header)]
        totals = TypeAgreement()
        for question_type, stats in sorted(self.by_type.items()):
            lines.append(
                f"{question_type:30s} {stats.total:6d} {stats.covered:8d} {stats.agree:6d} "
                f"{100 * stats.coverage:8.1f}% {100 * stats.agreement:9.1f}%"
            )
            totals.total, totals.covered, totals.agree = (
                totals.total + stats.total,
                totals.covered + stats.covered,
                totals.agree + stats.agree,
            )
        lines.append("-" * len(header))
        lines.append(
            f"{'all':30s} {totals.total:6d} {totals.covered:8d} {totals.agree:6d} "
            f"{100 * totals.coverage:8.1f}% {100 * totals.agreement:9.1f}%"
        )
        return "\n".join(lines)

    def causes(self) -> str:
        """One line per cause of a question not covered or an answer that differs."""
        lines = []
        for question_type, stats in sorted(self.by_type.items()):
            for cause, n in stats.not_covered.most_common():
                lines.append(f"  {question_type}: not covered ({n}): {cause}")
            for cause, n in stats.disagreements.most_common():
                lines.append(f"  {question_type}: disagrees ({n}): {cause}")
            for m, n in stats.agree_by_method.items():
                causes = "; ".join(f"{c} {k}" for c, k in stats.causes_by_method[m].most_common())
                line = f"  {question_type}: closest points by {m}: {n}/{stats.covered} agree"
                lines.append(line + (f" ({causes})" if causes else ""))
        return "\n".join(lines)


def run_agreement(
    parquet_path: str | Path,
    meta_dir: str | Path,
    method: str = "sampled",
    compare_methods: tuple[str, ...] = COMPARED_METHODS,
    progress: bool = True,
) -> AgreementReport:
    """Judge every question of the VSI-Bench parquet against answers computed from the meta_info layouts.

    `method` is the closest-point measure behind the verdicts ("sampled": VSI's own; "box": exact box-to-box;
    "centroid"); the distance types are also scored with each of `compare_methods`.
    """
    if method not in DISTANCE_METHODS:
        raise ValueError(f"unknown distance method {method!r}; choose from {sorted(DISTANCE_METHODS)}")
    layouts = load_meta_dir(meta_dir)
    rows = read_parquet_rows(parquet_path, REQUIRED_COLUMNS)
    by_scene: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_scene[str(row["scene_name"])].append(row)
    by_type: dict[str, TypeAgreement] = defaultdict(TypeAgreement)
    verdicts: list[Verdict] = []
    for scene, scene_rows in tqdm(sorted(by_scene.items()), desc="vsi agreement", unit="scene", disable=not progress):
        layout = layouts.get(scene)
        calculators = {m: CategoryDistances(layout, m) for m in {method, *compare_methods}} if layout else {}
        for row in scene_rows:
            verdict = judge(layout, row, calculators.get(method))
            verdicts.append(verdict)
            stats = by_type[verdict.question_type]
            stats.add(verdict)
            if verdict.question_type in DISTANCE_TYPES and verdict.covered:
                for other in compare_methods:
                    stats.score_method(other, verdict if other == method else judge(layout, row, calculators[other]))
    return AgreementReport(dict(by_type), verdicts, method)


def write_report(report: AgreementReport, out_path: str | Path) -> Path:
    """The per-type JSON ({type: {total, covered, agree, ...}}), written atomically."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomically(out_path, json.dumps(report.to_json(), indent=2, sort_keys=False) + "\n")
