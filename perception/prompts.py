"""The VLM prompts of Embodied-R's perception: a scene description for key frame 0 and a differential prompt
(previous + current key frame -> action, newly observed spatial information, question-related objects) after it.

Question-aware mode is the published one: both prompts name the question so that the VLM mentions the objects it
asks about (without answering it); its descriptions are per question.  Question-independent mode asks instead for
every salient object, so that one description of a video serves every question about it (one VLM pass per video).
Any change to the text below must bump PROMPT_VERSION: it is part of the description cache key.
"""

from __future__ import annotations

from embodied_data.actions import ACTIONS  # noqa: F401  (re-exported: the vocabulary the differential prompt lists)

PROMPT_VERSION = "embodied-r-perception-v1"

_ACTION_LIST_TEXT = "Move forward, move backward, move left, move right, move upward, move downward, rotate left, " \
    "rotate right, tilt downward, or tilt upward"

_FIRST_FRAME = (
    "I provide you with the first-person perspective of an intelligent agent. "
    "Please output a description of the current observed scene. "
    "When describing the scene, focus on using features such as color and shape to characterize the objects. "
    "Additionally, emphasize the spatial relationship between the agent itself and the surrounding environment. "
    "You should first visualize the three-dimensional space around the agent. "
    "When describing relative positions, use terms such as 'to the left,' 'ahead-left,' or 'below,' "
    "rather than merely stating their positions within the field of view. "
)
_FIRST_FRAME_QUESTION = (
    "More important, if the objects mentioned in the following question appear in the images, please make sure to "
    "describe them: '{question}'. To reiterate, don't answer this question and don't give any option, you just need "
    "to observe whether the image contains the objects mentioned in the question/option.\n"
)
_FIRST_FRAME_ALL_OBJECTS = (
    "More important, make sure to mention every salient object (with its color, shape and position relative to the "
    "agent), since questions about any of them may follow.\n"
)
_FIRST_FRAME_END = "The response should be concise and clear."

_DIFFERENTIAL = (
    "I provide you with the agent's first-person perspective. Two images represent the field of view before and "
    "after the action. Please output:\n"
    "1. Based on the relative positional changes of objects in the field of view, determine the action performed "
    f"(only output one of the following options without redundant content): {_ACTION_LIST_TEXT}.\n"
    "2. Analyze the post-action field of view compared to the pre-action view, identifying any newly captured "
    "spatial information. This includes objects that were previously invisible or unclear. Note that many objects "
    "of the same category may appear repetitive, such as buildings in a city, but they might differ in color or "
    "shape. When describing these, include features such as color and shape. Additionally, focus on the "
    "relationship between the agent and its surrounding environment. To do so, first imagine the three-dimensional "
    "scene around the agent. When describing relative positions, use terms such as 'to the left,' 'in the "
    "front-left,' or 'below' rather than simply referring to their positions in the field of view.\n"
)
_DIFFERENTIAL_QUESTION = (
    "3. If the objects mentioned in the following question appear in the images, please make sure to describe them: "
    "'{question}'. To reiterate, don't answer this question and don't give any option, you just need to observe "
    "whether the image contains the objects mentioned in the question/option.\n"
)
_DIFFERENTIAL_ALL_OBJECTS = (
    "3. List the salient objects visible after the action, with their color, shape and position relative to the "
    "agent, since questions about any of them may follow.\n"
)
_DIFFERENTIAL_END = "Ensure responses are concise and clear."


def first_frame_prompt(question: str | None) -> str:
    """The prompt for key frame 0 (one image); `question` None selects the question-independent mode."""
    middle = _FIRST_FRAME_QUESTION.format(question=question.strip()) if question else _FIRST_FRAME_ALL_OBJECTS
    return _FIRST_FRAME + middle + _FIRST_FRAME_END


def differential_prompt(question: str | None) -> str:
    """The prompt for key frame i > 0 (images i-1 and i); `question` None selects the question-independent mode."""
    item3 = _DIFFERENTIAL_QUESTION.format(question=question.strip()) if question else _DIFFERENTIAL_ALL_OBJECTS
    return _DIFFERENTIAL + item3 + _DIFFERENTIAL_END
