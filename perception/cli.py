"""Command-line subcommands of the perception layer (registered into `embodied-r` by cluster/cli.py)."""

from __future__ import annotations

import argparse
import json
import sys

from perception.config import KeyframeConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = KeyframeConfig()
    keyframes = subparsers.add_parser(
        "keyframes",
        description=(
            "Samples VIDEO at 1 frame per second and picks key frames where the view overlaps the last key frame by "
            "less than the threshold (ORB matches + RANSAC homography, as Embodied-R). Prints JSON with `indices` "
            "(positions in the sampled sequence) and `frames` (frame numbers in the video)."
        ),
    )
    keyframes.add_argument("video", help="path to a video file OpenCV can read")
    keyframes.add_argument("--threshold", type=float, default=defaults.overlap_threshold,
                           help=f"overlap below which a frame becomes a key frame (default {defaults.overlap_threshold})")
    keyframes.add_argument("--min", dest="min_keyframes", type=int, default=defaults.min_keyframes,
                           help=f"fewest key frames (default {defaults.min_keyframes})")
    keyframes.add_argument("--max", dest="max_keyframes", type=int, default=defaults.max_keyframes,
                           help=f"most key frames (default {defaults.max_keyframes})")
    keyframes.add_argument("--sample-fps", type=float, default=defaults.sample_fps,
                           help=f"sampling rate before key-frame selection (default {defaults.sample_fps})")
    keyframes.set_defaults(func=_keyframes_command)


def _keyframes_command(args: argparse.Namespace) -> int:
    from perception.keyframes import extract_keyframes
    from perception.video import VideoError

    cfg = KeyframeConfig(overlap_threshold=args.threshold, min_keyframes=args.min_keyframes,
                         max_keyframes=args.max_keyframes, sample_fps=args.sample_fps)
    try:
        keyframes = extract_keyframes(args.video, cfg)
    except (VideoError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({
        "video": args.video,
        "indices": keyframes.indices,
        "frames": keyframes.frames,
        "fps": keyframes.fps,
        "num_sampled": keyframes.num_sampled,
        "num_detected": keyframes.num_detected,
    }))
    return 0
