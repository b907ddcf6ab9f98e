"""Reasoning traces for supervised fine-tuning: for a record and a video text (`Frame i: After <action>, Observe: ...`),
a short `<think>` that cites the observations naming the question's objects and concludes the ground-truth answer,
followed by `<answer>`.

With the synthetic world's ground-truth caption as the video text, the cited observations are true by construction
(the simulator wrote them); with a VLM's description they are whatever the VLM saw. Pure text: no model involved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from embodied_data.records import Record
from embodied_data.synthetic.scene import COLOURS

MAX_CITATIONS = 3

# Colour words qualify the object word after them ("the purple stool"); the synthetic palette plus common others.
COLOUR_WORDS = frozenset(COLOURS) | {"grey", "beige", "silver", "gold", "dark", "light"}
# Words that never name an object: function words, the benchmarks' question templates, directions, actions, units.
# What is left of a question ("stool", "bookshelf", "tv") is what an observation has to mention to be cited.
STOP_WORDS = frozenset(
    """
    a an the and or of to in on at by for from with into onto than then that this these those it its is are was were be
    been am do does did can could would should will shall may might must not no yes if so as all any each every some
    what which who whom whose where when how why many much more most less least first last next now given until
    i me my mine you your we our us he she they them their his her
    left right front back ahead behind above below up down forward forwards backward backwards upward downward
    straight near far front-left front-right back-left back-right ahead-left ahead-right directly closest nearest
    farthest between side sides quadrant quadrants cartesian plane origin axis positive negative
    move moves moving turn turns turning rotate rotates rotating tilt tilts tilting rise rises descend descends go goes
    going standing stand facing face navigate navigation reach reached reaching perform following actions action fill
    please choose either beginning begin robot final destination position location initial current target camera
    question video room frame frames observe observation observations appearance first-time order categories category
    measuring measured measure point object objects distance length width height longest dimension size meters metres
    centimeters centimetres meter metre cm degrees degree instruction instructions series movement movements doing
    asked direction directions refer would have least want note along y-axis x-axis according
    """.split()
)
_WORD_RE = re.compile(r"[a-z][a-z-]*")
_FRAME_RE = re.compile(r"^Frame\s+(\d+):\s*(?:After\s+(.*?),\s*)?Observe:\s*(.*)$", re.DOTALL)
_FRAME_START = re.compile(r"(?m)^(?=Frame \d+:)")


@dataclass(frozen=True)
class Observation:
    """One key frame of a video text: its number, the action that led to it (None for frame 0) and what it shows."""

    frame: int
    action: str | None
    items: tuple[str, ...]  # the observation split at ';' ("a purple stool ahead-left, about 3.1 m away", ...)


@dataclass(frozen=True)
class ObjectMention:
    """An object the question names: its word ("stool") and, when the question gives one, its colour ("purple")."""

    word: str
    colour: str | None

    def matches(self, item_words: set[str]) -> bool:
        return self.word in item_words and (self.colour is None or self.colour in item_words)


def parse_video_text(video_text: str) -> list[Observation]:
    """The frames of a video text in order; text that does not look like `Frame i: ... Observe: ...` is ignored."""
    observations = []
    for part in _FRAME_START.split(video_text or ""):
        match = _FRAME_RE.match(part.strip())
        if match is None:
            continue
        items = tuple(item.strip().rstrip(".") for item in match.group(3).split(";") if item.strip())
        observations.append(Observation(int(match.group(1)), (match.group(2) or "").strip() or None, items))
    return observations


def _words(text: str) -> list[str]:
    # "table(s)" reads as "table"; hyphenated words ("ahead-left") stay whole so they can be stop words.
    return _WORD_RE.findall(text.lower().replace("(s)", ""))


def question_objects(record: Record) -> list[ObjectMention]:
    """The objects the question (and, for multiple choice, the correct option) names, in order of first mention."""
    text = record.question
    if not record.is_numeric:
        text += " " + record.choices[record.letters.index(str(record.answer))]
    mentions: list[ObjectMention] = []
    seen: set[str] = set()
    previous = None
    for word in _words(text):
        if word not in STOP_WORDS and word not in COLOUR_WORDS and len(word) >= 2 and word not in seen:
            seen.add(word)
            mentions.append(ObjectMention(word, previous if previous in COLOUR_WORDS else None))
        previous = word
    return mentions


def cited_observations(record: Record, video_text: str | None, max_citations: int = MAX_CITATIONS) -> list[tuple[Observation, str]]:
    """(frame, item) pairs worth citing, in frame order: the first sighting of each object the question names, then,
    if room is left, the last sighting of the first one (where the agent saw it most recently); at most `max_citations`."""
    observations = parse_video_text(video_text or "")
    indexed = [(obs, item, set(_words(item))) for obs in observations for item in obs.items]
    sightings = [[i for i, (_, _, words) in enumerate(indexed) if mention.matches(words)] for mention in question_objects(record)]
    sightings = [hits for hits in sightings if hits]
    wanted = [hits[0] for hits in sightings] + ([sightings[0][-1]] if sightings else [])
    picked: list[int] = []  # positions in `indexed`, unique, in order of importance
    for hit in wanted:
        if hit not in picked and len(picked) < max_citations:
            picked.append(hit)
    return [(indexed[i][0], indexed[i][1]) for i in sorted(picked)]


def answer_text(record: Record) -> str:
    """What goes inside `<answer>`: the option letter, or the number in its shortest form (3.0 -> "3")."""
    return f"{float(record.answer):g}" if record.is_numeric else str(record.answer)


def observation_sentences(record: Record, video_text: str | None) -> list[str]:
    """The body of a trace, before its conclusion: one sentence per cited observation ("Frame 2, after rotate left, I
    observe ..."), or one saying that the video shows none of the question's objects."""
    sentences = []
    for observation, item in cited_observations(record, video_text):
        where = f"Frame {observation.frame}" + (f", after {observation.action}" if observation.action else "")
        sentences.append(f"{where}, I observe {item}.")
    return sentences or ["The video shows none of the objects the question names directly."]


def reasoning_trace(record: Record, video_text: str | None) -> str:
    """`<think> <cited observations>. So the answer is: ... </think>\\n<answer> X </answer>` for `record`."""
    sentences = observation_sentences(record, video_text)
    answer = answer_text(record)
    if record.is_numeric:
        sentences.append(f"So the answer is {answer}.")
    else:
        sentences.append(conclusion(record, answer))
    return f"<think> {' '.join(sentences)} </think>\n<answer> {answer} </answer>"


def swapped_think(record: Record, video_text: str | None, letter: str, with_letter: bool = True) -> str:
    """The `<think>` text of `reasoning_trace` (multiple choice) with its conclusion naming option `letter`, right or
    not, with or without the sentence that states the letter: what the consistency judge is asked to read."""
    return " ".join([*observation_sentences(record, video_text), conclusion(record, letter, with_letter)])


def conclusion(record: Record, letter: str, with_letter: bool = True) -> str:
    """'So the answer is: I turn left. That is option C.': the option's words first, then its letter. A model writing
    left to right decides what the answer says before it looks up which letter the choices give that text; the letter
    first would make it commit to a letter before it has read which option is right."""
    option = record.choices[record.letters.index(letter)].strip().rstrip(".")
    return f"So the answer is: {option}." + (f" That is option {letter}." if with_letter else "")
