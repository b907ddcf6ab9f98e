"""Balanced option letters: re-orders each multiple-choice question's options so that, within every (split, category,
number of options), the correct letter runs through shuffled decks holding each position once, so every letter is
correct equally often (to within one question) and no constant letter scores above chance."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from embodied_data.records import Record, choice_letters


def balance_option_letters(records: Iterable[Record], seed: int) -> list[Record]:
    """`records` with their options re-ordered (same options, same correct text; the answer letter follows it). The
    distractors keep a seeded random order around the correct one; a question that lists its options in its own text
    (VSI's "which of these objects (a, b, c, d) ...") has that list rewritten in the new order. Numeric records pass
    through unchanged."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1E77E25]))
    decks: dict[tuple[str, str, int], list[int]] = {}
    balanced = []
    for record in records:
        if record.is_numeric or len(record.choices) < 2:
            balanced.append(record)
            continue
        key = (record.split, record.category, len(record.choices))
        deck = decks.setdefault(key, [])
        if not deck:  # a new deck: every position once, in a random order
            deck.extend(int(i) for i in rng.permutation(len(record.choices)))
        position = deck.pop()
        balanced.append(reorder_options(record, position, rng))
    return balanced


def reorder_options(record: Record, position: int, rng: np.random.Generator) -> Record:
    """`record` with its correct option moved to `position` and the others shuffled around it."""
    letters = record.letters
    correct = record.choices[letters.index(str(record.answer))]
    others = [c for i, c in enumerate(record.choices) if letters[i] != str(record.answer)]
    others = [others[i] for i in rng.permutation(len(others))]
    choices = tuple(others[:position] + [correct] + others[position:])
    question = record.question
    listed = ", ".join(record.choices)
    if question.count(listed) == 1:  # the options are listed in the question: keep the list in the shown order
        question = question.replace(listed, ", ".join(choices))
    return dataclasses.replace(record, question=question, choices=choices, answer=choice_letters(len(choices))[position])
