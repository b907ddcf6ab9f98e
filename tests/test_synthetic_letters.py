"""Balanced option letters in the synthetic data: every letter correct equally often per split and category, the
correct option's text unchanged, listed options rewritten in the shown order."""

from __future__ import annotations

import collections

from embodied_data.records import Record
from embodied_data.synthetic.letters import balance_option_letters


def _record(i: int, choices: tuple[str, ...], answer: str, question: str = "Which way?", split: str = "train",
            category: str = "Action Generation") -> Record:
    return Record(id=f"q{i}", video="v.mp4", question=question, choices=choices, answer=answer, category=category,
                  scene=f"s{i}", source="synthetic", split=split)


def test_every_letter_is_correct_equally_often_per_split_and_category():
    # Every question has its correct option first: the prior the balancing must remove.
    records = [_record(i, ("left", "right", "back"), "A", split="train" if i % 4 else "test",
                       category="medium" if i % 3 else "other") for i in range(90)]
    balanced = balance_option_letters(records, seed=0)
    counts: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    for before, after in zip(records, balanced):
        assert set(after.choices) == set(before.choices)
        assert after.choices[after.letters.index(after.answer)] == "left"  # the same correct text
        counts[(after.split, after.category)][after.answer] += 1
    for key, letters in counts.items():
        assert set(letters) == {"A", "B", "C"}, key
        assert max(letters.values()) - min(letters.values()) <= 1, (key, letters)


def test_numeric_records_pass_through_and_the_order_is_seeded():
    numeric = Record(id="n", video="v.mp4", question="How many?", choices=(), answer=3.0, category="object_counting",
                     scene="s", source="synthetic", split="train")
    records = [numeric] + [_record(i, ("a", "b", "c", "d"), "B") for i in range(8)]
    first, again, other = (balance_option_letters(records, seed) for seed in (0, 0, 1))
    assert first[0] == numeric
    assert first == again
    assert [r.answer for r in first] != [r.answer for r in other] or [r.choices for r in first] != [r.choices for r in other]


def test_options_listed_in_the_question_follow_the_new_order():
    question = "which of these objects (plant, sofa, chair, table) is the closest to the tv?"
    records = [_record(i, ("plant", "sofa", "chair", "table"), "A", question=question) for i in range(4)]
    for record in balance_option_letters(records, seed=0):
        assert f"({', '.join(record.choices)})" in record.question
        assert record.choices[record.letters.index(record.answer)] == "plant"
