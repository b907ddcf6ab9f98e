"""The question categories the project knows: VSI-Bench's, UrbanVideo-Bench's and the Embodied-R release's (the
synthetic generator uses their names).  A record of any other category -- a typo, "nan" for a missing value, another
benchmark's -- is reported by the loaders and the manifest reader instead of being trained or scored as a category
of its own.  The out-of-distribution evaluation sets (EgoSchema, MVBench's egocentric navigation task) add one
category each, accepted alongside."""

from __future__ import annotations

import re

# VSI-Bench's question_type column (the 10 of its test parquet).
VSI_BENCH_CATEGORIES = (
    "object_counting",
    "object_abs_distance",
    "object_size_estimation",
    "room_size_estimation",
    "object_rel_distance",
    "object_rel_direction_easy",
    "object_rel_direction_medium",
    "object_rel_direction_hard",
    "route_planning",
    "obj_appearance_order",
)
# The Embodied-R release (infer/data_demo.json) names the three relative-direction levels as one.
EMBODIED_R_CATEGORIES = ("object_rel_direction",)
# UrbanVideo-Bench's question_category column (the 16 of its MCQ.parquet).
URBANVIDEO_BENCH_CATEGORIES = (
    "Action Generation",
    "Association Reasoning",
    "Causal",
    "Cognitive Map",
    "Counterfactual",
    "Duration",
    "Goal Detection",
    "High-level Planning",
    "Landmark Position",
    "Object Recall",
    "Progress Evaluation",
    "Proximity",
    "Scene Recall",
    "Sequence Recall",
    "Start/End Position",
    "Trajectory Captioning",
)
KNOWN_CATEGORIES = VSI_BENCH_CATEGORIES + EMBODIED_R_CATEGORIES + URBANVIDEO_BENCH_CATEGORIES
# The paper's out-of-distribution evaluation sets: EgoSchema (no per-question type) and MVBench's Egocentric
# Navigation task, one category each (evaluated, never trained on).
OUT_OF_DISTRIBUTION_CATEGORIES = ("EgoSchema", "Egocentric Navigation")
ACCEPTED_CATEGORIES = KNOWN_CATEGORIES + OUT_OF_DISTRIBUTION_CATEGORIES

_SEPARATORS = re.compile(r"[^0-9a-z]+")


def category_key(name: str) -> str:
    """A category's name with case and separators folded: "Landmark Position", "landmark_position" and
    "landmark-position" are one category ("landmark_position")."""
    return _SEPARATORS.sub("_", name.casefold()).strip("_")


_BY_KEY = {category_key(name): name for name in ACCEPTED_CATEGORIES}


def canonical_category(name: str) -> str | None:
    """The known category `name` spells (in its benchmark's spelling), or None for an unknown one."""
    return _BY_KEY.get(category_key(name))


def category_problem(name: object) -> str | None:
    """Why `name` is not a known category (the text a skip reason carries), or None when it is one."""
    if isinstance(name, str) and canonical_category(name) is not None:
        return None
    return (f"{name!r} is not a VSI-Bench, UrbanVideo-Bench or Embodied-R category, nor an out-of-distribution set's "
            f"(the {len(ACCEPTED_CATEGORIES)} known ones are in embodied_data/categories.py)")
