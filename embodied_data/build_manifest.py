"""Build the manifest that `train`, `perceive` and `eval` read from a downloaded benchmark (VSI-Bench, UrbanVideo-Bench,
the Embodied-R JSON format, EgoSchema, MVBench), with every row the loader could not use counted and named, and merge
such manifests into one (the paper trains on VSI-Bench and UrbanVideo-Bench together)."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from embodied_data.manifest import read_manifest, read_manifest_metadata, write_manifest
from embodied_data.records import Record, SkipReport

FORMATS = ("vsi_bench", "urbanvideo", "embodied_r", "egoschema", "mvbench")
# A folder given as PATH: the file each format reads inside it (first that exists), and its default video folder.
_FILES_IN_FOLDER: dict[str, tuple[str, ...]] = {
    "vsi_bench": ("test-00000-of-00001.parquet", "*.parquet"),
    "urbanvideo": ("MCQ.parquet", "*.parquet"),
    "embodied_r": ("*.json",),
    "egoschema": ("questions.json",),
    "mvbench": ("json/egocentric_navigation.json",),
}


@dataclass
class BuiltManifest:
    """What `build_manifest` wrote: the manifest, its records, the loader's skip report, the kept records whose
    video file is absent, and the input file and video folder it used."""

    path: Path
    records: list[Record]
    report: SkipReport
    without_video: list[Record] = field(default_factory=list)
    source_file: Path | None = None
    video_dir: Path | None = None

    def summary(self, show: int = 5) -> str:
        """Rows written, counts per split and category, skips by reason with the first `show` named, and the kept
        records without a video (counted, the first `show` named)."""
        lines = [f"wrote {self.path}: {len(self.records)} rows from {self.source_file}"
                 f" (videos: {self.video_dir if self.video_dir is not None else 'no folder given'})"]
        lines.append("by split: " + ", ".join(f"{s} {n}" for s, n in sorted(Counter(r.split for r in self.records).items())))
        lines.append("by category:")
        for category, n in sorted(Counter(r.category for r in self.records).items()):
            lines.append(f"  {category:32s} {n:6d}")
        lines.append(f"skipped: {self.report.summary()}")
        for reason, n in self.report.counts_by_reason().most_common():
            lines.append(f"  {reason:32s} {n:6d}")
        for record_id, reason in self.report.skipped[:show]:
            lines.append(f"  skipped {record_id}: {reason}")
        if len(self.report) > show > 0:
            lines.append(f"  ... and {len(self.report) - show} more")
        if self.without_video:
            lines.append(f"kept without a video file (--keep-missing-videos): {len(self.without_video)} rows, "
                         f"{len({r.video for r in self.without_video})} videos; perceive, train and eval skip them until "
                         f"the file is there (a relative path below is taken from the manifest's folder, "
                         f"{Path(self.path).resolve().parent})")
            for record in self.without_video[:show]:
                lines.append(f"  {record.id}: {record.video}")
        return "\n".join(lines)


def resolve_input(fmt: str, path: str | os.PathLike) -> Path:
    """The benchmark file to read: `path` itself, or for a folder the format's file inside it (_FILES_IN_FOLDER)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"{fmt} input {path} does not exist")
    for pattern in _FILES_IN_FOLDER[fmt]:
        matches = sorted(path.glob(pattern))
        if len(matches) == 1 or (matches and "*" not in pattern):
            return matches[0]
        if len(matches) > 1:
            raise ValueError(f"{path}: several {pattern} files ({', '.join(m.name for m in matches)}); pass one of them")
    raise FileNotFoundError(f"{path}: no {' or '.join(_FILES_IN_FOLDER[fmt])} in this folder for format {fmt}")


def default_video_dir(fmt: str, source_file: Path) -> Path | None:
    """The video folder of a download laid out as published, when it exists: MVBench's video/vlnqa/ beside json/,
    else a videos/ folder beside the benchmark file."""
    if fmt == "mvbench":
        from embodied_data.loaders.mvbench import mvbench_task_paths

        candidate = mvbench_task_paths(source_file.parent.parent, _mvbench_task(source_file))[1]
    else:
        candidate = source_file.parent / "videos"
    return candidate if candidate is not None and candidate.is_dir() else None


def _mvbench_task(source_file: Path) -> str:
    """The MVBench task a task file holds: its name (json/<task>.json), or Egocentric Navigation for another name."""
    from embodied_data.loaders.mvbench import DEFAULT_TASK, MVBENCH_TASKS

    return source_file.stem if source_file.stem in MVBENCH_TASKS else DEFAULT_TASK


def _loader(fmt: str) -> Callable[..., tuple[list[Record], SkipReport]]:
    from embodied_data import loaders

    return {
        "vsi_bench": loaders.load_vsi_bench,
        "urbanvideo": loaders.load_urbanvideo,
        "embodied_r": loaders.load_embodied_r_json,
        "egoschema": loaders.load_egoschema,
        "mvbench": loaders.load_mvbench,
    }[fmt]


def build_manifest(
    fmt: str,
    path: str | os.PathLike,
    out: str | os.PathLike,
    video_dir: str | os.PathLike | None = None,
    keep_missing_videos: bool = False,
    split_seed: int | None = 0,
    split: str | None = None,
) -> BuiltManifest:
    """Load benchmark `path` in format `fmt` and write its records to the manifest `out` (parquet, atomically).

    `video_dir` defaults to the published layout's folder when it exists (`default_video_dir`).  A record whose video
    is absent is skipped and reported, or with `keep_missing_videos` kept (its video named under `video_dir`, or
    relative to the manifest's folder without one) and counted in `without_video`.  A repeated id is skipped.
    Splits: `split` puts every record in that split; otherwise VSI-Bench and UrbanVideo-Bench get a seeded scene-level
    train/val/test split (`split_seed`), the other formats (test sets) "test".
    """
    source_file = resolve_input(fmt, path)
    videos = Path(video_dir) if video_dir is not None else default_video_dir(fmt, source_file)
    if videos is not None and not videos.is_dir():
        raise FileNotFoundError(f"video folder {videos} does not exist")
    kwargs: dict = dict(video_dir=videos, allow_missing_videos=keep_missing_videos, verbose=False)
    if fmt in ("vsi_bench", "urbanvideo"):
        kwargs["split_seed"] = None if split is not None else split_seed
    elif split is not None:
        kwargs["split"] = split
    if fmt == "mvbench":
        kwargs["task"] = _mvbench_task(source_file)
    records, report = _loader(fmt)(source_file, **kwargs)
    if split is not None:
        records = [dataclasses.replace(r, split=split) for r in records]
    unique: list[Record] = []
    seen: set[str] = set()
    without_video: list[Record] = []
    for record in records:
        if record.id in seen:
            report.add(record.id, "duplicate id: an earlier row has the same id")
            continue
        seen.add(record.id)
        if not Path(record.video).is_file():
            if videos is not None:
                record = dataclasses.replace(record, video=str(videos.resolve() / record.video))
            without_video.append(record)
        unique.append(record)
    if not unique:
        first = "; ".join(f"{record_id}: {reason}" for record_id, reason in report.skipped[:3])
        hint = (" (pass --videos, or --keep-missing-videos to keep questions without their video)"
                if report.counts_by_reason().get("missing video") == len(report) else "")
        raise ValueError(f"no usable record in {source_file}, nothing written to {out}: {report.summary()}{hint}"
                         + (f"; first: {first}" if first else ""))
    metadata = {
        "kind": "benchmark",
        "format": fmt,
        "source": str(source_file.resolve()),
        "video_dir": str(videos.resolve()) if videos is not None else None,
        "rows": len(unique),
        "skipped": len(report),
        "without_video": len(without_video),
    }
    written = write_manifest(unique, out, metadata=metadata)
    return BuiltManifest(written, unique, report, without_video, source_file, videos)


def merge_manifests(paths: list[str | os.PathLike], out: str | os.PathLike) -> tuple[list[Record], SkipReport]:
    """Write the records of several manifests to one (`out`), videos as absolute paths, in the order given.

    Rows are read as `read_manifest` reads them, a missing video kept (each input's build already reported it); a
    malformed row, or an id an earlier input already has, is skipped and reported naming the input.  Raises
    ValueError when nothing is left.
    """
    if not paths:
        raise ValueError("no manifest to merge")
    report = SkipReport(log_each=False)
    merged: list[Record] = []
    seen: dict[str, Path] = {}
    inputs = []
    for path in map(Path, paths):
        records, skipped = read_manifest(path, allow_missing_videos=True)
        for record_id, reason in skipped.skipped:
            report.add(record_id, f"{reason} (in {path})")
        for record in records:
            if record.id in seen:
                report.add(record.id, f"duplicate id: {path} repeats an id of {seen[record.id]}")
                continue
            seen[record.id] = path
            merged.append(record)
        inputs.append({"path": str(path.resolve()), "rows": len(records), "built": read_manifest_metadata(path)})
    if not merged:
        raise ValueError(f"no usable record in {', '.join(map(str, paths))}: {report.summary()}")
    write_manifest(merged, out, metadata={"kind": "merged", "inputs": inputs, "rows": len(merged), "skipped": len(report)})
    return merged, report
