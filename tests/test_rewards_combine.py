"""Combining the rewards: weighted totals, consistency only on correct answers, and a failed judgement excluded from
its group's advantage (counted, never scored 0)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embodied_data.records import Record
from rewards.combine import RewardScorer, accuracy_by_category, score_group_batch
from rewards.config import RewardConfig, RewardStage

WEIGHTS = RewardStage(start=0, format=0.1, accuracy=0.7, consistency=0.2)


def _mc(record_id: str = "m1", answer: str = "B") -> Record:
    return Record(id=record_id, video="v.mp4", question="Is the lamp left, right or behind me?",
                  choices=("left", "right", "behind"), answer=answer, category="rel_direction", scene="s", source="test")


def _numeric(record_id: str = "n1", answer: float = 2.0) -> Record:
    return Record(id=record_id, video="v.mp4", question="How far is the lamp (m)?", choices=(), answer=answer,
                  category="abs_distance", scene="s", source="test")


def _completion(answer: str, think: str = "The lamp stayed on my right.", well_formed: bool = True) -> str:
    text = f"<think>{think}</think>\n<answer>{answer}</answer>"
    return text if well_formed else "Sure. " + text


def test_totals_and_consistency_only_on_correct_answers():
    completions = [_completion("B"), _completion("B"), _completion("A"), _completion("B", well_formed=False)]
    judge = ["B", "C", "A", "B"]  # sample 2 is wrong: its judge letter must be ignored
    batch = score_group_batch(completions, [_mc()] * 4, 4, WEIGHTS, judge)
    assert batch.format == [1.0, 1.0, 1.0, 0.0]
    assert batch.accuracy == [1.0, 1.0, 0.0, 1.0]
    assert batch.consistency == [1.0, 0.0, 0.0, 1.0]
    assert batch.judged == 3 and batch.judge_failures == 0
    expected = [0.1 * f + 0.7 * a + 0.2 * c for f, a, c in zip(batch.format, batch.accuracy, batch.consistency)]
    assert batch.total == pytest.approx(expected)


def test_correct_answer_without_reasoning_gets_no_consistency_and_no_judge_call():
    completions = ["<answer>B</answer>", _completion("B", think="  ")]
    batch = score_group_batch(completions, [_mc()] * 2, 2, WEIGHTS, [None, None])
    assert batch.accuracy == [1.0, 1.0]
    assert batch.consistency == [0.0, 0.0]
    assert batch.judge_failures == 0 and batch.judged == 0


def test_failed_judgement_takes_the_rate_measured_on_the_groups_judged_correct_answers():
    group = 6
    completions = [
        _completion("B"),  # correct, judge agrees
        _completion("B"),  # correct, judge disagrees
        _completion("B"),  # correct, judgement FAILED
        _completion("A"),  # wrong: consistency 0 by definition, not a measurement
        _completion("B", well_formed=False),  # correct, bad format, judge agrees
        _completion("C"),  # wrong
    ]
    judge = ["B", "A", None, "A", "B", "C"]
    records = [_mc()] * group + [_mc("m2")] * group
    # A second group, identical but for sample 2's judgement succeeding: failures are handled per group.
    batch = score_group_batch(completions * 2, records, group, WEIGHTS, judge + ["B", "A", "B", "A", "B", "C"])
    assert batch.judge_failures == 1 and batch.judge_failed[2] and not any(batch.judge_failed[group:])
    assert batch.judged == 3 + 4
    assert batch.consistency[2] is None  # counted as failed, never 0

    # Judged correct answers 0, 1, 4 measured 1, 0, 1: the failed one gets 2/3, not the 2/5 that averaging in the
    # wrong answers' zeros would give.
    assert batch.consistency_used[2] == pytest.approx(2 / 3)
    assert batch.total[2] == pytest.approx(0.1 + 0.7 + 0.2 * 2 / 3)
    plain = [0.1 * f + 0.7 * a + 0.2 * (c or 0.0) for f, a, c in zip(batch.format, batch.accuracy, batch.consistency)]
    assert [t for i, t in enumerate(batch.total) if i != 2] == pytest.approx(plain[:2] + plain[3:])


def test_group_with_every_judgement_failed_is_scored_without_the_consistency_term():
    completions = ([_completion("B", think=f"step {i}") for i in range(3)] + [_completion("B", well_formed=False)]
                   + [_completion("A"), "<answer>B</answer>"])  # a wrong answer, a correct one without reasoning
    batch = score_group_batch(completions, [_mc()] * 6, 6, WEIGHTS, [None] * 6)
    assert batch.judge_failures == 4 and batch.judged == 0
    assert batch.consistency == [None] * 4 + [0.0, 0.0]
    # The failed ones: the consistency weight renormalised onto format and accuracy (0.2 spread as 0.1 : 0.7) ...
    renormalised = RewardStage(0, WEIGHTS.format / 0.8, WEIGHTS.accuracy / 0.8, 0.0)
    as_if_removed = score_group_batch(completions, [_mc()] * 6, 6, renormalised, None)
    assert batch.total[:4] == pytest.approx(as_if_removed.total[:4]) and batch.total[:4] == pytest.approx([1, 1, 1, 0.875])
    # ... the others as they are.
    assert batch.total[4:] == pytest.approx([0.1, 0.7])  # wrong; correct but no reasoning (format 0, consistency 0)
    assert batch.total == pytest.approx(
        [0.1 * f + 0.7 * a + 0.2 * c for f, a, c in zip(batch.format, batch.accuracy, batch.consistency_used)])


def test_consistency_only_stage_has_nothing_to_renormalise_onto():
    stage = RewardStage(0, 0.0, 0.0, 1.0)
    batch = score_group_batch([_completion("B"), _completion("A")], [_mc()] * 2, 2, stage, [None, "A"])
    assert batch.total == [1.0, 0.0]


def test_an_outage_of_every_judgement_does_not_drag_reward_total_down():
    """The issue's outage: with every judgement failing, reward/total fell from the judged value towards the
    format and accuracy part alone, the imputed consistency being the wrong answers' zeros."""
    completions = [_completion("B"), _completion("B"), _completion("A"), _completion("C")] * 2
    records = [_mc("m1")] * 4 + [_mc("m2")] * 4
    judged = score_group_batch(completions, records, 4, WEIGHTS, ["B", "B", "A", "C"] * 2)
    outage = score_group_batch(completions, records, 4, WEIGHTS, [None] * 8)
    # The judge agreed with every correct answer; the outage scores them as if there were no consistency term,
    # which for a well-formed correct answer is the same full marks.
    assert judged.metrics()["reward/total"] == pytest.approx(outage.metrics()["reward/total"]) == pytest.approx(0.55)
    assert outage.metrics()["reward/judge_failures"] == 4 and outage.metrics()["reward/judged"] == 0


# Sample kinds for the outage properties: (completion, the judge's letter when the judgement succeeds).
KINDS = {
    "agree": (_completion("B"), "B"),  # correct, consistent
    "disagree": (_completion("B"), "A"),  # correct, inconsistent
    "agree_bad_format": (_completion("B", well_formed=False), "B"),
    "disagree_bad_format": (_completion("B", well_formed=False), "C"),
    "wrong": (_completion("A"), "A"),  # consistency 0 by definition, never judged
    "no_think": ("<answer>B</answer>", "B"),  # correct without reasoning: 0 by definition, never judged
}
JUDGED_KINDS = ("agree", "disagree", "agree_bad_format", "disagree_bad_format")
STAGES = [WEIGHTS, RewardStage(0, 0.3, 0.5, 0.2), RewardStage(0, 0.0, 0.5, 0.5)]
PROPERTY = settings(max_examples=200, deadline=None, database=None)  # no example database in the shared tree


def _score(kinds, group_size, weights, lost=None):
    """Scores one sample per kind, G = group_size per record; `lost[i]` makes sample i's judgement fail."""
    completions = [KINDS[kind][0] for kind in kinds]
    records = [_mc(f"m{i // group_size}") for i in range(len(kinds))]
    letters = [None if lost and lost[i] else KINDS[kind][1] for i, kind in enumerate(kinds)]
    return score_group_batch(completions, records, group_size, weights, letters), completions, records


@st.composite
def _outages(draw):
    group_size, groups = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    n = group_size * groups
    kinds = draw(st.lists(st.sampled_from(sorted(KINDS)), min_size=n, max_size=n))
    lost = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return kinds, group_size, lost, draw(st.sampled_from(STAGES))


@PROPERTY
@given(_outages())
def test_an_outage_changes_reward_total_only_as_removing_those_judgements_does(case):
    """Reference, built from the fully judged batch: a removed judgement's sample takes the consistency rate of the
    group's correct answers that are still judged; with none left, its total is the one the stage gives without a
    consistency term (weights renormalised, scored by the path that never reads the judge); every other total stays."""
    kinds, group_size, lost, weights = case
    full, completions, records = _score(kinds, group_size, weights)
    outage, _, _ = _score(kinds, group_size, weights, lost)
    removed = [lost[i] and kind in JUDGED_KINDS for i, kind in enumerate(kinds)]
    other, whole = weights.format + weights.accuracy, weights.format + weights.accuracy + weights.consistency
    renormalised = RewardStage(0, weights.format * whole / other, weights.accuracy * whole / other, 0.0)
    without_term = score_group_batch(completions, records, group_size, renormalised, None)
    expected = list(full.total)
    for begin in range(0, len(kinds), group_size):
        group = range(begin, begin + group_size)
        still_judged = [full.consistency[i] for i in group if kinds[i] in JUDGED_KINDS and not removed[i]]
        for i in (i for i in group if removed[i]):
            if still_judged:
                rate = sum(still_judged) / len(still_judged)
                expected[i] = weights.format * full.format[i] + weights.accuracy * full.accuracy[i] + weights.consistency * rate
            else:
                expected[i] = without_term.total[i]
        if still_judged:  # the group's consistency rate over its correct answers is the measured one
            needing = [outage.consistency_used[i] for i in group if kinds[i] in JUDGED_KINDS]
            assert sum(needing) / len(needing) == pytest.approx(sum(still_judged) / len(still_judged))
    assert outage.total == pytest.approx(expected, abs=1e-12)
    assert outage.metrics()["reward/total"] == pytest.approx(sum(expected) / len(expected), abs=1e-12)
    assert outage.judge_failures == sum(removed)
    assert outage.judged == sum(kind in JUDGED_KINDS for kind in kinds) - sum(removed)


@PROPERTY
@given(st.lists(st.sampled_from(JUDGED_KINDS), min_size=1, max_size=3),
       st.lists(st.sampled_from(["wrong", "no_think"]), max_size=3), st.randoms(use_true_random=False),
       st.sampled_from(STAGES))
def test_losing_judgements_like_the_judged_ones_changes_nothing(pattern, unjudged, rng, weights):
    """A group holds the judged pattern twice; losing the second copy's judgements loses no information, so neither
    reward/total nor the group's mean reward may move (averaging in the 0s of wrong or unreasoned answers would)."""
    kinds = pattern + pattern + unjudged
    lost = [False] * len(pattern) + [True] * len(pattern) + [False] * len(unjudged)
    order = list(range(len(kinds)))
    rng.shuffle(order)
    kinds, lost = [kinds[i] for i in order], [lost[i] for i in order]
    full, _, _ = _score(kinds, len(kinds), weights)
    outage, _, _ = _score(kinds, len(kinds), weights, lost)
    assert outage.judge_failures == len(pattern)
    assert outage.metrics()["reward/total"] == pytest.approx(full.metrics()["reward/total"], abs=1e-12)


def test_numeric_questions_have_no_consistency_term():
    completions = [_completion("2"), _completion("2.46 m"), _completion("far"), "<answer>2</answer>"]
    batch = score_group_batch(completions, [_numeric()] * 4, 4, WEIGHTS, None)  # no judge needed, none run
    assert batch.consistency == [None] * 4 and batch.judge_failures == 0
    assert batch.accuracy == pytest.approx([1.0, 0.6, 0.0, 1.0])
    assert batch.total == pytest.approx([0.1 * f + 0.7 * a for f, a in zip(batch.format, batch.accuracy)])


def test_zero_consistency_weight_needs_no_judge():
    stage = RewardStage(0, 0.7, 0.3, 0.0)
    completions = [_completion("B"), _completion("A")]
    batch = score_group_batch(completions, [_mc()] * 2, 2, stage, None)
    assert batch.consistency == [None, None] and batch.judged == 0
    assert batch.total == pytest.approx([1.0, 0.7])
    scored = RewardScorer(RewardConfig(stages=[stage]), pool=None).score(completions, [_mc()] * 2, 2, stage)
    assert scored.total == pytest.approx(batch.total)


def test_bad_batches_fail_clearly():
    with pytest.raises(ValueError, match="mixes records"):
        score_group_batch([_completion("B")] * 2, [_mc("a"), _mc("b")], 2, WEIGHTS, [None, None])
    with pytest.raises(ValueError, match="groups of 2"):
        score_group_batch([_completion("B")] * 3, [_mc()] * 3, 2, WEIGHTS, [None] * 3)
    with pytest.raises(ValueError, match="3 completions but 2 records"):
        score_group_batch([_completion("B")] * 3, [_mc()] * 2, 1, WEIGHTS, None)
    with pytest.raises(ValueError, match="1 judge letters"):
        score_group_batch([_completion("B")] * 2, [_mc()] * 2, 2, WEIGHTS, ["B"])
    with pytest.raises(ValueError, match="record m1: consistency weight"):
        score_group_batch([_completion("B")] * 2, [_mc()] * 2, 2, WEIGHTS, None)
    with pytest.raises(ValueError, match="no judge pool"):
        RewardScorer(RewardConfig(), pool=None).score([_completion("B")], [_mc()], 1, WEIGHTS)


def test_metrics():
    batch = score_group_batch([_completion("B"), _completion("B")], [_mc()] * 2, 2, WEIGHTS, ["B", None])
    metrics = batch.metrics()
    assert metrics["reward/judge_failures"] == 1.0 and metrics["reward/judged"] == 1.0
    assert metrics["reward/judge_failure_rate"] == 0.5
    assert metrics["reward/consistency"] == 1.0  # the mean of known values only


def test_accuracy_by_category():
    metrics = accuracy_by_category([1.0, 0.0, 0.5, 0.25], ["counting", "counting", "a/b", "route"])
    assert metrics == {"reward/accuracy/a_b": 0.5, "reward/accuracy/counting": 0.5, "reward/accuracy/route": 0.25}
    with pytest.raises(ValueError, match="3 accuracies but 2 categories"):
        accuracy_by_category([1.0, 0.0, 1.0], ["x", "y"])
