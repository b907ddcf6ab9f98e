"""The paper's ten egocentric actions (Embodied-R's action vocabulary), in the order the paper lists them."""

from __future__ import annotations

ACTIONS: tuple[str, ...] = (
    "move forward",
    "move backward",
    "move left",
    "move right",
    "move upward",
    "move downward",
    "rotate left",
    "rotate right",
    "tilt downward",
    "tilt upward",
)
