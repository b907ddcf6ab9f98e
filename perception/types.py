"""What perception produces for one video: the text of its key frames, in the paper's frame-by-frame shape."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FrameDescription:
    observation: str  # what is seen, relative to the agent
    action: str | None = None  # the action since the previous key frame (None for frame 0)
    related_objects: str = ""  # question-related objects the VLM mentions
    action_text: str = ""  # the VLM's own words for the action (item 1), kept when `action` could not be mapped
    raw: str = ""  # the VLM's whole answer, so a better parser can re-read cached descriptions

    def view_text(self) -> str:
        """What the frame's line shows after "Observe:": the observation, then the related objects (as the paper)."""
        return " ".join(part for part in (self.observation, self.related_objects) if part)


@dataclass
class VideoDescription:
    video: str
    frames: list[FrameDescription] = field(default_factory=list)
    keyframe_indices: list[int] = field(default_factory=list)  # positions in the 1-fps sequence
    keyframe_frames: list[int] = field(default_factory=list)  # frame numbers of the key frames in the source video

    def to_text(self) -> str:
        """`Frame 0: Observe: ...` then `Frame i: After <action>, Observe: ...`, one line per key frame."""
        lines = []
        for i, frame in enumerate(self.frames):
            if i == 0 or not frame.action:
                lines.append(f"Frame {i}: Observe: {frame.view_text()}")
            else:
                lines.append(f"Frame {i}: After {frame.action}, Observe: {frame.view_text()}")
        return "\n".join(lines)
