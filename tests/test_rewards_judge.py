"""The consistency judge on a real tiny Qwen2 (loaded by path), and its pool of real Ray actors: letters from the valid
set, batch == one by one == transformers' own restricted greedy decoding, timeouts and crashed replicas counted as
failures (None), never 0."""

from __future__ import annotations

import time

import pytest
import ray
import torch

from embodied_data.records import Record
from rewards.combine import RewardScorer
from rewards.config import JudgeConfig, RewardConfig, RewardStage
from rewards.judge import Judge, JudgeRequest, make_judge
from rewards.judge_pool import JudgePool

torch.set_num_threads(1)

OPTIONS = ("left", "right", "behind", "ahead", "above", "below", "front-left")
WEIGHTS = RewardStage(start=0, format=0.1, accuracy=0.7, consistency=0.2)


@pytest.fixture(scope="module")
def judge(tiny_judge) -> Judge:
    return make_judge(tiny_judge, JudgeConfig(model=tiny_judge, batch_size=3, max_think_tokens=64), device="cpu")


POOL_CFG = dict(num_replicas=2, num_cpus_per_replica=0.25, batch_size=4, timeout_s=60, max_think_tokens=64)


@pytest.fixture(scope="module")
def pool(ray_local, tiny_judge):
    """One pool of two real Judge actors for the module (actor start-up dominates these tests' time)."""
    judge_pool = JudgePool(JudgeConfig(model=tiny_judge, **POOL_CFG))
    yield judge_pool
    judge_pool.shutdown()


def test_judge_answers_a_valid_letter_and_batches_do_not_change_results(judge, judge_requests):
    requests = judge_requests(8)
    batched = judge.judge(requests)  # batch_size 3: chunks of 3, 3, 2 with left padding
    one_by_one = [judge.judge([request])[0] for request in requests]
    assert all(letter in request.letters for letter, request in zip(batched, requests))
    assert batched == one_by_one
    for together, alone in zip(judge.letter_logits(requests), [judge.letter_logits([r])[0] for r in requests]):
        assert torch.allclose(together, alone, atol=1e-4)


def test_restricted_argmax_equals_greedy_decoding_restricted_to_letters(judge, judge_requests):
    """The T -> 0 limit restricted to the option letters, checked against transformers' generate()."""
    for request in judge_requests(4):
        prompt = judge.tokenizer(judge.build_prompt(request), return_tensors="pt", add_special_tokens=False)
        allowed = [judge.letter_token_ids[letter] for letter in request.letters]
        generated = judge.model.generate(
            **prompt, max_new_tokens=1, do_sample=False, prefix_allowed_tokens_fn=lambda batch_id, ids: allowed
        )
        decoded = judge.tokenizer.decode(generated[0, prompt["input_ids"].shape[1]:])
        assert judge.judge([request]) == [decoded]


def test_prompt_holds_question_choices_and_cut_reasoning_only(judge):
    long_think = " ".join(f"step{i}" for i in range(400))
    request = JudgeRequest(question="Is the door left or right?", choices=("left", "right"), think=long_think)
    prompt = judge.build_prompt(request)
    assert "Is the door left or right?" in prompt and "A. left\nB. right" in prompt
    assert "step399" in prompt and "step0 " not in prompt  # cut to max_think_tokens, keeping the tail (the conclusion)
    cut = judge._cut_think(long_think)
    assert len(judge.tokenizer.encode(cut, add_special_tokens=False)) <= judge.cfg.max_think_tokens
    same_after_cut = JudgeRequest(question=request.question, choices=request.choices, think=cut)
    assert judge.letter_logits([request])[0].tolist() == judge.letter_logits([same_after_cut])[0].tolist()


def test_a_request_without_choices_gets_none_and_does_not_spoil_the_batch(judge, judge_requests):
    requests = judge_requests(3)
    bad = JudgeRequest(question="How far?", choices=(), think="about 2 m")
    letters = judge.judge([requests[0], bad, requests[1], requests[2]])
    assert letters[1] is None
    assert [letters[0], letters[2], letters[3]] == judge.judge(requests)


def _wait_until_dead(actor, timeout_s: float = 30.0) -> None:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        try:
            ray.get(actor.ready.remote(), timeout=5)
        except ray.exceptions.ActorDiedError:
            return
        time.sleep(0.05)
    raise AssertionError("killed actor still answers")


@pytest.mark.slow
def test_pool_spreads_batches_over_real_actors_and_matches_the_local_judge(pool, judge, judge_requests):
    requests = judge_requests(10)
    ticket = pool.submit(requests)
    assert {call.replica for call in ticket.calls} == {0, 1}
    assert max(call.end - call.begin for call in ticket.calls) <= pool.cfg.batch_size
    result = pool.collect(ticket)
    assert result.letters == judge.judge(requests)
    assert result.failures == 0 and result.failed_batches == 0 and result.latency_s > 0
    assert pool.judge([]).letters == []
    # A request the judge cannot judge is a counted failure of its own, not of its batch.
    mixed = pool.judge([requests[0], JudgeRequest(question="How far?", choices=(), think="2 m")])
    assert mixed.letters == [judge.judge(requests[:1])[0], None]
    assert mixed.failures == 1 and mixed.failed_batches == 0


@pytest.mark.slow
def test_pool_timeout_counts_failures_and_scores_none_not_zero(pool, judge, judge_requests):
    failures_before = pool.failures
    requests = judge_requests(8, think_repeats=8)
    started = time.perf_counter()
    result = pool.judge(requests, timeout_s=1e-4)  # far below one forward pass
    assert time.perf_counter() - started < 5
    assert result.letters == [None] * 8 and result.failures == 8 and result.failed_batches == 2
    assert all("timed out" in line for line in result.errors)
    assert pool.failures - failures_before == 8

    # Through the scorer, with the timeout from its config: failed judgements are None and counted, never 0.
    record = Record(id="q", video="v.mp4", question="Where is the lamp?", choices=OPTIONS[:3], answer="B",
                    category="rel_direction", scene="s", source="test")
    completions = ["<think>It was on my right.</think><answer>B</answer>"] * 3 + ["<think>x</think><answer>A</answer>"]
    scorer = RewardScorer(RewardConfig(judge=JudgeConfig(model=pool.model_path, timeout_s=1e-4)), pool)
    batch = scorer.score(completions, [record] * 4, 4, WEIGHTS)
    assert batch.judge_failures == 3 and batch.judged == 0
    assert batch.consistency == [None, None, None, 0.0]  # failures are None; the wrong answer's 0 is by definition
    assert batch.judge_errors and batch.judge_latency_s > 0
    # No correct answer of the group was judged, so the consistency term is dropped and its weight renormalised away
    # (rewards/combine.py): the wrong answer's 0 is not a consistency rate and must not pull the three down.
    assert batch.total[:3] == pytest.approx([(0.1 + 0.7) / (0.1 + 0.7)] * 3)

    # The pool is not left broken by the timeouts: the late batches are ignored, new ones succeed.
    assert pool.judge(requests[:4]).letters == judge.judge(requests[:4])


@pytest.mark.slow
def test_scorer_with_a_working_pool(pool, judge):
    record = Record(id="q", video="v.mp4", question="Where is the lamp?", choices=OPTIONS[:4], answer="C",
                    category="rel_direction", scene="s", source="test")
    thinks = ["The lamp was behind me.", "I turned around; it is behind.", "It is left.", "No idea."]
    completions = [f"<think>{t}</think>\n<answer>{a}</answer>" for t, a in zip(thinks, ["C", "behind", "A", "C"])]
    scorer = RewardScorer(RewardConfig(judge=pool.cfg), pool)
    pending = scorer.submit(completions, [record] * 4, 4, WEIGHTS)
    assert pending.targets == [0, 1, 3]  # only the correct answers go to the judge
    batch = scorer.collect(pending)
    expected = judge.judge([JudgeRequest(record.question, record.choices, thinks[i]) for i in (0, 1, 3)])
    assert batch.judged == 3 and batch.judge_failures == 0
    assert batch.consistency == [float(expected[0] == "C"), float(expected[1] == "C"), 0.0, float(expected[2] == "C")]


@pytest.mark.slow
def test_dead_replica_fails_its_batches_and_is_replaced(pool, judge, judge_requests):
    """A replica dead for good: its batches fail (None, counted, never 0), the others' succeed, and the pool
    replaces it with a fresh actor that takes work again once loaded."""
    requests = judge_requests(10)
    local = judge.judge(requests)
    failures_before, replaced_before = pool.failures, pool.replaced
    dead_actor = pool.replicas[0]
    ray.kill(dead_actor, no_restart=True)
    _wait_until_dead(dead_actor)
    ticket = pool.submit(requests)
    result = pool.collect(ticket)
    dead = [call for call in ticket.calls if call.actor is dead_actor]
    assert dead and len(dead) < len(ticket.calls)
    assert result.failed_batches == len(dead) and result.failures == sum(c.end - c.begin for c in dead)
    failed = {i for c in dead for i in range(c.begin, c.end)}
    assert result.letters == [None if i in failed else local[i] for i in range(len(requests))]
    assert any("replica 0" in line and "ActorDiedError" in line for line in result.errors)
    assert pool.replicas[0] is not dead_actor and pool.replaced == replaced_before + 1
    assert pool.failures - failures_before == result.failures
    pool.wait_ready(timeout_s=120)
    ticket = pool.submit(requests)
    assert {call.replica for call in ticket.calls} == {0, 1}
    assert pool.collect(ticket).letters == local


@pytest.mark.slow
def test_a_replacement_that_fails_to_load_is_left_out_and_the_others_take_the_work(pool, judge, tiny_judge, caplog, judge_requests):
    """(Last in the module: it leaves the shared pool with a broken replica.) A replica dies and its replacement cannot
    load the model (the folder is away meanwhile): the pool says so, does not replace it again, sends every later batch
    to the replica that works, and wait_ready no longer waits for it."""
    import logging
    import os

    requests = judge_requests(10)
    local = judge.judge(requests)
    replaced_before = pool.replaced
    away = f"{tiny_judge}.away"
    os.rename(tiny_judge, away)  # what the replacement will try to load
    try:
        caplog.set_level(logging.ERROR, logger="rewards.judge_pool")
        dead_actor = pool.replicas[1]
        ray.kill(dead_actor, no_restart=True)
        _wait_until_dead(dead_actor)
        first = pool.collect(pool.submit(requests))
        assert first.failed_batches > 0 and pool.replaced == replaced_before + 1
        deadline = time.perf_counter() + 60
        while "its replacement failed to load" not in caplog.text and time.perf_counter() < deadline:
            time.sleep(0.2)
            pool.collect(pool.submit(requests))
        assert "judge replica 1: its replacement failed to load" in caplog.text
    finally:
        os.rename(away, tiny_judge)
    ticket = pool.submit(requests)
    assert {call.replica for call in ticket.calls} == {0}
    result = pool.collect(ticket)
    assert result.failures == 0 and result.letters == local
    assert pool.replaced == replaced_before + 1  # not replaced again
    pool.wait_ready(timeout_s=30)  # returns: the broken replica is not waited for
