"""Frames per second of the synthetic renderer on one core, beside two baselines measured in the same run.

Baselines, on the same poses and the same frames:
  * encode: writing the rendered frames to an MP4 (OpenCV 'mp4v'), the cost every generated video pays anyway;
  * flat painter: a plain renderer without textures or z-buffer, each visible face clipped, projected and filled
    with its mean colour by cv2.fillConvexPoly, far faces first (the painter's algorithm).
Ratios above 1 mean the textured, z-buffered renderer is faster than the baseline.

    python bench/render_fps.py                      # 3 procedural rooms and 3 real VSI-Bench layouts, 224x224
    python bench/render_fps.py --real-scenes 0      # procedural rooms only (no ../shared/realdata needed)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from embodied_data.synthetic.camera import Pose, random_path, start_pose  # noqa: E402
from embodied_data.synthetic.render import Face, Renderer, _clip_polygon  # noqa: E402
from embodied_data.synthetic.scene import Scene, generate_scene  # noqa: E402
from embodied_data.synthetic.video import write_video  # noqa: E402


def pin_to_one_core() -> str:
    """Run on one core: OpenCV single-threaded, and the process pinned to one CPU where the OS allows it."""
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "not pinned (os.sched_setaffinity unavailable)"


class FlatPainter:
    """The baseline renderer: mean-colour faces filled far to near, no textures, no depth buffer."""

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        self.colours = [tuple(int(c) for c in face.texture.reshape(-1, 3).mean(axis=0)) for face in renderer.faces]
        self.corners = [
            np.stack([f.origin, f.origin + f.u, f.origin + f.u + f.v, f.origin + f.v]) for f in renderer.faces
        ]

    def render(self, pose: Pose) -> np.ndarray:
        r = self.renderer
        R, C = pose.rotation(), pose.position
        image = np.zeros((r.size, r.size, 3), np.uint8)
        drawn: list[tuple[float, np.ndarray, tuple[int, int, int]]] = []
        for face, corners, colour in zip(r.faces, self.corners, self.colours):
            if not face.double_sided and float(face.normal @ (C - face.origin)) <= 1e-9:
                continue
            polygon = _clip_polygon((corners - C) @ R.T, r.planes)
            if len(polygon) < 3:
                continue
            projected = polygon @ r.K.T
            pixels = np.round(projected[:, :2] / projected[:, 2:3] * 16).astype(np.int32)
            drawn.append((float(polygon[:, 2].mean()), pixels, colour))
        for _, pixels, colour in sorted(drawn, key=lambda item: -item[0]):
            cv2.fillConvexPoly(image, pixels, colour, lineType=cv2.LINE_8, shift=4)
        return image


def spin_path(scene: Scene, frames: int, seed: int) -> list[Pose]:
    """A full turn in place from a free pose near the centre: every wall and object passes through the view."""
    start = start_pose(scene, np.random.default_rng(seed))
    return [Pose(start.x, start.y, start.z, start.yaw + 2 * math.pi * k / frames, start.pitch) for k in range(frames)]


def best_fps(work: Callable[[], object], count: int, repeats: int) -> float:
    """Frames per second of the fastest of `repeats` runs (the least disturbed by other processes)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return count / min(times)


def measure(
    name: str, scene: Scene, poses: list[Pose], size: int, repeats: int, scratch: Path, faces: list[Face] | None = None
) -> dict[str, float]:
    renderer = Renderer(scene, size=size, faces=faces)
    painter = FlatPainter(renderer)
    frames = [renderer.render(p)[0] for p in poses]  # warm-up, and the frames the encoder writes
    render_fps = best_fps(lambda: [renderer.render(p) for p in poses], len(poses), repeats)
    painter_fps = best_fps(lambda: [painter.render(p) for p in poses], len(poses), repeats)
    encode_fps = best_fps(lambda: write_video(frames, scratch / f"{name}.mp4", 2.0), len(poses), repeats)
    row = {"render": render_fps, "encode": encode_fps, "painter": painter_fps, "faces": len(renderer.faces)}
    print(
        f"{name:34s} {len(renderer.faces):5d} {len(poses):6d} {render_fps:9.1f} {encode_fps:9.1f} {painter_fps:9.1f}"
        f" {render_fps / encode_fps:8.2f} {render_fps / painter_fps:8.2f}",
        flush=True,
    )
    return row


def real_layout_cases(count: int, size: int) -> list[tuple[str, Scene, list[Pose], list[Face]]]:
    """`count` real VSI-Bench layouts (oriented boxes) in a seeded order plus the one with the most boxes, with
    their walkthrough poses; none when the data is absent."""
    from embodied_data.synthetic.real_layout import build_layout_scene, default_realdata_dir, render_walkthrough, select_scenes
    from embodied_data.vsi.layout import load_meta_dir

    meta_dir = default_realdata_dir() / "vsi_bench" / "meta_info"
    if not meta_dir.is_dir():
        print(f"real layouts skipped: {meta_dir} not found")
        return []
    layouts = load_meta_dir(meta_dir)
    cases = []
    names = select_scenes(layouts, count, seed=0)
    largest = max(layouts, key=lambda n: len(layouts[n].objects))  # the worst case: the most boxes
    for name in names + ([largest] if largest not in names else []):
        built = build_layout_scene(layouts[name])
        poses = render_walkthrough(built, size=size).poses
        label = f"real {layouts[name].dataset}/{name} walkthrough"
        cases.append((label[:34], built.scene, poses, built.faces))
    return cases


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=3, help="procedural rooms (default 3)")
    parser.add_argument("--frames", type=int, default=60, help="frames per camera path (default 60)")
    parser.add_argument("--size", type=int, default=224, help="frame width and height (default 224)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the fastest counts (default 3)")
    parser.add_argument(
        "--real-scenes", type=int, default=3, help="real VSI-Bench layouts to add, with their own walkthroughs (default 3)"
    )
    args = parser.parse_args(argv)

    pinned = pin_to_one_core()
    print(f"renderer benchmark: {args.size}x{args.size}, {pinned}, OpenCV {cv2.__version__}, best of {args.repeats}")
    print(f"{'scene / path':34s} {'faces':>5s} {'frames':>6s} {'render':>9s} {'encode':>9s} {'painter':>9s} {'r/enc':>8s} {'r/paint':>8s}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in range(args.scenes):
            scene = generate_scene(seed)
            walk, _, _ = random_path(scene, args.frames - 1, np.random.default_rng(seed), steps_per_segment_unit=2)
            rows.append(measure(f"room {seed} random walk", scene, walk, args.size, args.repeats, Path(scratch)))
            rows.append(measure(f"room {seed} full turn", scene, spin_path(scene, args.frames, seed), args.size, args.repeats, Path(scratch)))
        if args.real_scenes:
            for name, scene, poses, faces in real_layout_cases(args.real_scenes, args.size):
                # The real layouts carry their own (oriented) faces: measure with them.
                rows.append(measure(name, scene, poses, args.size, args.repeats, Path(scratch), faces))
    render = statistics.median(r["render"] for r in rows)
    encode = statistics.median(r["encode"] for r in rows)
    painter = statistics.median(r["painter"] for r in rows)
    print(
        f"median: render {render:.1f} fps, mp4 encode {encode:.1f} fps (render/encode {render / encode:.2f}), "
        f"flat painter {painter:.1f} fps (render/painter {render / painter:.2f}); target >= 100 fps: "
        f"{'met' if render >= 100 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
