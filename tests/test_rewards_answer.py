"""Answer extraction and parsing: only the final <answer> after </think> counts, letters and numbers parse to one
reading or none, and the released code's misreadings ("answer carefully" as C, "e.g." as G, the article "a" as A)
score 0. The adversarial cases and the property tests are in test_rewards_adversarial.py."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from rewards.accuracy import accuracy_reward
from rewards.answer import extract_answer, extract_think, parse_choice_letter, parse_number

CHOICES = ("left", "right", "back", "front-left", "front-right", "behind the sofa", "ahead")


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>x</think><answer> C </answer>", "C"),
        ("<think>x</think>\n<answer>C</answer>\n", "C"),
        ("<answer>B</answer>", "B"),  # no reasoning at all: the one answer pair is the final answer
        ("<think>maybe <answer>A</answer></think><answer>B</answer>", "B"),  # an answer inside the thinking is not one
        ("<think>maybe <answer>A</answer></think>", None),
        ("<think>maybe <answer>A</answer>", None),  # the thinking never closed
        ("<think>x</think><answer>B</answer> and later <answer>C</answer>", None),  # two final answers: none
        ("<answer> <answer>D</answer>", None),  # a stray open tag: not one answer pair
        ("<think>x</think></answer>A<answer>", None),  # closed before it opens
        ("<think>x</think><answer>A</answer><think>", None),  # more thinking after the answer: not final
        ("<think>C is tempting</think>", None),
        ("<answer>   </answer>", None),
        ("<answer>C", None),
        ("C</answer>", None),
        ("<answer>\nfront-left\n</answer>", "front-left"),
    ],
)
def test_extract_answer_reads_only_the_final_answer(completion, expected):
    assert extract_answer(completion) == expected


def test_extract_think():
    assert extract_think("<think> I turned left.\n </think>\n<answer>A</answer>") == "I turned left."
    assert extract_think("<answer>A</answer>") is None
    assert extract_think("<think>  </think><answer>A</answer>") is None


@pytest.mark.parametrize(
    "completion",
    [
        # The released code found C in "answer carefully", G in "e.g.", A in the article "a": all outside <answer>.
        "Let me answer carefully. The door is behind me.",
        "<think>Objects, e.g. the door, are hard to see.</think>",
        "<think>I see a door.</think> a",
        "<think>answer carefully</think><answer></answer>",
        # Inside the tags: an article or an abbreviation is not a letter either.
        "<think>ok</think><answer>a door behind me</answer>",
        "<think>ok</think><answer>e.g. the door</answer>",
        "<think>ok</think><answer>Answer carefully: C or D</answer>",
        "<think>ok</think><answer>A door is behind me</answer>",
    ],
)
def test_released_code_misreadings_score_zero(completion, make_record):
    for truth in "ACEG":
        assert accuracy_reward(completion, make_record(question="Where is the door?", choices=CHOICES, answer=truth)) == 0.0


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("C", "C"), ("C.", "C"), ("(C)", "C"), ("[C]", "C"), ("C)", "C"), ("C:", "C"), ("c", "C"), ("c.", "C"),
        ("C. back", "C"), ("c) back", "C"), ("(C) back", "C"), ("(C)back", "C"), ("C. Back.", "C"),
        ("C back", "C"),  # upper case + space: accepted because "back" is option C's own text
        ("back", "C"), ("Back.", "C"), ("  behind   the sofa ", "F"),  # the option text itself
        ("C. left", None),  # letter and text name different options
        ("C, because it is behind", None),  # words after the letter that are not its option's text could name another
        ("C left", None), ("c back", None),  # letter + space + other text / lower case: an article, not a letter
        ("H", None), ("(H)", None),  # not one of the letters
        ("e.g.", None), ("C.left", None), ("Cat", None), ("C3", None),
        ("B or C", None), ("I think C", None), ("", None), ("   ", None), ("front", None),
    ],
)
def test_parse_choice_letter(answer, expected):
    assert parse_choice_letter(answer, "ABCDEFG", CHOICES) == expected


def test_parse_choice_letter_without_choices_and_bad_lengths():
    assert parse_choice_letter("b", "ABCD") == "B"
    assert parse_choice_letter("B.", "ABCD") == "B"
    assert parse_choice_letter("B. whatever", "ABCD") is None  # without choices the text after the letter is unchecked
    assert parse_choice_letter("left", "ABCD") is None  # no choices given: option text cannot be read
    assert parse_choice_letter(None, "ABCD") is None
    with pytest.raises(ValueError, match="choices"):
        parse_choice_letter("A", "ABCD", ("x", "y"))


def test_duplicate_option_texts_are_ambiguous():
    assert parse_choice_letter("chair", "ABC", ("chair", "table", "Chair")) is None
    assert parse_choice_letter("A", "ABC", ("chair", "table", "Chair")) == "A"
    assert parse_choice_letter("A. chair", "ABC", ("chair", "table", "Chair")) == "A"


def test_letter_and_text_readings_must_agree():
    # Option B's text is "A": the answer "A" reads as letter A and as option B, so it names no single option.
    assert parse_choice_letter("A", "AB", ("left", "A")) is None
    assert parse_choice_letter("B", "AB", ("left", "A")) == "B"
    assert parse_choice_letter("A chair", "AB", ("chair", "A chair")) is None  # A + its text, or option B's text


@pytest.mark.parametrize(
    "answer, expected",
    [
        # The grammar: sign, digits with optional decimals, optional exponent, optionally one unit word.
        ("3", 3.0), ("3.5", 3.5), (" 3.5 ", 3.5), (".5", 0.5), ("4.", 4.0), ("+2", 2.0), ("-1.25", -1.25),
        ("007", 7.0), ("1e2", 100.0), ("1E2", 100.0), ("1.5E-3", 0.0015), ("1e+06", 1e6), ("2.5e-1", 0.25),
        ("3.5 m", 3.5), ("3.5m", 3.5), ("250 cm", 250.0), ("2 Meters", 2.0), ("12 square meters", 12.0),
        ("12 m2", 12.0), ("12 m\u00b2", 12.0), ("1e2 cm", 100.0),
        # Everything else is rejected, never truncated to a leading number.
        ("about 2 meters", None), ("It is 4.", None), ("1,250 cm", None), ("3,5", None), ("between 3 and 4", None),
        ("3 or 4", None), ("3 4", None), ("3-4", None), ("1/2", None), ("0x3", None), ("1_000", None),
        ("3 chairs", None), ("3.5 m.", None), ("3.5.", None), ("1e", None), ("1e2.5", None), ("e2", None),
        ("three", None), ("Twelve.", None), ("inf", None), ("-inf", None), ("nan", None), ("Infinity", None),
        ("1e309", None), ("-1e309", None), ("1e999999", None), ("1e-400", None),  # not a finite float
        ("\u0663", None), ("\uff13", None), ("\u22123", None),  # Arabic-Indic and full-width digits, a minus sign
        ("none", None), ("", None), (None, None), ("about three chairs", None),
    ],
)
def test_parse_number(answer, expected):
    assert parse_number(answer) == expected


def test_real_vsi_bench_options_parse_by_letter_and_by_text(realdata):
    """Every real multiple-choice VSI-Bench question: the right letter, the letter with its text and the exact option
    text all read as the ground truth, and a wrong letter never does."""
    table = pq.read_table(realdata / "vsi_bench" / "test-00000-of-00001.parquet", columns=["options", "ground_truth"])
    checked = 0
    for row in table.to_pylist():
        if not row["options"]:
            continue
        letters = "".join(option.split(".", 1)[0].strip() for option in row["options"])
        choices = tuple(option.split(".", 1)[1].strip() for option in row["options"])
        truth = row["ground_truth"]
        text = choices[letters.index(truth)]
        assert parse_choice_letter(truth, letters, choices) == truth
        assert parse_choice_letter(f"{truth}. {text}", letters, choices) == truth
        expected_by_text = truth if sum(c.casefold() == text.casefold() for c in choices) == 1 else None
        assert parse_choice_letter(text, letters, choices) == expected_by_text
        wrong = next(letter for letter in letters if letter != truth)
        assert parse_choice_letter(wrong, letters, choices) != truth
        checked += 1
    assert checked == 2490
