"""Option-lookup drills (embodied_data.synthetic.lookup): every option named once, with the letter it has."""

import random
import re

import pytest

from embodied_data.synthetic.lookup import LETTERS, drill_vocabulary, lookup_drill

WORDS = drill_vocabulary(["Which is the Red chair?", "I turn left.", "the plant is behind me"])


def test_vocabulary_is_sorted_distinct_lowercase_words():
    assert WORDS == sorted(set(WORDS)) and "red" in WORDS and "Red" not in WORDS and "?" not in "".join(WORDS)


@pytest.mark.parametrize("seed", range(20))
def test_the_target_names_every_option_once_with_its_own_letter(seed):
    options, target = lookup_drill(random.Random(seed), WORDS)
    letter_of = {}
    for line in options.splitlines():
        letter, text = line.split(". ", 1)
        letter_of[text] = letter
    assert 3 <= len(letter_of) <= 7 and list(letter_of.values()) == list(LETTERS[: len(letter_of)])  # texts distinct
    named = []
    for line in target.splitlines():
        by_words = re.fullmatch(r"(.+) = ([A-J])\.", line)
        letter, text = (by_words.group(2), by_words.group(1)) if by_words else line.split(". ", 1)
        assert letter_of[text] == letter, (line, options)
        named.append(letter)
    assert sorted(named) == sorted(letter_of.values())


def test_drills_differ_by_seed_and_repeat_for_a_seed():
    assert lookup_drill(random.Random(1), WORDS) == lookup_drill(random.Random(1), WORDS)
    assert len({lookup_drill(random.Random(s), WORDS) for s in range(10)}) == 10
    orders = {lookup_drill(random.Random(s), WORDS, 4, 4, 1)[1].count(" = ") for s in range(40)}
    assert len(orders) > 2  # both forms occur, in varying proportions


def test_a_vocabulary_too_small_for_distinct_options_is_refused():
    with pytest.raises(ValueError, match="fewer than 7 different options"):
        lookup_drill(random.Random(0), ["a", "b"], max_words=1)
    with pytest.raises(ValueError, match="min_options"):
        lookup_drill(random.Random(0), WORDS, min_options=5, max_options=4)
