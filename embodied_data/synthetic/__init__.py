"""A synthetic egocentric world: procedural rooms and city blocks, action-built camera and drone paths, a fast
renderer, per-frame ground truth, geometry-answered questions in the benchmarks' wording, and a ground-truth
captioner."""

from embodied_data.synthetic.camera import ACTIONS, Pose, random_path
from embodied_data.synthetic.captioner import ground_truth_caption
from embodied_data.synthetic.city import CityScene, drone_path, generate_city
from embodied_data.synthetic.city_questions import generate_city_questions
from embodied_data.synthetic.dataset import generate_dataset, one_fps_indices
from embodied_data.synthetic.groundtruth import (
    FrameTruth,
    VisibleObject,
    frame_truth,
    frames_from_dicts,
)
from embodied_data.synthetic.questions import Question, generate_questions
from embodied_data.synthetic.render import Renderer
from embodied_data.synthetic.scene import Scene, generate_scene
from embodied_data.synthetic.video import read_video, write_video

__all__ = [
    "ACTIONS",
    "CityScene",
    "FrameTruth",
    "Pose",
    "Question",
    "Renderer",
    "Scene",
    "VisibleObject",
    "frame_truth",
    "frames_from_dicts",
    "drone_path",
    "generate_city",
    "generate_city_questions",
    "generate_dataset",
    "generate_questions",
    "generate_scene",
    "ground_truth_caption",
    "one_fps_indices",
    "random_path",
    "read_video",
    "write_video",
]
