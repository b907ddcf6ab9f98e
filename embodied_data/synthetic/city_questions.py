"""UrbanVideo-Bench questions on a city drone flight (Action Generation, Landmark Position, Progress Evaluation,
Counterfactual), answered from the geometry with the drone's step sizes, altitude band and building clearance."""

from __future__ import annotations

import math

import numpy as np

from embodied_data.synthetic.camera import Pose, Segment
from embodied_data.synthetic.city import (
    ALTITUDE_LIMITS,
    BOUNDARY_MARGIN_METRES,
    CLEARANCE_METRES,
    DRONE_STEPS,
    drone_pose_is_free,
)
from embodied_data.synthetic.groundtruth import FrameTruth, egocentric_bearing
from embodied_data.synthetic.questions import (
    COUNTERFACTUAL_ALTERNATIVE,
    COUNTERFACTUAL_WORDS,
    action_generation_question,
    Question,
    QuestionContext,
    compare_routes,
    pick_counterfactual,
    unique_seen_targets,
    generate_questions,
    landmark_position,
)
from embodied_data.synthetic.scene import Scene, SceneObject, point_box_distance

FAR_METRES = 20.0  # a target ahead and farther than this is flown to; nearer, it counts as reached
LOOKAHEAD_METRES = 25.0  # how far ahead a building on the straight line makes the drone rise first
HEIGHT_AMBIGUITY_METRES = 2.0  # an obstacle top this close to the flight altitude (plus clearance) is not asked
REACH_METRES = 6.0  # a target counts as reached within this 3D distance of its closest point

DRONE_ALTERNATIVE = {**COUNTERFACTUAL_ALTERNATIVE, "move upward": "move downward", "move downward": "move upward"}
DRONE_WORDS = {**COUNTERFACTUAL_WORDS, "move upward": "rise", "move downward": "descend"}


def _segment_hits_rectangle(start: np.ndarray, end: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bool:
    """Whether the 2D segment start->end meets the rectangle [lo, hi] (slab test)."""
    direction = end - start
    t0, t1 = 0.0, 1.0
    for axis in range(2):
        if abs(direction[axis]) < 1e-12:
            if not lo[axis] <= start[axis] <= hi[axis]:
                return False
            continue
        a, b = (lo[axis] - start[axis]) / direction[axis], (hi[axis] - start[axis]) / direction[axis]
        t0, t1 = max(t0, min(a, b)), min(t1, max(a, b))
        if t0 > t1:
            return False
    return True


def highest_obstacle_ahead(scene: Scene, pose: Pose, target: SceneObject, lookahead: float = LOOKAHEAD_METRES) -> float:
    """The highest top of any part (of objects other than the target) whose footprint, widened by the clearance,
    the straight horizontal line towards the target crosses within `lookahead` metres; -inf when none."""
    start = np.array([pose.x, pose.y])
    towards = target.centre[:2] - start
    length = float(np.linalg.norm(towards))
    end = start + towards * min(1.0, lookahead / max(length, 1e-9))
    highest = -math.inf
    for obj in scene.objects:
        if obj.object_id == target.object_id:
            continue
        for part in obj.parts:
            lo, hi = np.asarray(part.lo[:2]) - CLEARANCE_METRES, np.asarray(part.hi[:2]) + CLEARANCE_METRES
            if _segment_hits_rectangle(start, end, lo, hi):
                highest = max(highest, part.hi[2])
    return highest


def next_drone_action(scene: Scene, pose: Pose, target: SceneObject) -> str | None:
    """The drone's next move towards a target: turn when it is well off-axis; when it is ahead and far, rise if a
    building on the straight line reaches the flight altitude (plus clearance), else fly forward."""
    bearing = egocentric_bearing(pose, target.centre)
    horizontal = math.hypot(target.centre[0] - pose.x, target.centre[1] - pose.y)
    if abs(bearing) >= 35:
        return "rotate right" if bearing > 0 else "rotate left"
    if abs(bearing) > 12 or horizontal <= FAR_METRES:
        return None  # near a decision boundary, or arrived
    needed = highest_obstacle_ahead(scene, pose, target) + CLEARANCE_METRES
    if needed > pose.z + HEIGHT_AMBIGUITY_METRES:
        return "move upward"
    if needed > pose.z - HEIGHT_AMBIGUITY_METRES:
        return None  # skims the roof: either answer could be argued
    return "move forward"


def city_action_generation(ctx: QuestionContext) -> Question | None:
    """UrbanVideo's Action Generation from the last frame's pose, towards a landmark or building seen earlier."""
    last = ctx.frames[-1].pose
    targets = unique_seen_targets(ctx)
    ctx.rng.shuffle(targets)
    for target in targets:
        action = next_drone_action(ctx.scene, last, target)
        if action is None:
            continue
        return action_generation_question(ctx, target.name, action)
    return None


def drone_steps_to_reach(pose: Pose, target: SceneObject) -> float:
    """Action steps from `pose` to the target: turn to face it, then fly straight to within REACH_METRES of its
    closest point (fractional steps; buildings on the way are not modelled, the time only compares two starts)."""
    flight = max(0.0, point_box_distance(pose.position, target.bounds) - REACH_METRES)
    return abs(egocentric_bearing(pose, target.centre)) / DRONE_STEPS.yaw_degrees + flight / DRONE_STEPS.metres


def drone_blocking_obstacle(scene: Scene, pose: Pose) -> str | None:
    """What a pose that is not free runs into: a building or landmark's name, "ground", "altitude limit" or
    "city edge"; None when the pose is free."""
    if drone_pose_is_free(scene, pose):
        return None
    for obj in scene.objects:
        if any(point_box_distance(pose.position, part) < CLEARANCE_METRES for part in obj.parts):
            return obj.name
    if pose.z < ALTITUDE_LIMITS[0]:
        return "ground"
    if pose.z > ALTITUDE_LIMITS[1]:
        return "altitude limit"
    m = BOUNDARY_MARGIN_METRES
    if not (m <= pose.x <= scene.room.width - m and m <= pose.y <= scene.room.depth - m):
        return "city edge"
    return None


def drone_counterfactual_outcome(scene: Scene, start: Pose, action: str, steps: int, target: SceneObject) -> str | None:
    """'blocked:<obstacle>', 'longer' or 'less' for flying the opposite of `action` for `steps` steps instead;
    None when the times nearly agree or the alternative runs into the target itself (then it is reached)."""
    return compare_routes(
        start, action, DRONE_ALTERNATIVE[action], steps, target.name,
        move=lambda pose, name: pose.apply(name, DRONE_STEPS),
        obstacle_at=lambda pose: drone_blocking_obstacle(scene, pose),
        steps_left=lambda pose: drone_steps_to_reach(pose, target),
    )


def city_counterfactual(ctx: QuestionContext) -> Question | None:
    """UrbanVideo's Counterfactual on a flight: had one action segment been its opposite (turn, side step, forward
    or back, rise or descend), could the drone still reach a target it saw, and in more or less time?"""

    def nearest_other(before: FrameTruth, target: SceneObject) -> str:
        # a wrong option still names something plausible: the nearest other building or landmark
        others = [o for o in ctx.scene.objects if o.object_id != target.object_id]
        return min(others, key=lambda o: point_box_distance(before.pose.position, o.bounds)).name if others else "ground"

    return pick_counterfactual(
        ctx, unique_seen_targets(ctx), DRONE_ALTERNATIVE, DRONE_WORDS,
        lambda start, action, steps, target: drone_counterfactual_outcome(ctx.scene, start, action, steps, target),
        nearest_other,
    )


CITY_GENERATORS = {
    "Action Generation": city_action_generation,
    "Landmark Position": landmark_position,
    "Counterfactual": city_counterfactual,
}


def generate_city_questions(
    scene: Scene,
    frames: list[FrameTruth],
    rng: np.random.Generator,
    count: int,
    segments: list[Segment] | None = None,
    plan_frames: list[FrameTruth] | None = None,
) -> list[Question]:
    """Up to `count` UrbanVideo questions about one flight (Progress Evaluation too when the plan is given)."""
    return generate_questions(scene, frames, rng, count, segments, plan_frames, generators=CITY_GENERATORS)

