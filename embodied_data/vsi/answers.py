"""Answer a VSI-Bench question from its scene's 3D layout: parse the objects the text names, compute the answer with
VSI's own conventions (see `embodied_data.vsi`), and judge it against the published ground truth.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from embodied_data.loaders.common import strip_letter_prefix
from embodied_data.records import LETTERS
from embodied_data.vsi.geometry import (
    DIRECTION_BOUNDARIES,
    DIRECTION_LABELS,
    DISTANCE_METHODS,
    ccw_bearings,
    distance_to_boundary,
)
from embodied_data.vsi.layout import VSIObject, VSISceneLayout

# Names the questions use for a category that meta_info spells differently (found by comparing the two files).
CATEGORY_ALIASES = {"coat rack": "coat hanger"}  # ScanNet++ scenes c50d2d1d42, 3e8bba0176

# The margin VSI's generator demands between the two closest options of a relative-distance question (metres).
REL_DISTANCE_MARGIN = 0.15

VIDEO_ONLY = {
    "obj_appearance_order": "needs the video: the order of first appearance is a property of the camera path",
    "route_planning": "needs the video: routes and their turns are laid along the walkthrough, not in meta_info",
}


class Uncovered(Exception):
    """The question cannot be answered from the layout; the message is the cause (counted, not an error)."""


@dataclass(frozen=True)
class Answer:
    value: str | float  # an option text, or a number
    details: dict = field(default_factory=dict)  # what the answer rests on (angles, distances, instances)


@dataclass(frozen=True)
class Verdict:
    """Our answer to one published question, compared with its ground truth."""

    question_id: object
    question_type: str
    scene: str
    covered: bool
    agree: bool
    ours: str | float | None
    truth: str | float
    cause: str | None  # why it is not covered, or why it disagrees; None when it agrees
    details: dict = field(default_factory=dict)


def resolve(layout: VSISceneLayout, name: str) -> str:
    """The meta_info category a question's object name refers to; Uncovered when the scene has none."""
    name = name.strip()
    if name in layout.by_category:
        return name
    alias = CATEGORY_ALIASES.get(name)
    if alias in layout.by_category:
        return alias
    raise Uncovered("category not annotated in meta_info")


def _single(layout: VSISceneLayout, name: str) -> VSIObject:
    category = resolve(layout, name)
    found = layout.by_category[category]
    if len(found) != 1:
        raise Uncovered("object has several instances")
    return found[0]


def _search(pattern: re.Pattern, text: str) -> re.Match:
    match = pattern.search(text)
    if match is None:
        raise Uncovered("question text not in the expected template")
    return match


# --- question templates ------------------------------------------------------------------------------------------

_DIRECTION = re.compile(
    r"If I am standing by the (?P<standing>.+?) and facing the (?P<facing>.+?), is the (?P<target>.+?) to (?:my|the) "
)
_COUNT = re.compile(r"How many (?P<category>.+?)\(s\) are in this room\?")
_SIZE = re.compile(r"longest dimension \(length, width, or height\) of the (?P<category>.+?), measured in centimeters\?")
_ROOM = re.compile(r"What is the size of this room \(in square meters\)\?")
_ABS = re.compile(r"distance between the (?P<pair>.+) \(in meters\)\?")
_REL = re.compile(r"which of these objects \((?P<listed>.+)\) is the closest to the (?P<reference>.+?)\?")


class CategoryDistances:
    """Closest-point distances between the categories of one scene, memoised (VSI's shell samples are costly)."""

    def __init__(self, layout: VSISceneLayout, method: str = "sampled") -> None:
        if method not in DISTANCE_METHODS:
            raise ValueError(f"unknown distance method {method!r}; choose from {sorted(DISTANCE_METHODS)}")
        self.layout, self.method = layout, method
        self._measure = DISTANCE_METHODS[method]()
        self._pairs: dict[tuple[int, int], float] = {}

    def _pair(self, a: VSIObject, b: VSIObject) -> float:
        key = (id(a), id(b)) if id(a) <= id(b) else (id(b), id(a))
        if key not in self._pairs:
            self._pairs[key] = self._measure(a, b)
        return self._pairs[key]

    def between(self, first: str, second: str) -> float:
        """Smallest distance between any instance of `first` and any of `second` (VSI: "measure to the closest")."""
        return min(self._pair(a, b) for a in self.layout.by_category[first] for b in self.layout.by_category[second])


def answer_direction(layout: VSISceneLayout, question: str, kind: str) -> Answer:
    """object_rel_direction_{easy,medium,hard}: bearing of the target's centroid seen from the standing object's
    centroid with the facing object's centroid straight ahead, in the x-y plane."""
    match = _search(_DIRECTION, question)
    standing, facing, target = (_single(layout, match.group(k)) for k in ("standing", "facing", "target"))
    angle = float(ccw_bearings(standing.centroid, facing.centroid, target.centroid[None])[0])
    margin = distance_to_boundary(angle, DIRECTION_BOUNDARIES[kind])
    return Answer(DIRECTION_LABELS[kind](angle), {"angle": round(angle, 2), "boundary_margin": round(margin, 2)})


def answer_counting(layout: VSISceneLayout, question: str) -> Answer:
    """object_counting: meta_info's object_counts (not the number of boxes, which differs in a few ScanNet scenes)."""
    category = resolve(layout, _search(_COUNT, question).group("category"))
    if category not in layout.object_counts:
        raise Uncovered("category not in object_counts")
    return Answer(float(layout.object_counts[category]), {"boxes": len(layout.by_category[category])})


def answer_size(layout: VSISceneLayout, question: str) -> Answer:
    """object_size_estimation: the longest side of the object's box, in centimetres."""
    obj = _single(layout, _search(_SIZE, question).group("category"))
    return Answer(obj.longest_dimension * 100.0)


def answer_room_size(layout: VSISceneLayout, question: str) -> Answer:
    """room_size_estimation: meta_info's room_size in square metres."""
    _search(_ROOM, question)
    return Answer(layout.room_size)


def _split_pair(layout: VSISceneLayout, pair: str) -> tuple[str, str]:
    """'sofa and the stove' -> ('sofa', 'stove'), trying every ' and the ' so names may contain 'and'."""
    for match in re.finditer(r" and the ", pair):
        first, second = pair[: match.start()], pair[match.end() :]
        try:
            return resolve(layout, first), resolve(layout, second)
        except Uncovered:
            continue
    raise Uncovered("category not annotated in meta_info")


def answer_abs_distance(layout: VSISceneLayout, question: str, distances: CategoryDistances) -> Answer:
    """object_abs_distance: closest-point distance between the two objects, metres."""
    first, second = _split_pair(layout, _search(_ABS, question).group("pair"))
    instances = (len(layout.by_category[first]), len(layout.by_category[second]))
    return Answer(distances.between(first, second), {"instances": instances})


def answer_rel_distance(layout: VSISceneLayout, question: str, options: list[str], distances: CategoryDistances) -> Answer:
    """object_rel_distance: the option whose nearest instance is closest to the (single) reference object."""
    match = _search(_REL, question)
    reference = resolve(layout, match.group("reference"))
    if len(layout.by_category[reference]) != 1:
        raise Uncovered("object has several instances")
    measured = {option: distances.between(resolve(layout, option), reference) for option in options}
    ranked = sorted(measured.values())
    margin = ranked[1] - ranked[0] if len(ranked) > 1 else float("inf")
    details = {
        "distances": {k: round(v, 3) for k, v in measured.items()},
        "margin": round(margin, 3),
        "repeated_options": sum(len(layout.by_category[resolve(layout, o)]) > 1 for o in options),
    }
    return Answer(min(measured, key=measured.get), details)


def compute_answer(
    layout: VSISceneLayout,
    question_type: str,
    question: str,
    options: list[str] | None = None,
    distances: CategoryDistances | None = None,
) -> Answer:
    """Our answer to one VSI-Bench question about `layout` (an option text or a number); Uncovered when the layout
    cannot answer it (the message says why)."""
    if question_type in VIDEO_ONLY:
        raise Uncovered(VIDEO_ONLY[question_type])
    if question_type.startswith("object_rel_direction_"):
        kind = question_type.rsplit("_", 1)[1]
        if kind not in DIRECTION_LABELS:
            raise Uncovered(f"unknown direction level {kind!r}")
        return answer_direction(layout, question, kind)
    simple: dict[str, Callable[[VSISceneLayout, str], Answer]] = {
        "object_counting": answer_counting,
        "object_size_estimation": answer_size,
        "room_size_estimation": answer_room_size,
    }
    if question_type in simple:
        return simple[question_type](layout, question)
    distances = distances or CategoryDistances(layout)
    if question_type == "object_abs_distance":
        return answer_abs_distance(layout, question, distances)
    if question_type == "object_rel_distance":
        if not options:
            raise Uncovered("multiple-choice question without options")
        return answer_rel_distance(layout, question, options, distances)
    raise Uncovered(f"question type {question_type!r} not handled")


def numeric_tolerance(truth_text: str) -> float:
    """Half a unit of the published answer's last decimal ('2.9' -> 0.05, '62' -> 0.5): ours agrees when it rounds
    to the published value."""
    decimals = len(truth_text.split(".", 1)[1]) if "." in truth_text else 0
    return 0.5 * 10.0 ** (-decimals) + 1e-9


def disagreement_cause(question_type: str, answer: Answer, ours: str | float, truth: str | float, tolerance: float) -> str:
    """A short name for why an answer differs from the ground truth (the categories the report counts)."""
    if question_type.startswith("object_rel_direction_"):
        if answer.details.get("boundary_margin", 180.0) < 10.0:
            return "target within 10 degrees of a sector boundary"
        return "target in another sector"
    if question_type == "object_rel_distance":
        if answer.details.get("margin", 1.0) < REL_DISTANCE_MARGIN:
            return "two options within 0.15 m of each other"
        if answer.details.get("repeated_options"):
            return "another instance of a repeated option is closer"
        return "different closest option"
    if question_type == "object_counting":
        boxes = answer.details.get("boxes")
        if boxes is not None and float(boxes) == float(truth):
            return "object_counts differs from the published count, the number of boxes matches it"
        return "meta_info (object_counts and boxes) differs from the published count"
    gap = float(ours) - float(truth)
    if question_type == "object_abs_distance" and answer.details.get("instances", (1, 1)) != (1, 1):
        return "repeated instances: the closest pair is ambiguous"
    if abs(gap) <= 2 * tolerance + 1e-9:
        return f"one rounding step {'longer' if gap > 0 else 'shorter'}"
    return f"{'longer' if gap > 0 else 'shorter'} by more than one rounding step"


def judge(
    layout: VSISceneLayout | None,
    row: dict,
    distances: CategoryDistances | None = None,
) -> Verdict:
    """Compare our answer to one parquet row (id, scene_name, question_type, question, ground_truth, options)."""
    question_type, scene = str(row["question_type"]), str(row["scene_name"])
    options = [strip_letter_prefix(str(o))[1] for o in row.get("options") or []]
    truth_text = str(row["ground_truth"]).strip()
    truth: str | float
    if options:  # the letter's option text; a copy giving the text itself is taken as it is
        letter = strip_letter_prefix(truth_text)[0] or truth_text
        truth = options[LETTERS.index(letter)] if len(letter) == 1 and letter in LETTERS[: len(options)] else truth_text
    else:
        try:
            truth = float(truth_text)
        except ValueError:
            truth = truth_text

    def verdict(covered: bool, agree: bool, ours, cause, details=None) -> Verdict:
        return Verdict(row["id"], question_type, scene, covered, agree, ours, truth, cause, details or {})

    if layout is None:
        return verdict(False, False, None, "scene not in meta_info")
    if not options and isinstance(truth, str):
        return verdict(False, False, None, "published ground truth is not a number")
    try:
        answer = compute_answer(layout, question_type, str(row["question"]), options or None, distances)
    except Uncovered as reason:
        return verdict(False, False, None, str(reason))
    ours = answer.value
    if options:
        if ours not in options:
            return verdict(True, False, ours, "computed answer is not among the options", answer.details)
        agree = ours == truth
        tolerance = 0.0
    else:
        tolerance = numeric_tolerance(truth_text)
        agree = abs(float(ours) - float(truth)) <= tolerance
    cause = None if agree else disagreement_cause(question_type, answer, ours, truth, tolerance)
    return verdict(True, agree, ours, cause, answer.details)


__all__ = [
    "Answer",
    "CATEGORY_ALIASES",
    "CategoryDistances",
    "Uncovered",
    "Verdict",
    "compute_answer",
    "judge",
    "numeric_tolerance",
]
