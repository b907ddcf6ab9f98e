"""`embodied-r perceive`: describes the videos of a dataset manifest with the perception pool (Ray actors), reusing and
filling the run's content-addressed description cache, so that a later `train` / `eval` on that run finds every
description ready.

    embodied-r perceive --config configs/tiny.yaml run_dir=runs/a          # the run's data and models
    embodied-r perceive --manifest data/manifest.parquet --out runs/a --vlm /models/Qwen2.5-VL-7B-Instruct
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from embodied_data.records import Record, SkipReport

log = logging.getLogger("embodied_r.perceive")

# How many skipped records are listed one by one before the rest are only counted.
_LIST_SKIPPED = 20


@dataclass
class PerceiveSummary:
    records: int  # records asked for (after split / max_records)
    described: int  # records that have a description now
    computed: int  # descriptions computed in this call (one per distinct video, or per video and question)
    from_cache: int  # records whose description was already in the cache
    vlm_requests: int  # VLM requests made in this call (one per key frame of each computed description)
    cache_dir: str
    vlm: str
    manifest: str
    bad_rows: list[tuple[str, str]] = field(default_factory=list)  # (record id, reason): manifest rows not usable
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (record id, reason): records perception failed
    texts: dict[str, str] = field(default_factory=dict)  # record id -> video text


def perceive(cfg, split: str | None = None) -> PerceiveSummary:
    """Describes the records of `split` (None: cfg.data.split; "all": every split) of the configured data."""
    import ray
    from omegaconf import OmegaConf

    from cluster.runtime import start_ray
    from perception.cache import DescriptionCache
    from perception.pool import PerceptionPool, reserve_perception_pool

    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_object(cfg)  # the layers take their dataclass configs, as `train` passes them
    if cfg.perception.source != "vlm":
        raise ValueError(f"perception.source={cfg.perception.source}: that run needs no VLM descriptions, nothing to do "
                         "(set perception.source=vlm)")
    manifest, records, corpus, bad_rows = select_records(cfg, split or cfg.data.split)
    vlm = resolve_vlm(cfg, corpus)
    started_ray = not ray.is_initialized()
    start_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.namespace)
    try:
        pool = reserve_perception_pool("perception", cfg.perception)
        try:
            perception = PerceptionPool(cfg.perception, vlm, pool=pool)
            try:
                with DescriptionCache(cfg.perception.cache_dir, flush_every=cfg.perception.cache_flush_every) as cache:
                    descriptions, skipped = perception.describe(records, cache)
            finally:
                perception.shutdown()
        finally:
            pool.release()
    finally:
        if started_ray:
            ray.shutdown()
    return PerceiveSummary(
        records=len(records),
        described=len(descriptions),
        computed=perception.videos_described,
        from_cache=perception.records_from_cache,
        vlm_requests=perception.vlm_requests,
        cache_dir=str(cfg.perception.cache_dir),
        vlm=vlm,
        manifest=str(manifest),
        bad_rows=list(bad_rows.skipped),
        skipped=list(skipped.skipped),
        texts={record_id: description.to_text() for record_id, description in descriptions.items()},
    )


def select_records(cfg, split: str) -> tuple[Path, list[Record], list[str], SkipReport]:
    """(manifest, its records of `split`, the text corpus a `tiny` tokenizer is trained on, rows that were skipped).

    Synthetic data is generated first (reused when already there), exactly as `train` does.  The corpus is the one
    `train` uses (its training split), so a tiny model built here is the one `train` would build.
    """
    from embodied_data.manifest import read_gt_captions, read_manifest, records_of_split

    if cfg.data.source == "synthetic":
        from cluster.data import load_run_data

        manifest = Path(load_run_data(cfg).manifest)
    else:
        manifest = Path(cfg.data.manifest)
        if manifest.is_dir():
            manifest = manifest / "manifest.parquet"
        if not manifest.is_file():
            raise FileNotFoundError(f"manifest {manifest} does not exist (pass --manifest PATH/manifest.parquet)")
    records, bad_rows = read_manifest(manifest)
    try:
        chosen = records_of_split(records, split, manifest, bad_rows)
    except ValueError as error:
        raise ValueError(f"{error}; another split: --split NAME, or every split: --split all") from None
    if cfg.data.max_records:
        chosen = chosen[: cfg.data.max_records]
    train_split = [r for r in records if r.split == cfg.data.split][: cfg.data.max_records or None] or chosen
    try:
        captions = list(read_gt_captions(manifest).values())
    except (KeyError, ValueError):
        captions = []
    corpus = [r.question + " " + " ".join(r.choices) for r in train_split] + captions
    return manifest, chosen, corpus, bad_rows


def resolve_vlm(cfg, corpus: list[str]) -> str:
    """models.vlm as a loadable model: `tiny` builds (or reuses) the run's random-weight VLM under <run_dir>/models."""
    vlm = cfg.models.vlm
    if vlm == "tiny":
        from omegaconf import OmegaConf

        from cluster.models import prepare_models

        # Only the VLM: the policy and judge are built by `train` (from the same tokenizer, which is reused).
        typed = OmegaConf.to_object(cfg) if OmegaConf.is_config(cfg) else cfg
        only_vlm = dataclasses.replace(typed, models=dataclasses.replace(typed.models, policy="-", judge="-"))
        log.warning("models.vlm=tiny: describing with a random-weight VLM (its text is noise; pass --vlm PATH for a "
                    "real Qwen2.5-VL)")
        return prepare_models(only_vlm, corpus).vlm
    from perception.engines import vlm_engine_class

    if vlm_engine_class(cfg.perception.vlm.engine).local_model:  # a served model (openai) is named, not loaded here
        _check_loadable(vlm)
    return vlm


def _check_loadable(model: str) -> None:
    """Fails early, in the driver, with what to pass -- instead of every replica failing every video."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as error:
        raise ValueError(f"VLM {model!r} cannot be loaded ({type(error).__name__}: {str(error).splitlines()[0]}); pass "
                         "--vlm PATH of a local Qwen2.5-VL folder (no model hub is reachable offline)") from error


def render_summary(summary: PerceiveSummary) -> str:
    lines = [
        f"perceive: {summary.described} of {summary.records} records described: {summary.from_cache} from the cache, "
        f"{summary.described - summary.from_cache} by {summary.computed} descriptions computed now",
        f"VLM requests made: {summary.vlm_requests} (VLM {summary.vlm})",
        f"cache: {summary.cache_dir}",
        f"skipped records: {len(summary.skipped)} of {summary.records} (perception failed); "
        f"{len(summary.bad_rows)} manifest rows unusable",
    ]
    for title, entries in (("skipped", summary.skipped), ("unusable row", summary.bad_rows)):
        if not entries:
            continue
        reasons = Counter(reason.split(":")[0] for _, reason in entries)
        lines.append(f"  {title}, by reason: " + ", ".join(f"{n} x {reason}" for reason, n in reasons.most_common()))
        for record_id, reason in entries[:_LIST_SKIPPED]:
            lines.append(f"  {title} {record_id}: {reason}")
        if len(entries) > _LIST_SKIPPED:
            lines.append(f"  ... and {len(entries) - _LIST_SKIPPED} more")
    return "\n".join(lines)


def write_texts(summary: PerceiveSummary, records_path: str) -> Path:
    """Record id -> video text as JSON lines (atomically)."""
    from embodied_data.atomic import write_text_atomically

    lines = [json.dumps({"id": record_id, "video_text": text}) for record_id, text in sorted(summary.texts.items())]
    return write_text_atomically(records_path, "\n".join(lines) + ("\n" if lines else ""))


def config_from_args(args: argparse.Namespace):
    """The config `perceive` runs with: --config (or the schema) <- --manifest / --out / --vlm <- key=value overrides."""
    from cluster.config import load_config

    derived = []
    if args.manifest:
        derived += ["data.source=manifest", f"data.manifest={args.manifest}"]
    if args.out:
        derived.append(f"run_dir={args.out}")
    vlm = args.vlm
    if vlm is None and not args.config:
        # No config names a VLM: use the run folder's own (built by an earlier run), else ask for one.
        run_vlm = Path(args.out or ".") / "models" / "vlm"
        if args.out and (run_vlm / "config.json").is_file():
            vlm = str(run_vlm)
        else:
            raise ValueError("no VLM: pass --vlm PATH (a local Qwen2.5-VL folder, or `tiny` for a random-weight one built "
                             "under the run folder), or --config FILE whose models.vlm names one"
                             + (f"; {run_vlm} does not exist" if args.out else ""))
    if vlm is not None:
        derived.append(f"models.vlm={vlm}")
    return load_config(args.config, derived + list(args.overrides))


def run_from_args(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
        summary = perceive(cfg, args.split)
    except (ValueError, FileNotFoundError) as error:
        print(f"embodied-r perceive: error: {error}", file=sys.stderr)
        return 2
    print(render_summary(summary))
    if args.texts:
        print(f"video texts: {write_texts(summary, args.texts)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "perceive",
        description=(
            "Runs the perception pool (Ray actors, one VLM each) over the records of a manifest: key frames, one VLM "
            "request per key frame, parsed descriptions saved to the content-addressed cache (perception.cache_dir, by "
            "default <run_dir>/perception_cache) as they arrive. Cached descriptions are reused, so an interrupted run "
            "resumes. Shows a progress bar (rate, ETA) and prints the VLM requests made and every skipped record with "
            "its reason (bad manifest row, missing or unreadable video)."
        ),
        epilog=(
            "Examples: embodied-r perceive --config configs/tiny.yaml run_dir=runs/a | "
            "embodied-r perceive --manifest data/manifest.parquet --out runs/a --vlm /models/Qwen2.5-VL-7B-Instruct "
            "perception.num_replicas=4 perception.num_gpus_per_replica=1 perception.vlm.engine=vllm. "
            "Knobs: perception.question_aware, perception.num_replicas, perception.num_cpus_per_replica, "
            "perception.num_gpus_per_replica, perception.vlm.*, perception.keyframes.*, perception.cache_dir, "
            "data.max_records."
        ),
    )
    parser.add_argument("--config", metavar="FILE", help="YAML config (e.g. configs/tiny.yaml or a run's config.yaml): data, "
                        "models.vlm and perception settings come from it")
    parser.add_argument("--manifest", metavar="M", help="manifest.parquet (or its folder) to describe; sets data.source=manifest")
    parser.add_argument("--out", metavar="DIR", help="the run folder (sets run_dir): the cache goes to DIR/perception_cache, "
                        "where `train run_dir=DIR` looks; without --vlm, DIR/models/vlm is used if it exists")
    parser.add_argument("--vlm", metavar="PATH", help="the VLM: a local Qwen2.5-VL folder (or hub id when a hub is reachable), "
                        "`tiny` for a random-weight one; sets models.vlm")
    parser.add_argument("--split", default=None, help="which split to describe: a name (default: data.split, i.e. train) or all")
    parser.add_argument("--texts", metavar="FILE", help="also write record id -> video text as JSON lines to FILE")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides in OmegaConf dot notation, e.g. perception.num_replicas=2")
    parser.set_defaults(func=run_from_args)
