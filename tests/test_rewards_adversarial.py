"""Answer parsing cannot be gamed: adversarial completions (a table of the known exploits and more) and property tests
that no completion built from letters, option texts, tags, separators and numbers scores more than the canonical gold
completion, that one naming two different options or two different numbers scores 0, and that a completion can be right
for at most one ground truth."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embodied_data.records import Record
from rewards.accuracy import accuracy_reward
from rewards.answer import extract_answer, parse_number
from rewards.format import format_reward

# No example database: it would be written into the working tree (.hypothesis/), which is shared.
PROPERTY = settings(max_examples=400, deadline=None, database=None)

LETTERS = "ABCD"
# No option text is a word of another (or a letter), so naming an option in words is unambiguous in the checks below.
OPTIONS = ("left", "right", "back", "ahead")


def _mc(answer: str) -> Record:
    return Record(id="m", video="v.mp4", question="Where is the door?", choices=OPTIONS, answer=answer,
                  category="rel_direction", scene="s", source="test")


def _num(answer: float) -> Record:
    return Record(id="n", video="v.mp4", question="How far is the door (m)?", choices=(), answer=answer,
                  category="abs_distance", scene="s", source="test")


def _canonical(record: Record) -> str:
    """The gold answer in the form the prompt asks for and the SFT traces use."""
    answer = repr(float(record.answer)) if record.is_numeric else record.answer
    return f"<think> I turned left and the door stayed behind me. </think>\n<answer> {answer} </answer>"


def _wrap(answer: str) -> str:
    return f"<think>x</think><answer>{answer}</answer>"


# --- the table ------------------------------------------------------------------------------------------------------

# Answers that name more than one option (or none), inside a well-formed completion: 0 whatever the gold letter.
HEDGES = [
    "A, B, C, D", "A,B,C,D", "A B C D", "ABCD", "A; B", "A: or B", "A or B", "A/B", "A|B", "A & B", "A and B", "A-D",
    "A, B", "A. B.", "A) B)", "(A) or (B)", "(A)(B)", "[A][B]", "(A, B)", "A (or B)", "A\nB", "A.B", "A, then B",
    "A. left, B. right", "A. left B. right", "A. left\nB. right", "A. left or B. right", "A. right",  # A's letter, B's text
    "left or right", "left, right", "left right", "left/right", "all of them", "any", "none", "A-B-C-D",
    "either A or B", "not A", "I think A", "The answer is A", "Answer: A", "A, because the door is on my left",
    "e.g.", "E", "H", "(H)", "\uff21", "\u0410",  # E/H are not options; full-width A and Cyrillic A are not letters
]


@pytest.mark.parametrize("answer", HEDGES)
def test_an_answer_naming_several_options_or_none_scores_zero_for_every_gold(answer):
    completion = _wrap(answer)
    assert [accuracy_reward(completion, _mc(gold)) for gold in LETTERS] == [0.0] * 4


# Where the answer is: only the one <answer> after </think>; (completion, the letter it answers, or None).
PLACEMENT = [
    ("<think>maybe <answer>A</answer></think><answer>B</answer>", "B"),  # an answer inside the thinking does not count
    ("<think>maybe <answer>A</answer></think>\n<answer>B</answer>", "B"),
    ("<think><answer>A</answer><answer>B</answer><answer>C</answer></think><answer>D</answer>", "D"),
    ("<think>maybe <answer>A</answer></think>", None),
    ("<think>maybe <answer>A</answer>", None),  # the thinking never closed
    ("<think>x</think><answer>A</answer><answer>B</answer>", None),  # two final answers
    ("<think>x</think><answer>A</answer>\n<answer>A</answer>", None),  # even the same one twice
    ("<think>x</think><answer>A<answer>B</answer>", None),
    ("<think>x</think><answer>A</answer></answer>", None),
    ("<think>x</think><answer>A</answer><think>on second thought</think><answer>B</answer>", "B"),  # after the last
    ("<think>x</think><answer>A</answer><think>on second thought", None),
    ("<think>x</think>A", None),  # no tags: nothing outside <answer> is read
    ("<think>x</think>A <answer></answer>", None),
    ("<think>x</think><answer>B</answer> but maybe A", "B"),  # text after the answer is never read
    ("<think>x</think><ANSWER>A</ANSWER>", None),  # tags are case-sensitive
    ("<think>x</think><answer >A</answer>", None),
    ("<answer>A</answer>", "A"),  # no reasoning at all: format 0, but the answer is final
    ("<think>x</think><answer>\n  (C)  \n</answer>", "C"),
]


@pytest.mark.parametrize("completion, letter", PLACEMENT)
def test_only_the_final_answer_after_the_thinking_counts(completion, letter):
    expected = [1.0 if gold == letter else 0.0 for gold in LETTERS]
    assert [accuracy_reward(completion, _mc(gold)) for gold in LETTERS] == expected


# Legit forms: the letter, its marks, its own option text; right for C only.
LEGIT = ["C", " C ", "C.", "C)", "C:", "(C)", "[C]", "c", "c.", "(c)", "C. back", "C) back", "(C) back", "C back",
         "c. back", "C. Back.", "back", "Back", "  back  "]


@pytest.mark.parametrize("answer", LEGIT)
def test_legit_answers_still_score(answer):
    assert [accuracy_reward(_wrap(answer), _mc(gold)) for gold in LETTERS] == [0.0, 0.0, 1.0, 0.0]
    assert format_reward(_wrap(answer)) == 1.0


# Numbers: (answer text, ground truth, accuracy). Rejected forms score 0 even where a truncation would have hit.
NUMBERS = [
    ("1e309", 1.0, 0.0), ("1e-5", 1.0, 0.0), ("1e999999", 1.0, 0.0), ("-1e309", -1.0, 0.0),  # were read as 1
    ("1e2", 100.0, 1.0), ("1E2", 100.0, 1.0), ("1.5E-3", 0.0015, 1.0), ("1e+02", 100.0, 1.0),  # 1e2 was 1
    ("0x3", 3.0, 0.0), ("0x3", 0.0, 0.0), ("1_000", 1.0, 0.0), ("1_000", 1000.0, 0.0), ("3,5", 3.0, 0.0),
    ("3,5", 3.5, 0.0), ("1,000", 1000.0, 0.0), ("1/2", 1.0, 0.0), ("1/2", 0.5, 0.0),
    ("1 or 2", 1.0, 0.0), ("1-2", 1.0, 0.0), ("1 to 2", 1.0, 0.0), ("between 1 and 2", 1.0, 0.0), ("1, 2, 3", 1.0, 0.0),
    ("1 2", 1.0, 0.0), ("1 m or 2 m", 1.0, 0.0), ("~1", 1.0, 0.0), ("about 1", 1.0, 0.0), ("1?", 1.0, 0.0),
    ("1e1e1", 10.0, 0.0), ("1..2", 1.0, 0.0), ("1.2.3", 1.2, 0.0), ("--1", 1.0, 0.0), ("+-1", -1.0, 0.0),
    ("inf", 1.0, 0.0), ("-inf", -1.0, 0.0), ("Infinity", 1.0, 0.0), ("nan", 1.0, 0.0), ("NaN", 0.0, 0.0),
    ("1e-400", 0.0, 0.0),  # underflows to 0 but says otherwise
    ("one", 1.0, 0.0), ("1 chairs", 1.0, 0.0), ("1 e", 1.0, 0.0), ("\u0661", 1.0, 0.0),  # Arabic-Indic one
    ("1", 1.0, 1.0), ("1.0", 1.0, 1.0), ("1.", 1.0, 1.0), ("+1", 1.0, 1.0), ("1 m", 1.0, 1.0), ("1m", 1.0, 1.0),
    ("1e2 cm", 100.0, 1.0), ("0", 0.0, 1.0), ("-0", 0.0, 1.0), ("1.23 meters", 1.0, 0.6),
]


@pytest.mark.parametrize("answer, gold, expected", NUMBERS)
def test_numbers_follow_one_grammar(answer, gold, expected):
    assert accuracy_reward(_wrap(answer), _num(gold)) == pytest.approx(expected)


def test_a_number_inside_the_thinking_does_not_count():
    completion = "<think>it is <answer>1</answer></think><answer>7</answer>"
    assert accuracy_reward(completion, _num(1.0)) == 0.0
    assert accuracy_reward(completion, _num(7.0)) == 1.0


# --- properties -----------------------------------------------------------------------------------------------------

TAG_FRAGMENTS = ["<think>", "</think>", "<answer>", "</answer>"]
SEPARATORS = [" ", ", ", ",", "; ", ": ", ". ", ".", " or ", " and ", "/", "|", "-", "\n", "(", ")", "[", "]", "?", ""]
WORDS = ["the door", "I think", "maybe", "answer", "is", "e.g.", "a", "option", "not"]
LETTER_FRAGMENTS = list(LETTERS) + list(LETTERS.lower()) + ["E", "H"]
NUMBER_FRAGMENTS = ["1", "2", "2.5", ".5", "4.", "-1", "+3", "100", "1e2", "1E-2", "1e309", "1e-400", "nan", "inf",
                    "0x3", "1_000", "3,5", "1/2", "007", "1e", "e5", "1000"]
UNITS = ["m", "cm", "meters", "square meters", "chairs"]

mc_fragment = st.sampled_from(LETTER_FRAGMENTS + list(OPTIONS) + SEPARATORS + WORDS + TAG_FRAGMENTS)
num_fragment = st.sampled_from(NUMBER_FRAGMENTS + UNITS + SEPARATORS + WORDS + TAG_FRAGMENTS)


def _completions(fragment: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Free joins of fragments, and (more often well-formed) completions whose think and answer are such joins."""
    text = st.lists(fragment, max_size=10).map("".join)
    structured = st.tuples(st.sampled_from(["", " ", "Sure. "]), text, st.sampled_from(["\n", "", " so "]), text,
                           st.sampled_from(["", "\n", " ok"])).map(
        lambda p: f"{p[0]}<think>{p[1]}</think>{p[2]}<answer>{p[3]}</answer>{p[4]}")
    return st.one_of(text, structured)


def _final_region(completion: str) -> str:
    """Independent of the parser: everything from the first <answer> to the last </answer> after the last </think> (the
    whole completion without a </think>), so a second answer pair falls inside it; "" if there is no such span."""
    after = completion.rsplit("</think>", 1)[-1]
    begin, end = after.find("<answer>"), after.rfind("</answer>")
    return after[begin + len("<answer>"):end] if 0 <= begin < end else ""


def _named_letters(text: str) -> set[str]:
    """Options `text` names: a standalone letter in either case, or an option's text as a whole word."""
    named = {m.upper() for m in re.findall(r"(?<![A-Za-z0-9])[A-Da-d](?![A-Za-z0-9])", text)}
    named |= {letter for letter, option in zip(LETTERS, OPTIONS) if re.search(rf"(?<![A-Za-z]){option}(?![A-Za-z])", text, re.I)}
    return named


def _named_values(text: str) -> set[float]:
    return {float(token) for token in re.findall(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", text)}


@PROPERTY
@given(_completions(mc_fragment))
def test_no_letter_completion_beats_the_canonical_gold(completion):
    scores = []
    for gold in LETTERS:
        record = _mc(gold)
        canonical = _canonical(record)
        accuracy, best = accuracy_reward(completion, record), accuracy_reward(canonical, record)
        assert best == 1.0 and format_reward(canonical) == 1.0
        assert accuracy <= best
        assert format_reward(completion) + accuracy <= format_reward(canonical) + best
        scores.append(accuracy)
    assert sum(scores) <= 1.0  # right for at most one gold letter: listing options cannot hedge
    if len(_named_letters(_final_region(completion))) >= 2:
        assert scores == [0.0] * 4, "a completion naming two different options scored"


@PROPERTY
@given(_completions(num_fragment), st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 100.0, 1000.0, -1.0]))
def test_no_number_completion_beats_the_canonical_gold(completion, gold):
    record = _num(gold)
    canonical = _canonical(record)
    accuracy, best = accuracy_reward(completion, record), accuracy_reward(canonical, record)
    assert best == 1.0 and format_reward(canonical) == 1.0
    assert 0.0 <= accuracy <= best
    assert format_reward(completion) + accuracy <= format_reward(canonical) + best
    if len(_named_values(_final_region(completion))) >= 2:
        assert accuracy == 0.0, "a completion naming two different numbers scored"


@PROPERTY
@given(_completions(mc_fragment))
def test_well_formed_means_one_final_answer(completion):
    if format_reward(completion) == 1.0:
        inside = completion.split("<answer>", 1)[1].split("</answer>", 1)[0].strip()
        assert extract_answer(completion) == inside


@PROPERTY
@given(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(["{!r}", "{:e}", "{:.3E}", "{:g}", "{:f}"]),
       st.sampled_from(["", " m", "cm", " meters"]))
def test_every_finite_number_written_plainly_parses_to_its_value(value, spec, unit):
    text = spec.format(value)
    written = float(text)
    if not math.isfinite(written):  # "{:.3E}" of a value near the float maximum rounds up past it: rejected
        assert parse_number(text + unit) is None
        return
    assert parse_number(text + unit) == written
    assert accuracy_reward(_wrap(text + unit), _num(written)) == 1.0
