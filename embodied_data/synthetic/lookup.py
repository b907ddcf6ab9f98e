"""Option-lookup drills: lettered options of random words, and a target that names every option once, in a random
order, either by its words then its letter ("red chair left = C.") or by its letter then its words ("C. red chair left").

A policy built from random weights (the tiny models on CPU) has no copying circuit: after 900 steps of SFT on the
reasoning traces it concludes a sensible option's words but writes one letter per category, at chance. An instruct
model, the paper's start, copies such things from pretraining. These drills teach just that lookup, on words of the
benchmark's own vocabulary, before the reasoning traces (sft.lookup_steps).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

LETTERS = "ABCDEFGHIJ"
WORD = re.compile(r"[a-z]+")


def drill_vocabulary(texts: Iterable[str]) -> list[str]:
    """The distinct lower-case words of `texts`, sorted (so a seed gives the same drills on every machine)."""
    return sorted({word for text in texts for word in WORD.findall(text.lower())})


def lookup_drill(rng: random.Random, words: list[str], min_options: int = 3, max_options: int = 7,
                 max_words: int = 6) -> tuple[str, str]:
    """(options, target): `min_options`..`max_options` lines "X. w1 w2 ..." of 1..`max_words` words drawn from `words`,
    all different, and the target naming each option once in a random order, half by words then letter."""
    if not 1 <= min_options <= max_options <= len(LETTERS):
        raise ValueError(f"need 1 <= min_options <= max_options <= {len(LETTERS)}, got {min_options}, {max_options}")
    if sum(len(words) ** k for k in range(1, max_words + 1)) < max_options:
        raise ValueError(f"{len(words)} words make fewer than {max_options} different options of up to {max_words} words")
    count = rng.randint(min_options, max_options)
    texts: list[str] = []
    while len(texts) < count:
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, max_words)))
        if text not in texts:  # two options with the same words would have no single letter
            texts.append(text)
    options = "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(texts))
    lines = [f"{texts[i]} = {LETTERS[i]}." if rng.random() < 0.5 else f"{LETTERS[i]}. {texts[i]}"
             for i in rng.sample(range(count), count)]
    return options, "\n".join(lines)
