"""The run's sample record: a bounded, append-only set of JSON pages under <run_dir>/samples/, one per recorded step
(or evaluation), each holding a few GRPO groups with their video's key-frame thumbnails, the perception text per key
frame, the prompt's size and every completion with its reward terms, advantage, judge verdict and policy version.

Layout (everything written atomically, so a reader or a killed run never sees half a file):

    samples/pages/train_000002.json   one recorded training step: its groups (trainer.samples_max_groups of them)
    samples/pages/eval_000004.json    the held-out evaluation made at that step (trainer.eval_every)
    samples/frames/<video key>/       k00.jpg ... and meta.json: the key-frame thumbnails, written once per video and
                                      shared by every page that shows it (meta.json is written last: it marks them done)
    samples/index.json                one summary line per page (the viewer's table of contents), rewritten each time

Bounded: when the pages pass trainer.samples_max_mb, the oldest pages are thinned (every second page of the older
half of all but the newest KEEP_NEWEST) and thumbnails no page shows any more are removed. Resumable: a run that
resumes at step S drops the pages of steps after S, as metrics.jsonl drops their rows, since they are run again.
`embodied-r view` (cluster/view_cmd.py) turns the folder into a static HTML viewer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from embodied_data.atomic import atomic_path, write_text_atomically

log = logging.getLogger("embodied_r.train")

FORMAT_VERSION = 1
PAGES, FRAMES, INDEX = "pages", "frames", "index.json"
KEEP_NEWEST = 8  # pages never thinned: the newest steps are the ones a person looks at during a run
THUMB_WIDTH = 160  # pixels; a key-frame strip of 8-32 thumbnails stays a few hundred kB per video at most
THUMB_QUALITY = 75
MAX_EVAL_GROUPS = 256  # an in-training evaluation of a whole split (eval_max_questions=0) is recorded up to this
_FRAME_LINE = re.compile(r"^Frame (\d+):\s?(.*)$")


# ---- pieces of a page -----------------------------------------------------------------------------------------------
def split_captions(video_text: str) -> list[str]:
    """The perception text per key frame: `Frame i: ...` lines of the prompt's video text, each with what follows it up
    to the next frame line (a VLM answer may span lines)."""
    captions: list[str] = []
    for line in video_text.splitlines():
        match = _FRAME_LINE.match(line)
        if match:
            captions.append(match.group(2))
        elif captions:
            captions[-1] += "\n" + line
    return captions


def video_key(video: str) -> str:
    """A folder name for a video's thumbnails: its file stem (readable) and a hash of its path (unique)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(video).stem)[:40] or "video"
    return f"{stem}-{hashlib.sha1(str(video).encode()).hexdigest()[:10]}"


def is_correct(accuracy: float, numeric: bool) -> bool:
    """Multiple choice: the right letter. Numeric: a mean relative accuracy of at least 0.5 (within 25% of the truth)."""
    return accuracy >= 0.5 if numeric else accuracy >= 1.0 - 1e-9


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def clean_row(row: dict) -> dict:
    """A metrics row with NaN and infinities as null, as metrics.jsonl writes it (the pages stay strict JSON)."""
    return {k: _finite(v) if isinstance(v, float) else v for k, v in row.items()}


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None, None
    mean = sum(finite) / len(finite)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite))


class FrameStore:
    """Key-frame thumbnails, written once per video under samples/frames/<video key>/ and reused by every page.

    The frames shown are the ones the perception text describes: the key frames perception.keyframes picks (the VLM
    path and ground_truth_frames=keyframes), the 1-fps samples (ground_truth_frames=one_fps) or as many frames spread
    uniformly, whichever count matches the text's `Frame i` lines. A video that cannot be read keeps its captions and
    gets no thumbnails (logged once)."""

    def __init__(self, folder: Path, keyframe_cfg) -> None:
        self.folder = folder
        self.keyframe_cfg = keyframe_cfg
        self._memo: dict[str, dict] = {}

    def frames(self, video: str, captions: list[str]) -> tuple[str, list[dict]]:
        """(video key, one dict per caption: position, frame number, thumbnail path relative to samples/, caption)."""
        key = video_key(video)
        meta = self._meta(key, video, len(captions))
        numbers, thumbs = meta.get("frames", []), meta.get("thumbs", [])
        out = []
        for i, caption in enumerate(captions):
            out.append({
                "position": i,
                "frame": numbers[i] if i < len(numbers) else None,
                "thumb": f"{FRAMES}/{key}/{thumbs[i]}" if i < len(thumbs) and thumbs[i] else None,
                "caption": caption,
            })
        return key, out

    def _meta(self, key: str, video: str, count: int) -> dict:
        if key in self._memo and self._memo[key].get("count") == count:
            return self._memo[key]
        folder = self.folder / key
        meta_path = folder / "meta.json"
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                if meta.get("count") == count:
                    self._memo[key] = meta
                    return meta
            except (OSError, ValueError):
                pass  # rewritten below
        meta = {"video": str(video), "count": count, "frames": [], "thumbs": [], "error": None}
        try:
            numbers, images = self._pick(video, count)
            folder.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images):
                name = f"k{i:02d}.jpg"
                _write_thumbnail(folder / name, image)
                meta["thumbs"].append(name)
            meta["frames"] = [int(n) for n in numbers]
        except Exception as error:  # a viewer without pictures beats a training run stopped by one unreadable video
            meta["error"] = f"{type(error).__name__}: {error}"
            log.warning("samples: no key-frame thumbnails for %s: %s", video, meta["error"])
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomically(meta_path, json.dumps(meta))
        self._memo[key] = meta
        return meta

    def _pick(self, video: str, count: int) -> tuple[list[int], list]:
        from perception.keyframes import extract_keyframes, uniform_positions
        from perception.video import read_frames

        if count == 0:
            return [], []
        keyframes = extract_keyframes(video, self.keyframe_cfg, threaded=False)
        if len(keyframes.frames) == count:
            numbers = list(keyframes.frames)
            if len(keyframes.images) == count:
                return numbers, list(keyframes.images)
        elif len(keyframes.sampled_frames) == count:
            numbers = list(keyframes.sampled_frames)
        else:
            total = (keyframes.sampled_frames[-1] + 1) if keyframes.sampled_frames else count
            numbers = uniform_positions(total, min(count, total))
        decoded = read_frames(video, numbers, self.keyframe_cfg.decoder)
        return numbers, [decoded[n] for n in numbers]


def _write_thumbnail(path: Path, rgb) -> None:
    from PIL import Image

    image = Image.fromarray(rgb)
    if image.width > THUMB_WIDTH:
        image = image.resize((THUMB_WIDTH, max(1, round(image.height * THUMB_WIDTH / image.width))), Image.BILINEAR)
    with atomic_path(path) as temp:
        image.save(temp, format="JPEG", quality=THUMB_QUALITY)


def record_fields(record) -> dict:
    """What a page shows of a question: its text, choices, letters, gold answer and category."""
    return {
        "record_id": record.id, "category": record.category, "question": record.question,
        "choices": list(record.choices), "letters": record.letters, "answer": record.answer,
        "numeric": record.is_numeric, "video": str(record.video),
    }


def _group(record, prompt, video_texts: dict[str, str], store: FrameStore, completions: list[dict]) -> dict:
    key, frames = store.frames(str(record.video), split_captions(video_texts.get(record.id, "")))
    mean, std = _mean_std([c["total"] for c in completions])
    return {
        **record_fields(record), "video_key": key, "frames": frames,
        "prompt_tokens": len(prompt.token_ids), "prompt_truncated": bool(getattr(prompt, "truncated", False)),
        "reward_mean": mean, "reward_std": std, "completions": completions,
    }


def _judge_verdict(letter: str | None, failed: bool, consistency, errors: Sequence[str]) -> str:
    if failed:
        return "failed: " + (errors[0] if errors else "no letter (timeout or failed batch)")
    if letter:
        return f"{letter} ({'agrees' if consistency else 'disagrees'})"
    return "not asked"


def train_groups(rollouts, scored, video_texts: dict[str, str], store: FrameStore, max_groups: int,
                 sample_mismatch: Sequence[float] = ()) -> list[dict]:
    """The first `max_groups` groups of a step (its prompts are a random draw already), each completion with its reward
    terms (rewards.combine.RewardBatch), advantage, judge verdict, the policy version that sampled it, its mean
    sampler log-prob and, when the learner took it, its log-prob mismatch (`sample_mismatch`, in the learner's sample
    order: the mean |learner - sampler| log-prob over its tokens)."""
    rewards = scored.rewards
    size = len(rollouts.groups[0]) if rollouts.groups else 0
    out = []
    for g, (prompt, group) in enumerate(zip(rollouts.batch.prompts[:max_groups], rollouts.groups[:max_groups])):
        record = prompt.record
        completions = []
        for j, completion in enumerate(group):
            i = g * size + j
            letters = rewards.judge_letters
            letter = letters[i] if letters else None
            consistency = rewards.consistency[i]
            accuracy = float(rewards.accuracy[i])
            completions.append({
                "index": j, "text": completion.text, "tokens": len(completion.token_ids), "finished": completion.finished,
                "format": float(rewards.format[i]), "accuracy": accuracy,
                "consistency": None if consistency is None else float(consistency),
                "judge_letter": letter, "judge_failed": bool(rewards.judge_failed[i]),
                "judge": _judge_verdict(letter, bool(rewards.judge_failed[i]), consistency, rewards.judge_errors),
                "excluded": bool(rewards.excluded[i]), "total": _finite(rewards.total[i]),
                "advantage": _finite(scored.advantages[i]) if scored.advantages else None,
                "overlong": scored.overlong[i] if scored.overlong else None,
                "policy_version": completion.policy_version,
                "mean_logprob": (sum(completion.logprobs) / len(completion.logprobs)) if completion.logprobs else None,
                "logprob_mismatch": _mismatch_of(i, scored, sample_mismatch),
                "correct": is_correct(accuracy, record.is_numeric),
            })
        out.append({"group": g, **_group(record, prompt, video_texts, store, completions)})
    return out


def _mismatch_of(completion: int, scored, sample_mismatch: Sequence[float]) -> float | None:
    """The learner's log-prob mismatch of a completion; None when it was not learned (filtered, excluded, skipped)."""
    position = getattr(scored, "sample_of_completion", {}).get(completion)
    if position is None or position >= len(sample_mismatch):
        return None
    return _finite(sample_mismatch[position])


def eval_groups(prompts: Sequence, groups: Sequence[Sequence], scores: Sequence, video_texts: dict[str, str],
                store: FrameStore, policy_version: int | None) -> list[dict]:
    """Evaluation answers as groups (one per question, its samples as completions), scored by cluster.evaluate's
    SampleScore: accuracy, format, consistency (when a judge read it) and length."""
    out, flat = [], iter(scores)
    for g, (prompt, group) in enumerate(zip(prompts, groups)):
        record = prompt.record
        completions = []
        for j, completion in enumerate(group):
            score = next(flat)
            completions.append({
                "index": j, "text": completion.text, "tokens": len(completion.token_ids), "finished": completion.finished,
                "format": float(score.format), "accuracy": float(score.accuracy), "consistency": score.consistency,
                "judge_letter": None, "judge_failed": bool(score.judge_failed),
                "judge": "failed" if score.judge_failed else ("not asked" if score.consistency is None else
                                                              ("agrees" if score.consistency else "disagrees")),
                "excluded": False, "total": float(score.accuracy), "advantage": None, "overlong": None,
                "policy_version": completion.policy_version if policy_version is None else policy_version,
                "mean_logprob": (sum(completion.logprobs) / len(completion.logprobs)) if completion.logprobs else None,
                "correct": is_correct(float(score.accuracy), record.is_numeric),
            })
        out.append({"group": g, **_group(record, prompt, video_texts, store, completions)})
    return out


def wrong_first(groups: list[dict]) -> list[dict]:
    """Groups by category, those with no correct answer first (what a person reviewing an evaluation looks at)."""
    return sorted(groups, key=lambda g: (g["category"], any(c["correct"] for c in g["completions"]), g["group"]))


# ---- the folder -----------------------------------------------------------------------------------------------------
def page_summary(page: dict, size: int) -> dict:
    """The index line of a page: what the viewer lists and filters on without opening the page."""
    completions = [c for g in page["groups"] for c in g["completions"]]
    totals = [c["total"] for c in completions if c["total"] is not None]
    return {
        "id": page["id"], "kind": page["kind"], "step": page["step"], "label": page["label"],
        "groups": len(page["groups"]), "completions": len(completions), "bytes": size,
        "categories": sorted({g["category"] for g in page["groups"]}),
        "videos": sorted({g["video_key"] for g in page["groups"]}),
        "reward_mean": sum(totals) / len(totals) if totals else None,
        "accuracy": sum(c["accuracy"] for c in completions) / len(completions) if completions else None,
        "correct": sum(c["correct"] for c in completions),
    }


class SampleFolder:
    """The pages, thumbnails and index of one samples/ folder, with the size bound and the resume rule."""

    def __init__(self, folder: str | Path, keyframe_cfg=None, max_bytes: int = 0) -> None:
        self.folder = Path(folder)
        (self.folder / PAGES).mkdir(parents=True, exist_ok=True)
        (self.folder / FRAMES).mkdir(parents=True, exist_ok=True)
        self.store = FrameStore(self.folder / FRAMES, keyframe_cfg)
        self.max_bytes = max_bytes
        self.index = read_index(self.folder)

    def write(self, page: dict) -> Path:
        page = {"version": FORMAT_VERSION, **page}
        text = json.dumps(page, ensure_ascii=False)
        path = write_text_atomically(self.folder / PAGES / f"{page['id']}.json", text)
        self.index = [p for p in self.index if p["id"] != page["id"]] + [page_summary(page, len(text.encode()))]
        self.thin()
        self.save_index()
        return path

    def drop_after(self, step: int) -> None:
        """Removes the pages of steps after `step` (a resumed run or a learner restart runs them again)."""
        for summary in [p for p in self.index if p["step"] > step]:
            (self.folder / PAGES / f"{summary['id']}.json").unlink(missing_ok=True)
        self.index = [p for p in self.index if p["step"] <= step]
        self.save_index()

    def thin(self) -> list[str]:
        """While the pages pass max_bytes: drop every second page of the older half of all but the newest KEEP_NEWEST
        (so old steps grow sparse, recent ones stay complete); then remove thumbnails no page shows. Returns the ids
        dropped."""
        dropped: list[str] = []
        if self.max_bytes <= 0:
            return dropped
        while sum(p["bytes"] for p in self.index) > self.max_bytes:
            ordered = sorted(self.index, key=lambda p: (p["step"], p["id"]))
            candidates = ordered[:-KEEP_NEWEST] if len(ordered) > KEEP_NEWEST else []
            if not candidates:
                break
            older = candidates[: max(1, (len(candidates) + 1) // 2)]
            victims = older[1::2] or older[:1]
            for victim in victims:
                (self.folder / PAGES / f"{victim['id']}.json").unlink(missing_ok=True)
                dropped.append(victim["id"])
            gone = {v["id"] for v in victims}
            self.index = [p for p in self.index if p["id"] not in gone]
        if dropped:
            shown = {key for p in self.index for key in p["videos"]}
            for folder in (self.folder / FRAMES).iterdir():
                if folder.is_dir() and folder.name not in shown:
                    shutil.rmtree(folder, ignore_errors=True)
                    self.store._memo.pop(folder.name, None)
            log.info("samples: over %.0f MB, thinned %d old page(s)", self.max_bytes / 2**20, len(dropped))
        return dropped

    def save_index(self) -> None:
        ordered = sorted(self.index, key=lambda p: (p["step"], p["kind"], p["id"]))
        write_text_atomically(self.folder / INDEX, json.dumps({"version": FORMAT_VERSION, "pages": ordered}, indent=1))


def read_index(folder: str | Path) -> list[dict]:
    """Every page's summary: the index's lines for the pages that exist, and a fresh summary of any page it lacks (a run
    killed between writing a page and the index)."""
    folder = Path(folder)
    known: dict[str, dict] = {}
    try:
        known = {p["id"]: p for p in json.loads((folder / INDEX).read_text(encoding="utf-8"))["pages"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    out = []
    for path in sorted((folder / PAGES).glob("*.json")):
        if path.name.startswith("."):
            continue
        if path.stem in known:
            out.append(known[path.stem])
            continue
        try:
            out.append(page_summary(json.loads(path.read_text(encoding="utf-8")), path.stat().st_size))
        except (OSError, ValueError, KeyError) as error:
            log.warning("samples: unreadable page %s skipped: %s", path, error)
    return out


def markdown_table(page: dict, width: int = 160) -> str:
    """The page as a markdown table (TensorBoard's text plugin renders it): one row per completion."""
    lines = [f"**{page['label']}**: {len(page['groups'])} groups", "",
             "| group | category | gold | # | format | accuracy | consistency (judge) | total | advantage | tokens | completion |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def cell(value, spec: str = ".2f") -> str:
        return "-" if value is None else format(value, spec)

    for g in page["groups"]:
        for c in g["completions"]:
            text = " ".join(c["text"].split()).replace("|", "\\|").replace("<", "&lt;")
            text = text if len(text) <= width else text[: width - 3] + "..."
            lines.append(
                f"| {g['group']} {g['record_id']} | {g['category']} | {g['answer']} | {c['index']} | {cell(c['format'])} "
                f"| {cell(c['accuracy'])} | {cell(c['consistency'])} ({c['judge']}) | {cell(c['total'], '.3f')} "
                f"| {cell(c['advantage'], '+.3f')} | {c['tokens']} | {text} |"
            )
    return "\n".join(lines)


# ---- the training run's recorder ------------------------------------------------------------------------------------
@dataclass
class _Settings:
    every: int
    max_groups: int
    max_bytes: int


class SampleRecorder:
    """What cluster/driver.py calls once per step: every trainer.samples_every steps it writes the step's first
    trainer.samples_max_groups groups as a page (and the step's held-out evaluation, when one ran), and sends the same
    table to the tracker's text backends (TensorBoard, W&B). trainer.samples_every=0 records nothing."""

    def __init__(self, cfg, run_dir: str | Path, video_texts: dict[str, str], start_step: int, tracker=None) -> None:
        trainer = cfg.trainer
        self.settings = _Settings(int(getattr(trainer, "samples_every", 1)), int(getattr(trainer, "samples_max_groups", 4)),
                                  int(getattr(trainer, "samples_max_mb", 256)) * 2**20)
        self.video_texts = video_texts
        self.tracker = tracker
        self.folder: SampleFolder | None = None
        if self.settings.every > 0:
            self.folder = SampleFolder(Path(run_dir) / "samples", cfg.perception.keyframes, self.settings.max_bytes)
            self.folder.drop_after(start_step)

    def record(self, step: int, rollouts, scored, row: dict, evaluation=None, learned=None) -> None:
        """Records `step` when it is due; `row` is the step's metrics row (the page keeps it: the viewer links each
        sample to it), `evaluation` the run's TrainingEval (its last answers are recorded when `row` has eval/*),
        `learned` the learner's step (cluster.stages.Learned: each learned sample's log-prob mismatch)."""
        if self.folder is None:
            return
        try:
            if step % self.settings.every == 0:
                mismatch = learned.sample_mismatch if learned is not None else ()
                groups = train_groups(rollouts, scored, self.video_texts, self.folder.store, self.settings.max_groups,
                                      mismatch)
                page = {
                    "id": f"train_{step:06d}", "kind": "train", "step": step, "label": f"step {step}",
                    "epoch": rollouts.batch.epoch, "policy_version": rollouts.policy_version,
                    "reward_weights": {"format": scored.weights.format, "accuracy": scored.weights.accuracy,
                                       "consistency": scored.weights.consistency},
                    "logprob_mismatch": _finite(row.get("rollout/logprob_mismatch")),
                    "metrics": clean_row(row), "groups": groups,
                }
                self._write(page)
            last = getattr(evaluation, "last_samples", None)
            if last is not None and "eval/accuracy" in row:
                prompts, groups, scores = last
                count = min(len(prompts), MAX_EVAL_GROUPS)
                page = {
                    "id": f"eval_{step:06d}", "kind": "eval", "step": step, "label": f"eval at step {step}",
                    "policy_version": row.get("eval/policy_version"), "metrics": clean_row(row),
                    "groups": wrong_first(eval_groups(prompts[:count], groups[:count], scores[:count], self.video_texts,
                                                      self.folder.store, row.get("eval/policy_version"))),
                }
                self._write(page)
                evaluation.last_samples = None
        except OSError as error:  # a full disk stops the record, not the training run
            log.warning("samples: step %d not recorded: %s", step, error)

    def _write(self, page: dict) -> None:
        self.folder.write(page)
        if self.tracker is not None and hasattr(self.tracker, "write_samples"):
            self.tracker.write_samples(page["step"], page["kind"], page)

    def rewind(self, step: int) -> None:
        if self.folder is not None:
            self.folder.drop_after(step)
