"""Question generators in the VSI-Bench and UrbanVideo-Bench wording whose answers are computed from the geometry.

Every generator asks only about what the video shows (objects seen in some frame), skips a question whose answer
would sit on a decision boundary (an object almost straight ahead, two nearly equal distances, ...), and shuffles
multiple-choice options with the scene's random generator.  Categories are the benchmarks' own names; the text
is the question alone, as the loaders give it (no "Question:" prefix, no option list).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from embodied_data.records import choice_letters
from embodied_data.synthetic.camera import (
    OBJECT_MARGIN,
    STEP_METRES,
    STEP_YAW_DEGREES,
    WALL_MARGIN,
    Pose,
    Segment,
    pose_is_free,
)
from embodied_data.synthetic.groundtruth import FrameTruth, egocentric_bearing, first_appearance
from embodied_data.synthetic.scene import Scene, SceneObject, box_distance


@dataclass(frozen=True)
class Question:
    category: str
    question: str
    choices: tuple[str, ...]  # option texts without letters; empty for numeric questions
    answer: str | float  # letter, or number


def _multiple_choice(category: str, question: str, correct: str, distractors: list[str], rng: np.random.Generator) -> Question:
    options = [correct, *distractors]
    order = rng.permutation(len(options))
    shuffled = tuple(options[i] for i in order)
    return Question(category, question, shuffled, choice_letters(len(shuffled))[shuffled.index(correct)])


def _listed_choice(category: str, template: str, correct: str, distractors: list[str], rng: np.random.Generator) -> Question:
    """Like `_multiple_choice`, but the question lists the options in their shuffled order (VSI's style)."""
    draft = _multiple_choice(category, "", correct, distractors, rng)
    return Question(category, template.format(listed=", ".join(draft.choices)), draft.choices, draft.answer)


def signed_angle(from_vec: np.ndarray, to_vec: np.ndarray) -> float:
    """Horizontal angle in degrees from one direction to another; positive counter-clockwise (to the left)."""
    cross = from_vec[0] * to_vec[1] - from_vec[1] * to_vec[0]
    return math.degrees(math.atan2(cross, float(from_vec[:2] @ to_vec[:2])))


class QuestionContext:
    """What the generators share about one video: the scene, the frames' truth and the objects the video shows."""

    def __init__(self, scene: Scene, frames: list[FrameTruth], rng: np.random.Generator) -> None:
        self.scene = scene
        self.frames = frames
        self.rng = rng
        self.first_seen = first_appearance(frames)
        groups = scene.by_category()
        # Objects nameable as "the <category>": the only one of their kind in the room, and seen in the video.
        self.unique_seen = [g[0] for g in groups.values() if len(g) == 1 and g[0].object_id in self.first_seen]
        # Categories all of whose instances the video shows (so counting and nearest-of-category are answerable).
        self.fully_seen = {c: g for c, g in groups.items() if all(o.object_id in self.first_seen for o in g)}

    def pick(self, items: list, k: int) -> list:
        return [items[i] for i in self.rng.choice(len(items), size=k, replace=False)]


def unique_seen_targets(ctx: QuestionContext) -> list[SceneObject]:
    """The objects the video shows whose name no other object of the scene has (a new list, in scene order)."""
    names = [o.name for o in ctx.scene.objects]
    return [o for o in ctx.scene.objects if o.object_id in ctx.first_seen and names.count(o.name) == 1]


def direction_label(angle: float, kind: str) -> str | None:
    """The answer for a target at `angle` degrees (positive = counter-clockwise, to the left) from the facing direction.

    kind "medium": left / right / back (back from 135 degrees on); "easy": left / right; "hard": front-left,
    front-right, back-left, back-right.  None when the angle is too close to a boundary to be asked fairly.
    """
    a = abs(angle)
    side = "left" if angle > 0 else "right"
    if kind == "medium":
        if a <= 20 or abs(a - 135) <= 12:
            return None
        return "back" if a >= 135 else side
    if kind == "easy":
        return side if 20 < a < 160 else None
    if kind == "hard":
        if min(abs(a - boundary) for boundary in (0, 90, 180)) <= 15:
            return None
        return ("front-" if a < 90 else "back-") + side
    raise ValueError(f"unknown direction question kind {kind!r}")


DIRECTION_OPTIONS = {
    "medium": ("left", "right", "back"),
    "easy": ("left", "right"),
    "hard": ("front-left", "front-right", "back-left", "back-right"),
}


def standing_facing_angle(standing: SceneObject, facing: SceneObject, target: SceneObject) -> float | None:
    """Signed horizontal angle (degrees, positive left) of `target` seen from `standing` while facing `facing`;
    None when either is too close to the standing point for a direction to mean much."""
    to_facing, to_target = facing.centre - standing.centre, target.centre - standing.centre
    if np.linalg.norm(to_facing[:2]) < 0.8 or np.linalg.norm(to_target[:2]) < 0.8:
        return None
    return signed_angle(to_facing, to_target)


def _direction_question(ctx: QuestionContext, kind: str) -> Question | None:
    candidates = []
    for a, b, c in itertools.permutations(ctx.unique_seen, 3):
        angle = standing_facing_angle(a, b, c)
        label = direction_label(angle, kind) if angle is not None else None
        if label is not None:
            candidates.append((a, b, c, label))
    if not candidates:
        return None
    a, b, c, answer = candidates[int(ctx.rng.integers(len(candidates)))]
    if kind == "medium":
        question = (
            f"If I am standing by the {a.category} and facing the {b.category}, is the {c.category} to my left, right, or back?\n"
            "An object is to my back if I would have to turn at least 135 degrees in order to face it."
        )
    elif kind == "easy":
        question = f"If I am standing by the {a.category} and facing the {b.category}, is the {c.category} to the left or the right of the {b.category}?"
    else:
        question = (
            f"If I am standing by the {a.category} and facing the {b.category}, is the {c.category} to my front-left, "
            "front-right, back-left, or back-right?\nThe directions refer to the quadrants of a Cartesian plane "
            "(if I am standing at the origin and facing along the positive y-axis)."
        )
    distractors = [o for o in DIRECTION_OPTIONS[kind] if o != answer]
    return _multiple_choice(f"object_rel_direction_{kind}", question, answer, distractors, ctx.rng)


def object_rel_direction_medium(ctx: QuestionContext) -> Question | None:
    return _direction_question(ctx, "medium")


def object_rel_direction_easy(ctx: QuestionContext) -> Question | None:
    return _direction_question(ctx, "easy")


def object_rel_direction_hard(ctx: QuestionContext) -> Question | None:
    return _direction_question(ctx, "hard")


def object_rel_distance(ctx: QuestionContext) -> Question | None:
    """Which of four categories is closest to a reference object (closest points; nearest instance of each)."""
    refs = list(ctx.unique_seen)
    ctx.rng.shuffle(refs)
    for ref in refs:
        others = [c for c in ctx.fully_seen if c != ref.category]
        if len(others) < 4:
            continue
        chosen = ctx.pick(sorted(others), 4)
        distance = {c: min(box_distance(ref.bounds, o.bounds) for o in ctx.fully_seen[c]) for c in chosen}
        ranked = sorted(chosen, key=distance.get)
        if distance[ranked[1]] - distance[ranked[0]] < 0.2:
            continue
        template = "Measuring from the closest point of each object, which of these objects ({listed}) is the closest to the " + ref.category + "?"
        return _listed_choice("object_rel_distance", template, ranked[0], ranked[1:], ctx.rng)
    return None


def obj_appearance_order(ctx: QuestionContext) -> Question | None:
    first_by_category: dict[str, int] = {}
    for obj in ctx.scene.objects:
        if obj.object_id in ctx.first_seen:
            first_by_category[obj.category] = min(first_by_category.get(obj.category, 10**9), ctx.first_seen[obj.object_id])
    # Categories first seen in distinct frames, at least one frame apart, so the order is unambiguous.
    by_frame: dict[int, list[str]] = {}
    for category, frame in first_by_category.items():
        by_frame.setdefault(frame, []).append(category)
    distinct = [sorted(cats)[int(ctx.rng.integers(len(cats)))] for frame, cats in sorted(by_frame.items())]
    if len(distinct) < 3:
        return None
    chosen = ctx.pick(distinct, min(4, len(distinct)))
    correct = sorted(chosen, key=first_by_category.get)
    permutations = [list(p) for p in itertools.permutations(chosen) if list(p) != correct]
    distractors = [", ".join(permutations[i]) for i in ctx.rng.choice(len(permutations), size=3, replace=False)]
    asked = ", ".join(chosen)
    question = f"What will be the first-time appearance order of the following categories in the video: {asked}?"
    return _multiple_choice("obj_appearance_order", question, ", ".join(correct), distractors, ctx.rng)


def object_counting(ctx: QuestionContext) -> Question | None:
    if not ctx.fully_seen:
        return None
    # Prefer categories with several instances: counting one object teaches little.
    categories = sorted(ctx.fully_seen)
    multiple = [c for c in categories if len(ctx.fully_seen[c]) > 1]
    pool = multiple if multiple and ctx.rng.random() < 0.75 else categories
    category = pool[int(ctx.rng.integers(len(pool)))]
    return Question("object_counting", f"How many {category}(s) are in this room?", (), float(len(ctx.fully_seen[category])))


def object_abs_distance(ctx: QuestionContext) -> Question | None:
    if len(ctx.unique_seen) < 2:
        return None
    a, b = ctx.pick(ctx.unique_seen, 2)
    distance = round(box_distance(a.bounds, b.bounds), 1)
    if distance < 0.3:
        return None
    question = f"Measuring from the closest point of each object, what is the distance between the {a.category} and the {b.category} (in meters)?"
    return Question("object_abs_distance", question, (), float(distance))


def object_size_estimation(ctx: QuestionContext) -> Question | None:
    if not ctx.unique_seen:
        return None
    obj = ctx.pick(ctx.unique_seen, 1)[0]
    question = f"What is the length of the longest dimension (length, width, or height) of the {obj.category}, measured in centimeters?"
    return Question("object_size_estimation", question, (), float(round(obj.longest_dimension() * 100)))


def room_size_estimation(ctx: QuestionContext) -> Question | None:
    question = "What is the size of this room (in square meters)? \nIf multiple rooms are shown, estimate the size of the combined space."
    return Question("room_size_estimation", question, (), float(round(ctx.scene.room.area, 1)))


def turn_label(from_direction: np.ndarray, to_direction: np.ndarray) -> str | None:
    """'Turn Left' / 'Turn Right' / 'Turn Back' between two walking directions; None when nearly straight on or
    near the 135-degree line between a side turn and a turn back."""
    angle = signed_angle(from_direction, to_direction)
    if abs(angle) < 35 or abs(abs(angle) - 135) <= 12:
        return None
    if abs(angle) > 135:
        return "Turn Back"
    return "Turn Left" if angle > 0 else "Turn Right"


def route_planning(ctx: QuestionContext) -> Question | None:
    """VSI's route planning: start at A facing B, walk A->B->C->D; the two turns to fill in are at B and at C."""
    objects = list(ctx.unique_seen)
    if len(objects) < 4:
        return None
    for _ in range(30):
        a, b, c, d = ctx.pick(objects, 4)
        legs = [b.centre - a.centre, c.centre - b.centre, d.centre - c.centre]
        if any(np.linalg.norm(leg[:2]) < 0.8 for leg in legs):
            continue
        turns = [turn_label(legs[0], legs[1]), turn_label(legs[1], legs[2])]
        if None in turns:
            continue
        question = (
            f"You are a robot beginning at the {a.category} facing the {b.category}. You want to navigate to the "
            f"{d.category}. You will perform the following actions (Note: for each [please fill in], choose either "
            f"'turn back,' 'turn left,' or 'turn right.'): 1. Go forward until the {b.category} 2. [please fill in] "
            f"3. Go forward until the {c.category} 4. [please fill in] 5. Go forward until the {d.category}. "
            "You have reached the final destination."
        )
        correct = ", ".join(turns)
        every = [f"{x}, {y}" for x in ("Turn Left", "Turn Right", "Turn Back") for y in ("Turn Left", "Turn Right", "Turn Back")]
        others = [o for o in every if o != correct]
        distractors = [others[i] for i in ctx.rng.choice(len(others), size=3, replace=False)]
        return _multiple_choice("route_planning", question, correct, distractors, ctx.rng)
    return None


LANDMARK_SECTORS = (  # (words, lowest |bearing|, highest |bearing|); the gaps between sectors are not asked
    ("directly in front of me", 0, 12),
    ("ahead of me, to the {side}", 25, 60),
    ("on my {side}", 75, 115),
    ("behind me", 150, 180),
)


def landmark_position(ctx: QuestionContext) -> Question | None:
    """UrbanVideo's Landmark Position: where a target seen earlier lies relative to the agent at the last frame."""
    last = ctx.frames[-1].pose
    targets = unique_seen_targets(ctx)
    ctx.rng.shuffle(targets)
    for target in targets:
        bearing = egocentric_bearing(last, target.centre)
        side = "right" if bearing > 0 else "left"
        words = next((w for w, lo, hi in LANDMARK_SECTORS if lo <= abs(bearing) <= hi), None)
        if words is None:
            continue
        correct = f"The {target.name} is {words.format(side=side)}."
        every = [f"The {target.name} is {w.format(side=s)}." for w, _, _ in LANDMARK_SECTORS for s in ("left", "right")]
        others = sorted({o for o in every if o != correct})
        distractors = [others[i] for i in ctx.rng.choice(len(others), size=4, replace=False)]
        question = (
            f"At the initial position, you are asked to navigate to the {target.name}. When you reach the current "
            f"location, what is the direction to the {target.name}?"
        )
        return _multiple_choice("Landmark Position", question, correct, distractors, ctx.rng)
    return None


# UrbanVideo-Bench's seven action options (indoors the agent moves rather than flies).
URBAN_ACTION_OPTIONS = {
    "move upward": "I rise.",
    "tilt downward": "I rotate the camera downward.",
    "move forward": "I move forward.",
    "rotate left": "I turn left.",
    "rotate right": "I turn right.",
    "tilt upward": "I rotate the camera upward.",
    "move downward": "I descend.",
}


def next_action_towards(pose: Pose, target: SceneObject) -> str | None:
    """The next move towards a target from `pose`: turn when it is well off-axis, walk when it is ahead and far."""
    bearing = egocentric_bearing(pose, target.centre)
    horizontal = math.hypot(target.centre[0] - pose.x, target.centre[1] - pose.y)
    if abs(bearing) >= 35:
        return "rotate right" if bearing > 0 else "rotate left"
    if abs(bearing) <= 12 and horizontal > 1.5:
        return "move forward"
    return None  # too close to a decision boundary, or arrived


def action_generation(ctx: QuestionContext) -> Question | None:
    """UrbanVideo's Action Generation: from the last frame's pose, the next move towards an object seen earlier."""
    last = ctx.frames[-1].pose
    targets = unique_seen_targets(ctx)
    ctx.rng.shuffle(targets)
    for target in targets:
        action = next_action_towards(last, target)
        if action is None:
            continue
        return action_generation_question(ctx, target.name, action)
    return None


def action_generation_question(ctx: QuestionContext, target_name: str, action: str) -> Question:
    """UrbanVideo's Action Generation wording; the seven movement options, with `action`'s the correct one."""
    question = (
        f"At the initial position, you are asked to navigate to the {target_name}. "
        "What is your next move, given the target location for your next move?"
    )
    correct = URBAN_ACTION_OPTIONS[action]
    return _multiple_choice("Action Generation", question, correct, [o for o in URBAN_ACTION_OPTIONS.values() if o != correct], ctx.rng)


def segment_phrase(segment: Segment, end_frame: FrameTruth) -> str:
    """'I rotate left until the red chair is straight ahead.': the action and the landmark it ends on."""
    if end_frame.visible:
        landmark = min(end_frame.visible, key=lambda v: abs(v.bearing_deg))
        return f"I {segment.action} until the {landmark.name} is {landmark.direction_words()}."
    return f"I {segment.action} until I face the wall."


def progress_evaluation(ctx: QuestionContext, segments: list[Segment], plan_frames: list[FrameTruth]) -> Question | None:
    """UrbanVideo's Progress Evaluation: the instruction covers the whole planned path, the video only its start."""
    if len(segments) < 5:
        return None
    phrases = [segment_phrase(s, plan_frames[s.start + s.steps - 1]) for s in segments]
    if len(set(phrases)) != len(phrases):
        return None
    last_index = ctx.frames[-1].index
    current = next((i for i, s in enumerate(segments) if s.start <= last_index < s.start + s.steps), None)
    if current is None:
        return None
    instruction = " ".join(p[2].lower() + p[3:] for p in phrases)  # "rotate left until ... move forward until ..."
    others = [p for i, p in enumerate(phrases) if i != current]
    distractors = [others[i] for i in sorted(ctx.rng.choice(len(others), size=min(4, len(others)), replace=False))]
    question = (
        f"Navigation Instruction given at initial position: [{instruction}]. "
        "You move according to a series of movement instructions. What are you doing now?"
    )
    return _multiple_choice("Progress Evaluation", question, phrases[current], distractors, ctx.rng)


# Counterfactual: the paper trains on UrbanVideo's Counterfactual questions ("If you do not X but choose to Y, can you
# still reach Z? How does the time of the alternative route compare?", three options).  Indoors the alternative is
# the opposite of one action segment of the video, applied for as many steps; its answer is read off the geometry.
COUNTERFACTUAL_ALTERNATIVE = {
    "rotate left": "rotate right",
    "rotate right": "rotate left",
    "move left": "move right",
    "move right": "move left",
    "move forward": "move backward",
    "move backward": "move forward",
}
COUNTERFACTUAL_WORDS = {
    "rotate left": "turn left",
    "rotate right": "turn right",
    "move left": "move to the left",
    "move right": "move to the right",
    "move forward": "move forward",
    "move backward": "move backward",
}
REACH_DISTANCE = 0.5  # metres from the target's footprint at which it counts as reached
COUNTERFACTUAL_MARGIN_STEPS = 2.0  # the two routes' times must differ by at least this many action steps


def steps_to_reach(pose: Pose, target: SceneObject) -> float:
    """Action steps from `pose` to the target: turn to face it, then walk straight to within REACH_DISTANCE of its
    footprint (fractional steps; obstacles on the way are not modelled, the time only compares two starts)."""
    bounds = target.bounds
    nearest = np.clip([pose.x, pose.y], bounds.lo[:2], bounds.hi[:2])
    walk = max(0.0, math.hypot(nearest[0] - pose.x, nearest[1] - pose.y) - REACH_DISTANCE)
    return abs(egocentric_bearing(pose, target.centre)) / STEP_YAW_DEGREES + walk / STEP_METRES


def blocking_obstacle(scene: Scene, pose: Pose) -> str | None:
    """What a pose that is not free runs into: "wall", or the name of the object whose footprint it enters."""
    if pose_is_free(scene, pose):
        return None
    room = scene.room
    for obj in scene.objects:
        b = obj.bounds
        if b.lo[0] - OBJECT_MARGIN <= pose.x <= b.hi[0] + OBJECT_MARGIN and b.lo[1] - OBJECT_MARGIN <= pose.y <= b.hi[1] + OBJECT_MARGIN:
            return obj.name
    inside = WALL_MARGIN <= pose.x <= room.width - WALL_MARGIN and WALL_MARGIN <= pose.y <= room.depth - WALL_MARGIN
    return "wall" if not inside else None


def action_segments(frames: list[FrameTruth]) -> list[Segment]:
    """The runs of one repeated action in the frames (the camera paths never repeat an action across segments)."""
    segments: list[Segment] = []
    for position, frame in enumerate(frames):
        if frame.action is None:
            continue
        last = segments[-1] if segments else None
        if last is not None and last.action == frame.action and last.start + last.steps == position:
            segments[-1] = Segment(last.action, last.steps + 1, last.start)
        else:
            segments.append(Segment(frame.action, 1, position))
    return segments


def counterfactual_outcome(scene: Scene, start: Pose, action: str, steps: int, target: SceneObject) -> str | None:
    """'blocked:<obstacle>', 'longer' or 'less' for doing the opposite of `action` for `steps` steps from `start`
    instead, on the way to `target`; None when the two routes take nearly the same time or the target itself is
    what the alternative runs into (then it is reached, not blocked)."""
    return compare_routes(
        start, action, COUNTERFACTUAL_ALTERNATIVE[action], steps, target.name,
        move=lambda pose, name: pose.apply(name),
        obstacle_at=lambda pose: blocking_obstacle(scene, pose),
        steps_left=lambda pose: steps_to_reach(pose, target),
    )


def pick_by_kind(by_kind: dict[str, list], rng: np.random.Generator):
    """A kind of answer first (sorted, uniformly), then one candidate of it: so that no answer dominates."""
    kinds = sorted(by_kind)
    found = by_kind[kinds[int(rng.integers(len(kinds)))]]
    return found[int(rng.integers(len(found)))]


def compare_routes(
    start: Pose, action: str, alternative: str, steps: int, target_name: str,
    move: Callable[[Pose, str], Pose], obstacle_at: Callable[[Pose], str | None], steps_left: Callable[[Pose], float],
) -> str | None:
    """The counterfactual verdict of any world (its motion, obstacles and distance rule passed in): walk `action` and
    `alternative` side by side for `steps` steps from `start`; 'blocked:<obstacle>' when the alternative runs into
    something other than the target, else 'longer' / 'less' by the steps still left to the target, or None when those
    differ by less than COUNTERFACTUAL_MARGIN_STEPS (or the alternative runs into the target: it is reached)."""
    actual, other = start, start
    for _ in range(steps):
        actual, other = move(actual, action), move(other, alternative)
        obstacle = obstacle_at(other)
        if obstacle is not None:
            return None if obstacle == target_name else f"blocked:{obstacle}"
    difference = steps_left(other) - steps_left(actual)
    if abs(difference) < COUNTERFACTUAL_MARGIN_STEPS:
        return None
    return "longer" if difference > 0 else "less"


def _moment_words(frame: FrameTruth) -> str:
    """When the segment starts, in the words of the frame before it: 'when the black tv is straight ahead'."""
    if frame.index == 0:
        return "at the start"
    if frame.visible:
        landmark = min(frame.visible, key=lambda v: abs(v.bearing_deg))
        return f"when the {landmark.name} is {landmark.direction_words()}"
    return f"{frame.time_s:g} seconds into the video"


def counterfactual(ctx: QuestionContext) -> Question | None:
    """UrbanVideo's Counterfactual: had one action segment of the video been its opposite, could the agent still
    reach an object it saw, and would the route take longer or less time (or is the alternative move blocked)?"""
    names = [o.name for o in ctx.scene.objects]
    targets = unique_seen_targets(ctx)

    def nearest_other(before: FrameTruth, target: SceneObject) -> str:
        # a wrong option still names something plausible: the nearest other object
        others = [o for o in ctx.scene.objects if o.name != target.name and names.count(o.name) == 1]
        return min(others, key=lambda o: steps_to_reach(before.pose, o)).name if others else "wall"

    return pick_counterfactual(
        ctx, targets, COUNTERFACTUAL_ALTERNATIVE, COUNTERFACTUAL_WORDS,
        lambda start, action, steps, target: counterfactual_outcome(ctx.scene, start, action, steps, target),
        nearest_other,
    )


def pick_counterfactual(
    ctx: QuestionContext,
    targets: list[SceneObject],
    alternatives: dict[str, str],
    words: dict[str, str],
    outcome_of: Callable[[Pose, str, int, SceneObject], str | None],
    fallback_obstacle: Callable[[FrameTruth, SceneObject], str],
) -> Question | None:
    """The Counterfactual question of any world: one (segment, target, outcome) drawn kind first among the segments
    whose action has an alternative, worded with `words`; the distractor's obstacle comes from `fallback_obstacle`."""
    # Group by kind of answer and draw the kind first: otherwise "longer" dominates (turning the other way usually
    # turns away from what the walk was heading to) and a model could score by always picking it.
    by_kind: dict[str, list[tuple[Segment, SceneObject, str]]] = {}
    for segment in action_segments(ctx.frames):
        if segment.action not in alternatives:
            continue
        for target in targets:
            outcome = outcome_of(ctx.frames[segment.start - 1].pose, segment.action, segment.steps, target)
            if outcome is not None:
                by_kind.setdefault(outcome.split(":", 1)[0], []).append((segment, target, outcome))
    if not by_kind:
        return None
    segment, target, outcome = pick_by_kind(by_kind, ctx.rng)
    before = ctx.frames[segment.start - 1]
    done, alternative = words[segment.action], words[alternatives[segment.action]]
    obstacle = outcome.split(":", 1)[1] if outcome.startswith("blocked:") else fallback_obstacle(before, target)
    return counterfactual_question(ctx, target.name, before, done, alternative, outcome, obstacle)


def counterfactual_question(ctx, target_name: str, before, done: str, alternative: str, outcome: str, obstacle: str) -> Question:
    """UrbanVideo's Counterfactual wording: could the alternative action still reach the target, and how long would it take?
    `outcome` is "longer", "less" or "blocked:<obstacle>"; the other two outcomes are the distractors."""
    options = {
        "longer": f"If I {alternative}, I can reach the {target_name}, but the route will take longer.",
        "less": f"If I {alternative}, I can reach the {target_name}, and the route will take less time.",
        "blocked": f"If I {alternative}, I cannot reach the {target_name} this way because the {obstacle} is in the way.",
    }
    correct = options.pop(outcome.split(":", 1)[0])
    question = (
        f"If you do not {done} {_moment_words(before)}, but choose to {alternative} instead for the same time, "
        f"can you still reach the {target_name}? How does the time of the alternative route compare?"
    )
    return _multiple_choice("Counterfactual", question, correct, list(options.values()), ctx.rng)


GENERATORS = {
    "object_rel_direction_medium": object_rel_direction_medium,
    "object_rel_direction_easy": object_rel_direction_easy,
    "object_rel_direction_hard": object_rel_direction_hard,
    "object_rel_distance": object_rel_distance,
    "obj_appearance_order": obj_appearance_order,
    "object_counting": object_counting,
    "object_abs_distance": object_abs_distance,
    "object_size_estimation": object_size_estimation,
    "room_size_estimation": room_size_estimation,
    "route_planning": route_planning,
    "Action Generation": action_generation,
    "Landmark Position": landmark_position,
    "Counterfactual": counterfactual,
}


PRIMARY_CATEGORIES = frozenset(
    {
        "object_rel_direction_medium",
        "object_rel_direction_easy",
        "object_rel_direction_hard",
        "object_rel_distance",
        "obj_appearance_order",
        "object_counting",
        "route_planning",
        "Action Generation",
        "Landmark Position",
        "Progress Evaluation",
        "Counterfactual",
    }
)


def generate_questions(
    scene: Scene,
    frames: list[FrameTruth],
    rng: np.random.Generator,
    count: int,
    segments: list[Segment] | None = None,
    plan_frames: list[FrameTruth] | None = None,
    generators: dict[str, Callable[[QuestionContext], Question | None]] | None = None,
) -> list[Question]:
    """Up to `count` questions about one video, spread over the categories round-robin in a seeded order
    (`generators` defaults to the indoor ones, GENERATORS; Progress Evaluation joins when a plan is given)."""
    ctx = QuestionContext(scene, frames, rng)
    makers = dict(GENERATORS if generators is None else generators)
    if segments is not None and plan_frames is not None:
        makers["Progress Evaluation"] = lambda c: progress_evaluation(c, segments, plan_frames)
    # The categories the paper trains on (and counting, which the brief of this world asks for) come first, each
    # once per round in a seeded order; the remaining VSI numeric categories fill up what they cannot.
    primary = [n for n in makers if n in PRIMARY_CATEGORIES]
    secondary = [n for n in makers if n not in PRIMARY_CATEGORIES]
    order = [primary[i] for i in rng.permutation(len(primary))] + [secondary[i] for i in rng.permutation(len(secondary))]
    questions: list[Question] = []
    seen_text: set[str] = set()
    exhausted: set[str] = set()
    while len(questions) < count and len(exhausted) < len(order):
        for name in order:
            if len(questions) >= count:
                break
            if name in exhausted:
                continue
            question = None
            for _ in range(3):  # a few draws before giving up on this category for this video
                draft = makers[name](ctx)
                if draft is not None and draft.question not in seen_text:
                    question = draft
                    break
            if question is None:
                exhausted.add(name)
                continue
            seen_text.add(question.question)
            questions.append(question)
    return questions
