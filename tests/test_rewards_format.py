"""Format reward: exactly <think>...</think> then <answer>...</answer>, nothing else."""

from __future__ import annotations

import pytest

from rewards.format import format_reward


@pytest.mark.parametrize(
    "completion",
    [
        "<think>I turned left.</think><answer>A</answer>",
        "<think>I turned left.</think>\n<answer> A </answer>",
        "  \n<think>\nmulti\nline\n</think>\n\n<answer>front-left</answer>\n",
        "<think></think><answer>A</answer>",  # empty reasoning is still the format
    ],
)
def test_well_formed(completion):
    assert format_reward(completion) == 1.0


@pytest.mark.parametrize(
    "completion",
    [
        "<answer>A</answer>",  # no think
        "<think>x</think>",  # no answer
        "<think>x</think><answer></answer>",  # empty answer
        "<think>x</think><answer>  \n </answer>",
        "Sure! <think>x</think><answer>A</answer>",  # text before
        "<think>x</think><answer>A</answer> Hope this helps.",  # text after
        "<think>x</think> so <answer>A</answer>",  # text between
        "<answer>A</answer><think>x</think>",  # wrong order
        "<think>x<think>y</think></think><answer>A</answer>",  # nested think
        "<think>x</think><answer>A<answer>B</answer></answer>",  # nested answer
        "<think>x</think><answer>A</answer><answer>B</answer>",  # two answers
        "<think>x</think><think>y</think><answer>A</answer>",  # two thinks
        "<think>x <answer>B</answer></think><answer>A</answer>",  # answer tag inside think
        "<Think>x</Think><Answer>A</Answer>",  # tags are case-sensitive
        "<think>x</think><answer>A",  # cut at max_new_tokens
        "",
    ],
)
def test_malformed(completion):
    assert format_reward(completion) == 0.0
