"""The one record type every loader produces and every later layer consumes: a question about one video."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field

LETTERS = "ABCDEFGHIJ"
# How a missing value reads once turned into text (pandas' NaN / NaT / NA, Python's None, JSON's null): a question
# with this text is a hole in the source file, not a question.
MISSING_VALUE_TEXTS = frozenset({"nan", "nat", "<na>", "none", "null"})

log = logging.getLogger(__name__)


def is_missing_value_text(text: str) -> bool:
    """Whether `text` is a missing value written as text ("nan", "None", "<NA>", ...), not a value."""
    return text.strip().casefold() in MISSING_VALUE_TEXTS


def option_key(option: str) -> str:
    """An option's text as a reader compares options: case, runs of spaces and a final full stop do not matter."""
    return " ".join(option.split()).casefold().rstrip(".").rstrip()


def duplicate_choices(choices: tuple[str, ...] | list[str]) -> list[tuple[int, int]]:
    """(first, repeat) positions of options that read the same (`option_key`): one pair per repeat, in order."""
    first_at: dict[str, int] = {}
    pairs = []
    for position, option in enumerate(choices):
        key = option_key(option)
        if key in first_at:
            pairs.append((first_at[key], position))
        else:
            first_at[key] = position
    return pairs


def choice_letters(num_choices: int) -> str:
    """The option letters of a multiple-choice question with `num_choices` options ("ABCD" for 4)."""
    if not 0 < num_choices <= len(LETTERS):
        raise ValueError(f"a question needs 1..{len(LETTERS)} choices, got {num_choices}")
    return LETTERS[:num_choices]


@dataclass(frozen=True)
class Record:
    """A question about one egocentric video.

    Multiple choice: `choices` holds the option texts *without* their letter prefix (the letters follow from
    position: A, B, C, ...), and `answer` is the letter.  Numeric: `choices` is empty and `answer` is a float.
    Raises ValueError naming the record for an empty question or one that is a missing value written as text ("nan"),
    an answer that does not fit the choices, or two choices that read the same (`option_key`).
    """

    id: str
    video: str  # path to the video file (absolute, or relative to the manifest's folder)
    question: str
    choices: tuple[str, ...]
    answer: str | float
    category: str
    scene: str
    source: str  # "synthetic", "vsi_bench", "urbanvideo_bench", "embodied_r", ...
    split: str = "train"

    def __post_init__(self) -> None:
        if not self.question.strip():
            raise ValueError(f"record {self.id}: empty question")
        if is_missing_value_text(self.question):
            raise ValueError(f"record {self.id}: the question is {self.question.strip()!r}, a missing value written as text")
        if self.choices:
            letters = choice_letters(len(self.choices))
            if not isinstance(self.answer, str) or self.answer not in letters:
                raise ValueError(f"record {self.id}: answer {self.answer!r} is not one of the choice letters {letters}")
            # Two options that read the same make a letter meaningless (and, if one is the answer, two letters right).
            repeats = duplicate_choices(self.choices)
            if repeats:
                first, repeat = repeats[0]
                both = letters[first] + letters[repeat]
                answer_note = f"; the answer {self.answer} is one of them" if self.answer in both else ""
                raise ValueError(f"record {self.id}: duplicate choices: {letters[first]} and {letters[repeat]} are both "
                                 f"{self.choices[repeat]!r}{answer_note}")
        elif isinstance(self.answer, str):
            raise ValueError(f"record {self.id}: a question without choices needs a numeric answer, got {self.answer!r}")

    @property
    def is_numeric(self) -> bool:
        return not self.choices

    @property
    def letters(self) -> str:
        return choice_letters(len(self.choices)) if self.choices else ""

    def choices_text(self) -> str:
        """The options as the prompt shows them, one per line: "A. left"."""
        return "\n".join(f"{letter}. {text}" for letter, text in zip(self.letters, self.choices))

    def to_row(self) -> dict:
        row = dataclasses.asdict(self)
        row["choices"] = list(self.choices)
        row["answer"] = str(self.answer)
        row["numeric"] = self.is_numeric
        return row

    @classmethod
    def from_row(cls, row: dict) -> "Record":
        numeric = bool(row.get("numeric", not row.get("choices")))
        answer = float(row["answer"]) if numeric else str(row["answer"])
        return cls(
            id=str(row["id"]),
            video=str(row["video"]),
            question=str(row["question"]),
            choices=tuple(str(c) for c in (row.get("choices") or ())),
            answer=answer,
            category=str(row["category"]),
            scene=str(row["scene"]),
            source=str(row.get("source", "unknown")),
            split=str(row.get("split", "train")),
        )


@dataclass
class SkipReport:
    """Records that could not be used: each with its id and the reason, counted, never silently dropped."""

    skipped: list[tuple[str, str]] = field(default_factory=list)
    log_each: bool = True  # False: keep every (id, reason) but leave the logging to one summary (bulk loaders)

    def add(self, record_id: str, reason: str) -> None:
        self.skipped.append((record_id, reason))
        if self.log_each:
            log.warning("skipped record %s: %s", record_id, reason)

    def __len__(self) -> int:
        return len(self.skipped)

    def counts_by_reason(self) -> Counter:
        return Counter(reason.split(":")[0] for _, reason in self.skipped)

    def summary(self) -> str:
        if not self.skipped:
            return "0 records skipped"
        reasons = ", ".join(f"{n} x {r}" for r, n in self.counts_by_reason().most_common())
        return f"{len(self.skipped)} records skipped ({reasons})"
