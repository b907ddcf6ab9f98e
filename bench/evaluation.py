"""What the learning benchmark and the out-of-distribution check both read off a policy: a checkpoint's greedy
evaluation, the best constant answer over the evaluated questions, the distinct answers it gave, and a mean of the
values present."""

from __future__ import annotations

import collections
import json
from pathlib import Path


def best_constant_answer(records, split: str, only_ids: set[str] | None = None) -> dict[str, dict]:
    """Per category of `split` (restricted to `only_ids`, the questions evaluated, when given): the one answer that,
    given to every question whatever it asks, scores best there, and that score (an oracle over those very questions:
    no policy that ignores the question can beat it). Multiple choice: the best letter. Numeric: the best of the
    questions' own gold values, scored with MRA as the evaluation scores it."""
    from rewards.accuracy import accuracy_reward

    by_category: dict[str, list] = collections.defaultdict(list)
    for r in records:
        if r.split == split and (only_ids is None or r.id in only_ids):
            by_category[r.category].append(r)
    best: dict[str, dict] = {}
    for category, rows in sorted(by_category.items()):
        if rows[0].is_numeric:
            candidates = sorted({f"{float(r.answer):g}" for r in rows})
        else:
            candidates = sorted({letter for r in rows for letter in r.letters})
        scored = [(sum(accuracy_reward(f"<think> </think><answer> {c} </answer>", r) for r in rows) / len(rows), c)
                  for c in candidates]
        accuracy, answer = max(scored, key=lambda pair: pair[0])  # the first of equals: candidates are sorted
        best[category] = {"answer": answer, "accuracy": accuracy, "n": len(rows)}
    return best


def mean_of_present(values) -> float | None:
    """The mean of the values that are not None; None when none is."""
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def shutdown_ray() -> None:
    """Each phase starts its own local Ray: the driver of `train` keeps its placement groups until Ray stops."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def evaluate_checkpoint(cfg_object, checkpoint: str, manifest: Path, out_dir: Path, split: str, workers: int,
                        max_records: int, judge: str | None = None, progress: bool = True) -> dict:
    """run_eval of `checkpoint` on `split` of `manifest` (greedy, one answer per question) into `out_dir` under the
    TrainConfig object `cfg_object`, with the local Ray it starts shut down afterwards, so the next phase starts its own."""
    from cluster.evaluate import EvalOptions, run_eval

    options = EvalOptions(checkpoint=checkpoint, manifest=str(manifest), out_dir=str(out_dir), split=split, samples=1,
                          workers=workers, max_records=max_records, judge=judge)
    try:
        return run_eval(cfg_object, options, progress=progress)
    finally:
        shutdown_ray()


def distinct_answers(eval_dir: Path) -> dict[str, int]:
    """Per category, how many different answers the greedy policy gave (the text inside <answer>, stripped): 1 means
    one answer for every question, whatever the video and the question say."""
    from rewards.answer import extract_answer

    answers: dict[str, set[str]] = collections.defaultdict(set)
    for line in (eval_dir / "eval_samples.jsonl").read_text().splitlines():
        sample = json.loads(line)
        answers[sample["category"]].add((extract_answer(sample["text"]) or "").strip())
    return {c: len(v) for c, v in sorted(answers.items())}
