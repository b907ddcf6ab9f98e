"""The training records of a run and the sampler that deals them out in seeded, shuffled epochs."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from embodied_data.manifest import read_gt_captions, read_manifest
from embodied_data.records import Record, SkipReport

log = logging.getLogger(__name__)


@dataclass
class RunData:
    records: list[Record]  # the split the trainer samples from
    manifest: str
    gt_captions: dict[str, str]  # video path -> privileged simulator caption (synthetic data only)
    skipped: SkipReport


def load_run_data(cfg: DictConfig) -> RunData:
    if cfg.data.source == "synthetic":
        from embodied_data.synthetic.dataset import generate_dataset

        syn = cfg.data.synthetic
        generate_dataset(
            syn.out_dir,
            num_scenes=syn.scenes,
            seed=syn.seed,
            questions_per_scene=syn.questions_per_scene,
            num_frames=syn.frames,
            fps=syn.fps,
            size=syn.size,
        )
        manifest = str(Path(syn.out_dir) / "manifest.parquet")
    else:
        manifest = cfg.data.manifest
    if not Path(manifest).is_file():
        raise FileNotFoundError(f"manifest {manifest} does not exist (make one with `embodied-r data synth --out DIR`)")
    records, skipped = read_manifest(manifest)
    if len(skipped):
        log.warning("%s: %s", manifest, skipped.summary())
    split = [r for r in records if r.split == cfg.data.split]
    if cfg.data.split == "train" and not split:
        raise ValueError(f"{manifest} has no records in split {cfg.data.split!r}")
    if cfg.data.max_records:
        split = split[: cfg.data.max_records]
    try:
        gt = read_gt_captions(manifest)
    except (KeyError, ValueError):
        gt = {}
    return RunData(records=split, manifest=manifest, gt_captions=gt, skipped=skipped)


def tokenizer_corpus(data: RunData) -> list[str]:
    """The text a locally trained tokenizer learns from; train, sft and eval use the same, so one run dir's tokenizer fits all.

    The fixed prompt text (system and role prompts, the answer instructions, the judge's prompt) is in it once per
    record, as often as the prompts carry it, so the tokenizer gives it few tokens: configs/tiny.yaml's prompts fall
    from about 684 to 496 tokens. (It was once left out because the learning benchmark's SFT-to-RL delta shrank at the
    same final accuracy; issue 11 asked to keep a speed-up that does not lower the final accuracy.)
    """
    from rewards.judge import SYSTEM_PROMPT as JUDGE_SYSTEM_PROMPT
    from rollout.prompt import MULTIPLE_CHOICE_INSTRUCTION, NUMERIC_INSTRUCTION, ROLE_PROMPT, SYSTEM_PROMPT

    fixed = " ".join([SYSTEM_PROMPT, ROLE_PROMPT, MULTIPLE_CHOICE_INSTRUCTION, NUMERIC_INSTRUCTION, JUDGE_SYSTEM_PROMPT])
    return ([r.question + " " + " ".join(r.choices) for r in data.records] + list(data.gt_captions.values())
            + [fixed] * len(data.records))


class EpochSampler:
    """Seeded shuffles of the record indices, one per epoch; its position is part of a checkpoint.

    Every epoch deals each index exactly once. A take that runs past the end of an epoch continues into the next, whose
    order then puts the indices this take already holds last (`deferred`), so no batch holds one index twice (its
    seeds are per step and index: the group would be generated twice, identically, and count double) unless the batch
    is larger than the data set. A take is labelled with the epoch its first index comes from.
    """

    def __init__(self, size: int, seed: int):
        if size < 1:
            raise ValueError(f"EpochSampler needs at least one record, got {size}")
        self.size = size
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self.deferred: list[int] = []  # indices moved to the end of this epoch's order (see the class docstring)
        self._order = self._shuffle(0, [])

    def _shuffle(self, epoch: int, deferred: list[int]) -> list[int]:
        order = list(range(self.size))
        random.Random(self.seed * 100_003 + epoch).shuffle(order)
        if deferred:
            later = set(deferred)
            order = [i for i in order if i not in later] + [i for i in order if i in later]
        return order

    def _next_epoch(self, held: list[int]) -> None:
        self.epoch += 1
        self.position = 0
        self.deferred = sorted(set(held))
        self._order = self._shuffle(self.epoch, self.deferred)

    def take(self, count: int) -> tuple[list[int], int]:
        """`count` indices and the epoch (0-based) in which the batch started."""
        if self.position == self.size:  # the last take ended exactly at the epoch's end: this one starts the next
            self._next_epoch([])
        epoch = self.epoch
        picked: list[int] = []
        while len(picked) < count:
            if self.position == self.size:
                self._next_epoch(picked)
            picked.append(self._order[self.position])
            self.position += 1
        return picked, epoch

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "size": self.size,
                "deferred": list(self.deferred)}

    def restore(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.deferred = [int(i) for i in state.get("deferred", [])]
        self._order = self._shuffle(self.epoch, self.deferred)
