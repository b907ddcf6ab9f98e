"""Generate a synthetic dataset: one rendered walkthrough video per procedural room (or drone flight per procedural
city block), questions answered from the geometry, a ground-truth caption per video, a scene-level split, and a
manifest; reused when already complete."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from embodied_data.atomic import write_text_atomically
from embodied_data.manifest import GT_CAPTION_COLUMN, read_manifest, read_manifest_metadata, write_manifest
from embodied_data.records import Record
from embodied_data.split import DEFAULT_RATIOS, assign_splits
from embodied_data.synthetic.camera import random_path
from embodied_data.synthetic.captioner import ground_truth_caption
from embodied_data.synthetic.city import drone_path, generate_city
from embodied_data.synthetic.city_questions import generate_city_questions
from embodied_data.synthetic.groundtruth import FrameTruth, frame_truth
from embodied_data.synthetic.letters import balance_option_letters
from embodied_data.synthetic.questions import generate_questions
from embodied_data.synthetic.render import Renderer
from embodied_data.synthetic.scene import generate_scene
from embodied_data.synthetic.video import write_video

GENERATOR_VERSION = 5  # 5: balanced option letters; 4: Counterfactual questions; bump when the output of the same parameters changes, so old datasets are not reused
MANIFEST_NAME = "manifest.parquet"
FUTURE_SEGMENTS = 3  # planned path beyond the video, for Progress Evaluation's instruction
WORLDS = ("room", "city", "mixed")


def scene_world(world: str, scene_index: int) -> str:
    """The world of one scene: "mixed" alternates rooms (even indices) and cities (odd)."""
    if world == "mixed":
        return "city" if scene_index % 2 else "room"
    return world


def one_fps_indices(num_frames: int, fps: float) -> list[int]:
    """Frame positions of a 1-frame-per-second sampling (every frame when fps <= 1)."""
    if fps <= 1.0:
        return list(range(num_frames))
    positions = sorted({int(round(k * fps)) for k in range(int(num_frames / fps) + 1)})
    return [p for p in positions if p < num_frames]


def _sub_rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def render_scene_video(
    scene_index: int, seed: int, out_dir: Path, num_frames: int, fps: float, size: int, questions_per_scene: int,
    world: str = "room",
) -> tuple[list[Record], str]:
    """Build, render and question one scene ("room" or "city"); returns its records (unsplit) and its caption."""
    scene_seed = int(np.random.SeedSequence([seed, scene_index, 0]).generate_state(1)[0])
    steps_unit = max(1, int(round(fps)))
    plan_steps = num_frames - 1 + FUTURE_SEGMENTS * 2 * steps_unit
    descriptions: dict[int, str] = {}
    if world == "city":
        scene_id = f"city{seed}_{scene_index:04d}"
        city = generate_city(scene_seed, scene_id)
        scene, descriptions = city.scene, city.descriptions
        poses, actions, segments = drone_path(scene, plan_steps, _sub_rng(seed, scene_index, 1), steps_unit, set(descriptions))
        renderer = Renderer(scene, size=size, faces=city.faces)
        make_questions = generate_city_questions
    else:
        scene_id = f"synth{seed}_{scene_index:04d}"
        scene = generate_scene(scene_seed, scene_id)
        poses, actions, segments = random_path(scene, plan_steps, _sub_rng(seed, scene_index, 1), steps_unit)
        renderer = Renderer(scene, size=size)
        make_questions = generate_questions
    images: list[np.ndarray] = []
    plan_frames: list[FrameTruth] = []
    for index, (pose, action) in enumerate(zip(poses, actions)):
        image, id_map = renderer.render(pose)
        if index < num_frames:
            images.append(image)
        plan_frames.append(frame_truth(scene, pose, id_map, index, fps, action))
    video_frames = plan_frames[:num_frames]
    video_rel = f"videos/{scene_id}.mp4"
    write_video(images, out_dir / video_rel, fps)
    scene_truth = {
        "scene": scene_id,
        "room": {"width": scene.room.width, "depth": scene.room.depth, "height": scene.room.height},
        "objects": [
            {"id": o.object_id, "category": o.category, "colour": o.colour, "lo": o.bounds.lo, "hi": o.bounds.hi}
            for o in scene.objects
        ],
        "frames": [f.to_dict() for f in video_frames],
    }
    if world == "city":  # added keys only: the room's ground truth keeps its bytes
        scene_truth["world"] = "city"
        for item in scene_truth["objects"]:
            if item["id"] in descriptions:
                item["description"] = descriptions[item["id"]]
    write_text_atomically(out_dir / f"videos/{scene_id}.json", json.dumps(scene_truth, sort_keys=True, indent=1))
    caption, _ = ground_truth_caption(video_frames, one_fps_indices(num_frames, fps))
    questions = make_questions(
        scene, video_frames, _sub_rng(seed, scene_index, 2), questions_per_scene, segments, plan_frames
    )
    records = [
        Record(
            id=f"{scene_id}_q{j:02d}",
            video=video_rel,
            question=q.question,
            choices=q.choices,
            answer=q.answer,
            category=q.category,
            scene=scene_id,
            source="synthetic",
        )
        for j, q in enumerate(questions)
    ]
    return records, caption


def generate_dataset(
    out_dir: str,
    num_scenes: int,
    seed: int,
    questions_per_scene: int = 6,
    num_frames: int = 16,
    fps: float = 2.0,
    size: int = 224,
    split_ratios: tuple[float, float, float] = DEFAULT_RATIOS,
    progress: bool = True,
    world: str = "room",
) -> list[Record]:
    """Render `num_scenes` videos with questions into `out_dir` and write `out_dir/manifest.parquet`.

    `world` is "room" (indoor walkthroughs, VSI-Bench and UrbanVideo questions), "city" (drone flights over city
    blocks, UrbanVideo questions) or "mixed" (rooms and cities alternating).

    The manifest (columns id, video relative to out_dir, question, choices, answer, numeric, category, scene, split,
    source, gt_caption) is written last and atomically, so its presence with the same parameters means the dataset
    is complete and is reused without rendering.  Returns the records with absolute video paths.
    """
    if num_scenes < 1 or num_frames < 2 or fps <= 0 or size < 32:
        raise ValueError(f"need num_scenes >= 1, num_frames >= 2, fps > 0, size >= 32; got {num_scenes}, {num_frames}, {fps}, {size}")
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}; expected one of {WORLDS}")
    out = Path(out_dir)
    manifest_path = out / MANIFEST_NAME
    params = {
        "version": GENERATOR_VERSION,
        "num_scenes": num_scenes,
        "seed": seed,
        "questions_per_scene": questions_per_scene,
        "num_frames": num_frames,
        "fps": float(fps),
        "size": size,
        "split_ratios": [float(r) for r in split_ratios],
    }
    if world != "room":  # only then: the rooms' manifests keep their metadata (and are reused) as before
        params["world"] = world
    if manifest_path.exists() and read_manifest_metadata(manifest_path) == params:
        records, report = read_manifest(manifest_path)
        if not len(report):
            return records
    out.mkdir(parents=True, exist_ok=True)
    records: list[Record] = []
    captions: dict[str, str] = {}
    for scene_index in tqdm(range(num_scenes), desc=f"rendering {world} scenes", unit="scene", disable=not progress):
        scene_records, caption = render_scene_video(
            scene_index, seed, out, num_frames, fps, size, questions_per_scene, scene_world(world, scene_index)
        )
        records.extend(scene_records)
        if scene_records:
            captions[scene_records[0].video] = caption
    # Each scene's generator shuffles its options independently, which leaves one letter correct more often than the
    # others by chance (a constant letter then beats chance); balancing over the whole split removes that prior.
    records = balance_option_letters(assign_splits(records, seed, split_ratios), seed)
    write_manifest(records, manifest_path, extra_columns={GT_CAPTION_COLUMN: [captions[r.video] for r in records]}, metadata=params)
    written, report = read_manifest(manifest_path)
    if len(report):
        raise RuntimeError(f"{manifest_path}: the generated manifest does not read back cleanly: {report.summary()}")
    return written
