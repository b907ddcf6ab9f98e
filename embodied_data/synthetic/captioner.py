"""A ground-truth captioner: privileged simulator information (exact poses, actions and visible objects) written in
the shape of the perception VLM's output, `Frame 0: Observe: ...` then `Frame i: After <action>, Observe: ...`.

It is not a perception model: it reads the simulator's truth.  Use it as an oracle for the reasoning model, to test
the pipeline without a VLM, or to measure how much a real VLM's descriptions lose.
"""

from __future__ import annotations

from embodied_data.synthetic.groundtruth import FrameTruth


def describe_frame(frame: FrameTruth, max_objects: int = 6) -> str:
    """'a red chair ahead-left, about 2.1 m away; a brown table straight ahead, about 3.4 m away' (nearest first)."""
    if not frame.visible:
        return "only the walls, floor and ceiling of the room"
    nearest = sorted(frame.visible, key=lambda v: v.distance_m)[:max_objects]
    ordered = sorted(nearest, key=lambda v: v.bearing_deg)  # read from left to right
    return "; ".join(f"a {v.name} {v.direction_words()}, about {v.distance_m:.1f} m away" for v in ordered)


def combined_action(actions: list[str]) -> str | None:
    """The actions between two described frames, in order, repeats merged: 'move forward and rotate left'."""
    merged: list[str] = []
    for action in actions:
        if not merged or merged[-1] != action:
            merged.append(action)
    return " and ".join(merged) if merged else None


def ground_truth_caption(frames: list[FrameTruth], frame_indices: list[int] | None = None) -> tuple[str, list[tuple[str | None, str]]]:
    """The text for the chosen frames (all by default) and the (action since the previous chosen frame, observation)
    pairs it is made of; the first pair's action is None."""
    chosen = list(range(len(frames))) if frame_indices is None else list(frame_indices)
    if not chosen:
        raise ValueError("ground_truth_caption needs at least one frame")
    pairs: list[tuple[str | None, str]] = []
    previous = None
    for position in chosen:
        frame = frames[position]
        if previous is None:
            action = None
        else:
            steps = [f.action for f in frames[previous + 1 : position + 1] if f.action]
            action = combined_action(steps)
        pairs.append((action, describe_frame(frame)))
        previous = position
    lines = []
    for i, (action, observation) in enumerate(pairs):
        if i == 0 or not action:
            lines.append(f"Frame {i}: Observe: {observation}")
        else:
            lines.append(f"Frame {i}: After {action}, Observe: {observation}")
    return "\n".join(lines), pairs
