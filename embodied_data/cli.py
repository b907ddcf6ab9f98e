"""Command-line subcommands of the data layer: `data synth` renders a synthetic dataset, `data load` reads a benchmark
file, `data build-manifest` turns a downloaded benchmark into the manifest the other commands read; all report counts.
`data vsi-agreement` checks VSI-Bench's answers against its real 3D annotations."""

from __future__ import annotations

import argparse
from collections import Counter

from embodied_data.records import Record


def format_counts(records: list[Record]) -> str:
    """Counts per category and per split, one table each."""
    lines = [f"{len(records)} questions"]
    lines.append("by category:")
    for category, n in sorted(Counter(r.category for r in records).items()):
        lines.append(f"  {category:32s} {n:6d}")
    lines.append("by split:")
    for split, n in sorted(Counter(r.split for r in records).items()):
        scenes = len({r.scene for r in records if r.split == split})
        lines.append(f"  {split:32s} {n:6d}  ({scenes} scenes)")
    return "\n".join(lines)


def _synth(args: argparse.Namespace) -> None:
    from embodied_data.synthetic.dataset import generate_dataset

    records = generate_dataset(
        args.out,
        num_scenes=args.scenes,
        seed=args.seed,
        questions_per_scene=args.questions_per_scene,
        num_frames=args.frames,
        fps=args.fps,
        size=args.size,
        split_ratios=tuple(args.split),
        world=args.world,
    )
    print(f"dataset in {args.out} (manifest.parquet)")
    print(format_counts(records))


def _load(args: argparse.Namespace) -> None:
    from embodied_data import loaders
    from embodied_data.build_manifest import resolve_input

    loader = {"vsi_bench": loaders.load_vsi_bench, "urbanvideo": loaders.load_urbanvideo,
              "embodied_r": loaders.load_embodied_r_json, "egoschema": loaders.load_egoschema,
              "mvbench": loaders.load_mvbench}[args.format]
    path = resolve_input(args.format, args.path)  # a folder: the format's file in it
    _, report = loader(path, video_dir=args.videos, allow_missing_videos=args.allow_missing_videos)  # prints counts
    for record_id, reason in report.skipped[: args.show_skipped]:
        print(f"  skipped {record_id}: {reason}")


def _build_manifest(args: argparse.Namespace) -> None:
    from embodied_data.build_manifest import build_manifest

    built = build_manifest(
        args.format,
        args.path,
        args.out,
        video_dir=args.videos,
        keep_missing_videos=args.keep_missing_videos,
        split_seed=args.split_seed,
        split=args.split,
    )
    print(built.summary(show=args.show_skipped))


def _merge_manifests(args: argparse.Namespace) -> None:
    from embodied_data.build_manifest import merge_manifests

    records, report = merge_manifests(args.manifests, args.out)
    print(f"wrote {args.out}: {len(records)} rows from {len(args.manifests)} manifests; skipped: {report.summary()}")
    for record_id, reason in report.skipped[: args.show_skipped]:
        print(f"  skipped {record_id}: {reason}")
    print(format_counts(records))


def _vsi_agreement(args: argparse.Namespace) -> None:
    from pathlib import Path

    from embodied_data.vsi.agreement import run_agreement, write_report

    realdata = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "vsi_bench"
    parquet = Path(args.parquet) if args.parquet else realdata / "test-00000-of-00001.parquet"
    meta_dir = Path(args.meta_dir) if args.meta_dir else realdata / "meta_info"
    for what, path, flag in (("VSI-Bench parquet", parquet, "--parquet"), ("meta_info folder", meta_dir, "--meta-dir")):
        if not path.exists():
            raise SystemExit(f"{what} not found at {path}; pass {flag}")
    report = run_agreement(parquet, meta_dir, method=args.distance)
    print(report.table())
    print(report.causes())
    print(f"wrote {write_report(report, args.out)}")


def _real_layouts(args: argparse.Namespace) -> None:
    from embodied_data.synthetic.real_layout import generate_real_layouts

    records, report = generate_real_layouts(
        args.out,
        num_scenes=args.scenes,
        seed=args.seed,
        size=args.size,
        fps=args.fps,
        realdata_dir=args.realdata,
        split_ratios=tuple(args.split),
    )
    print(f"real-layout dataset in {args.out} (manifest.parquet)")
    print(format_counts(records))
    print(f"questions not attached: {report.summary()}")


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data")
    commands = data.add_subparsers(dest="data_command", required=True)
    synth = commands.add_parser(
        "synth",
        help="render a synthetic egocentric dataset (videos, questions, ground-truth captions, manifest)",
        description="Render one walkthrough video per procedural room and write questions whose answers come from the "
        "geometry to OUT/manifest.parquet. An existing complete dataset with the same parameters is reused.",
    )
    synth.add_argument("--out", required=True, help="output folder (videos/ and manifest.parquet go here)")
    synth.add_argument("--scenes", type=int, required=True, help="number of rooms, one video each")
    synth.add_argument("--seed", type=int, default=0, help="seed of everything: same seed, same bytes (default 0)")
    synth.add_argument("--questions-per-scene", type=int, default=6, help="questions per video (default 6)")
    synth.add_argument("--frames", type=int, default=16, help="frames per video (default 16)")
    synth.add_argument("--fps", type=float, default=2.0, help="frames per second of the videos (default 2)")
    synth.add_argument("--size", type=int, default=224, help="frame width and height in pixels (default 224)")
    synth.add_argument(
        "--split", type=float, nargs=3, default=(0.75, 0.05, 0.2), metavar=("TRAIN", "VAL", "TEST"),
        help="scene-level split ratios (default 0.75 0.05 0.2)",
    )
    synth.add_argument(
        "--world", choices=("room", "city", "mixed"), default="room",
        help="room: indoor walkthroughs of procedural rooms (VSI-Bench and UrbanVideo questions); city: drone flights "
        "10-60 m over procedural city blocks with named landmarks (UrbanVideo questions: Action Generation, Landmark "
        "Position, Progress Evaluation, Counterfactual); mixed: rooms and cities alternating (default room)",
    )
    synth.set_defaults(func=_synth)
    real = commands.add_parser(
        "real-layouts",
        help="render walkthroughs of the real VSI-Bench room layouts and attach their real geometric questions",
        description="Build each VSI-Bench scene from its annotated 3D boxes (meta_info; oriented boxes, made-up "
        "colours), render a walkthrough that turns a full circle at up to three viewpoints chosen to see most "
        "objects, and attach the scene's real VSI-Bench questions (relative direction, relative and absolute "
        "distance, counting, object and room size) with their real ground truth, keeping only those whose answer "
        "follows from the boxes and whose objects the video shows. Writes OUT/manifest.parquet (the format of "
        "`data synth`) and OUT/videos/; an existing complete output with the same parameters is reused.",
    )
    real.add_argument("--out", required=True, help="output folder (videos/ and manifest.parquet go here)")
    real.add_argument("--scenes", type=int, default=None, help="number of scenes, in a seeded order (default: all 288)")
    real.add_argument("--seed", type=int, default=0, help="seed of the scene order, colours, textures and split (default 0)")
    real.add_argument("--fps", type=float, default=2.0, help="frames per second of the videos (default 2)")
    real.add_argument("--size", type=int, default=224, help="frame width and height in pixels (default 224)")
    real.add_argument(
        "--realdata", default=None,
        help="folder holding vsi_bench/meta_info/ and vsi_bench/test-00000-of-00001.parquet "
        "(default: ../shared/realdata beside the repository)",
    )
    real.add_argument(
        "--split", type=float, nargs=3, default=(0.75, 0.05, 0.2), metavar=("TRAIN", "VAL", "TEST"),
        help="scene-level split ratios (default 0.75 0.05 0.2)",
    )
    real.set_defaults(func=_real_layouts)
    load = commands.add_parser(
        "load",
        help="load a benchmark file (VSI-Bench parquet, UrbanVideo-Bench MCQ.parquet, Embodied-R JSON) and report counts",
        description="Read every row into a record or report it with its id and reason; print counts per category.",
    )
    load.add_argument("format", choices=["vsi_bench", "urbanvideo", "embodied_r", "egoschema", "mvbench"],
                      help="which benchmark's format")
    load.add_argument("path", help="the parquet or JSON file, or the folder holding it (see `data build-manifest`)")
    load.add_argument("--videos", default=None, help="folder of the videos (VSI: <dataset>/<scene>.mp4 or <scene>.mp4)")
    load.add_argument("--allow-missing-videos", action="store_true", help="keep questions whose video is absent")
    load.add_argument("--show-skipped", type=int, default=10, help="how many skipped rows to list (default 10)")
    load.set_defaults(func=_load)
    build = commands.add_parser(
        "build-manifest",
        help="write the manifest (parquet) that train, perceive and eval read from a downloaded benchmark",
        description="Load a benchmark as published and write its questions to OUT (the manifest format of "
        "`data synth`: id, video, question, choices, answer, category, scene, split, source). Rows the loader cannot "
        "use are counted by reason and the first few named. PATH is the benchmark file or its folder: vsi_bench: "
        "test-00000-of-00001.parquet (videos DIR/<dataset>/<scene>.mp4 or DIR/<scene>.mp4); urbanvideo: MCQ.parquet "
        "(DIR/<video_id>); embodied_r: the JSON list (DIR/<video_id>); egoschema: questions.json with "
        "subset_answers.json beside it (DIR/<q_uid>.mp4; only questions with a published answer); mvbench: the MVBench "
        "folder or json/egocentric_navigation.json (default DIR: video/vlnqa/). Without --videos, a videos/ folder "
        "beside the file (MVBench: video/vlnqa/) is used when it exists.",
        epilog="Example: embodied-r data build-manifest urbanvideo UrbanVideo-Bench/MCQ.parquet "
        "--videos UrbanVideo-Bench/videos --out data/urbanvideo.parquet",
    )
    build.add_argument("format", choices=["vsi_bench", "urbanvideo", "embodied_r", "egoschema", "mvbench"],
                       help="which benchmark's layout")
    build.add_argument("path", help="the benchmark file, or the folder holding it")
    build.add_argument("--videos", default=None, help="folder of the videos (see above for the names looked up)")
    build.add_argument("--out", required=True, help="the manifest to write (parquet, written atomically)")
    build.add_argument(
        "--keep-missing-videos", action="store_true",
        help="keep questions whose video file is absent (counted and reported) instead of skipping them; "
        "perceive/eval skip them by name until the videos are there",
    )
    build.add_argument("--split-seed", type=int, default=0,
                       help="seed of the scene-level train/val/test split of VSI-Bench and UrbanVideo-Bench (default 0)")
    build.add_argument("--split", choices=["train", "val", "test"], default=None,
                       help="put every record in this split instead (EgoSchema, MVBench, Embodied-R JSON: test)")
    build.add_argument("--show-skipped", type=int, default=5,
                       help="how many skipped rows and rows without a video to name (default 5)")
    build.set_defaults(func=_build_manifest)
    merge = commands.add_parser(
        "merge-manifests",
        help="write several manifests (e.g. VSI-Bench and UrbanVideo-Bench from build-manifest) as one",
        description="Concatenate manifests in the order given into OUT, videos as absolute paths and splits as each "
        "input has them; a row whose id an earlier input already has is skipped and reported.",
    )
    merge.add_argument("manifests", nargs="+", help="the manifests to merge")
    merge.add_argument("--out", required=True, help="the merged manifest (parquet, written atomically)")
    merge.add_argument("--show-skipped", type=int, default=5, help="how many skipped rows to name (default 5)")
    merge.set_defaults(func=_merge_manifests)
    agreement = commands.add_parser(
        "vsi-agreement",
        help="answer VSI-Bench's geometric questions from the real meta_info 3D annotations and compare with the "
        "published ground truth",
        description="For every question of the VSI-Bench parquet, compute the answer from the scene's meta_info boxes "
        "(relative direction, relative/absolute distance, counting, object size, room size) and compare it with the "
        "published ground truth. Prints per question type: total, covered, agree, and the cause of every question "
        "not covered or answered differently; writes {question_type: {total, covered, agree, ...}} to OUT.",
    )
    agreement.add_argument("--out", required=True, help="JSON file for the per-type counts (written atomically)")
    agreement.add_argument(
        "--parquet", default=None,
        help="VSI-Bench test parquet (default: ../shared/realdata/vsi_bench/test-00000-of-00001.parquet beside the repo)",
    )
    agreement.add_argument(
        "--meta-dir", default=None,
        help="folder with {arkitscenes,scannet,scannetpp}_meta_info_val.json "
        "(default: ../shared/realdata/vsi_bench/meta_info)",
    )
    agreement.add_argument(
        "--distance", choices=["sampled", "sampled_uncropped", "box", "centroid"], default="sampled",
        help="closest-point measure behind the distance verdicts: VSI's 5 cm box samples cropped as Open3D crops them "
        "(default), the same samples uncropped, exact box-to-box, or centroid-to-centroid; all four are scored alongside",
    )
    agreement.set_defaults(func=_vsi_agreement)


def main(argv: list[str] | None = None) -> None:
    """Run the data subcommands alone: `python -m embodied_data.cli data synth ...`."""
    parser = argparse.ArgumentParser(prog="embodied-data")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
