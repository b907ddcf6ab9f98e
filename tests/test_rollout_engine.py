"""The transformers engine on a tiny random Qwen2: G completions per prompt, log-probs of the sampling distribution
(checked against a separate forward pass), seeding, and in-place weight loading."""

from __future__ import annotations

import math

import pytest
import torch

from rollout.config import SamplingConfig
from rollout.engines.hf_engine import HFEngine
from weightsync import weights_digest

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def engine(policy_pair):
    return HFEngine(policy_pair[0], generate_batch_size=5)


@pytest.fixture(scope="module")
def prompts(engine):
    tok = engine.tokenizer
    texts = ["Frame 0: Observe: a red chair", "Question: where is the blue chair? A. left B. right", "ahead"]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def _forward_logprobs(model, prompt: list[int], completion: list[int], temperature: float = 1.0, top_p: float = 1.0) -> torch.Tensor:
    """Log-probs of `completion` after `prompt` from one unpadded forward pass, under log_softmax(logits / T) cut to top-p."""
    return _nucleus_logprobs(model, prompt, completion, temperature, top_p)


def _nucleus_logprobs(model, prompt: list[int], completion: list[int], temperature: float, top_p: float) -> torch.Tensor:
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float() / temperature
    if top_p < 1.0:  # keep the smallest set of most likely tokens whose probability reaches top_p
        probs = torch.softmax(logits, dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(completion)[:, None]).squeeze(1)


def test_g_completions_per_prompt_in_order(engine, prompts):
    sampling = SamplingConfig(num_samples=4, max_new_tokens=24)
    out = engine.generate(prompts, sampling, seed=3)
    assert len(out) == len(prompts)
    eos = set(engine.eos_token_ids)
    for p, group in enumerate(out):
        assert len(group) == 4
        for c in group:
            assert c.prompt_index == p and c.prompt_token_ids == prompts[p]
            assert len(c.logprobs) == len(c.token_ids) > 0
            assert all(math.isfinite(x) and x <= 0 for x in c.logprobs)
            assert not any(t in eos for t in c.token_ids[:-1])  # nothing after the first EOS is kept
            if c.finished:
                assert c.token_ids[-1] in eos
            else:
                assert len(c.token_ids) == sampling.max_new_tokens
        assert len({tuple(c.token_ids) for c in group}) > 1  # G samples, not G copies


def test_logprobs_match_a_separate_forward_pass(engine, prompts):
    out = engine.generate(prompts, SamplingConfig(num_samples=3, max_new_tokens=16, temperature=1.0), seed=5)
    for group in out:
        for c in group:
            expected = _forward_logprobs(engine.model, c.prompt_token_ids, c.token_ids)
            assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-4), (c.logprobs, expected.tolist())


def test_logprobs_are_those_of_the_tempered_top_p_distribution(engine, prompts):
    sampling = SamplingConfig(num_samples=3, max_new_tokens=16, temperature=0.7, top_p=0.9)
    out = engine.generate(prompts, sampling, seed=6)
    for group in out:
        for c in group:
            expected = _forward_logprobs(engine.model, c.prompt_token_ids, c.token_ids, 0.7, 0.9)
            assert torch.all(torch.isfinite(expected))  # every sampled token lies inside the top-p set
            # A token whose mass-before lies within float rounding of top_p may fall on either side of the cut in a
            # batched, padded pass: there the nucleus (and so the normaliser) may be one token larger or smaller.
            narrower = _nucleus_logprobs(engine.model, c.prompt_token_ids, c.token_ids, 0.7, 0.9 - 1e-5)
            wider = _nucleus_logprobs(engine.model, c.prompt_token_ids, c.token_ids, 0.7, 0.9 + 1e-5)
            got = torch.tensor(c.logprobs)
            close = [(got - e).abs() <= 1e-4 for e in (expected, narrower, wider)]
            assert torch.all(close[0] | close[1] | close[2]), (c.logprobs, expected.tolist())


def test_sequences_that_stop_early_keep_exact_logprobs(policy_pair, prompts):
    # Half the vocabulary counts as EOS, so sequences in one batch stop at different steps: the rows that finish
    # first are padded while the others continue, and generate may run a step past the last stop.
    engine = HFEngine(policy_pair[0], generate_batch_size=6)
    engine.eos_token_ids = list(range(engine.vocab_size // 2))
    out = engine.generate(prompts, SamplingConfig(num_samples=4, max_new_tokens=12), seed=8)
    completions = [c for g in out for c in g]
    assert sum(c.finished for c in completions) >= len(completions) // 2
    assert len({len(c.token_ids) for c in completions if c.finished}) > 1
    for c in completions:
        if c.finished:
            assert c.token_ids[-1] < engine.vocab_size // 2 and all(t >= engine.vocab_size // 2 for t in c.token_ids[:-1])
        expected = _forward_logprobs(engine.model, c.prompt_token_ids, c.token_ids)
        assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-4)


def test_min_new_tokens_holds_eos_back_until_then(policy_pair, prompts):
    # Half the vocabulary counts as EOS: without min_new_tokens most completions stop within a few tokens; with it,
    # none stops before 7 tokens and the EOS tokens have no probability at the masked steps.
    engine = HFEngine(policy_pair[0], generate_batch_size=6)
    engine.eos_token_ids = list(range(engine.vocab_size // 2))
    free = [c for g in engine.generate(prompts, SamplingConfig(num_samples=4, max_new_tokens=12), seed=8) for c in g]
    assert any(len(c.token_ids) < 7 for c in free)
    held = [c for g in engine.generate(prompts, SamplingConfig(num_samples=4, max_new_tokens=12, min_new_tokens=7), seed=8) for c in g]
    assert all(len(c.token_ids) >= 7 and all(t >= engine.vocab_size // 2 for t in c.token_ids[:7]) for c in held)
    assert any(c.finished for c in held)  # EOS is free again after the 7th token
    pinned = [c for g in engine.generate(prompts, SamplingConfig(num_samples=2, max_new_tokens=5, min_new_tokens=5), seed=8) for c in g]
    assert all(len(c.token_ids) == 5 and not c.finished for c in pinned)
    with pytest.raises(ValueError, match="min_new_tokens"):
        engine.generate(prompts, SamplingConfig(num_samples=1, max_new_tokens=5, min_new_tokens=6), seed=8)


def test_same_seed_same_completions(engine, prompts):
    sampling = SamplingConfig(num_samples=3, max_new_tokens=16)
    first = engine.generate(prompts, sampling, seed=11)
    again = engine.generate(prompts, sampling, seed=11)
    other = engine.generate(prompts, sampling, seed=12)
    tokens = lambda out: [[c.token_ids for c in g] for g in out]  # noqa: E731
    assert tokens(first) == tokens(again)
    assert [[c.logprobs for c in g] for g in first] == [[c.logprobs for c in g] for g in again]
    assert tokens(first) != tokens(other)


def test_a_prompts_completions_depend_on_its_seed_not_on_its_batch(engine, policy_pair, prompts):
    """Each sequence draws from its own seeded stream: a prompt sampled alone, in another order or in batches of
    another size gets the same tokens (log-probs equal up to the batch shape's rounding)."""
    from rollout.engines.base import prompt_seeds

    sampling = SamplingConfig(num_samples=3, max_new_tokens=16, temperature=0.9)
    seeds = prompt_seeds(31, len(prompts))
    together = engine.generate(prompts, sampling, seeds)
    alone = [engine.generate([p], sampling, [s])[0] for p, s in zip(prompts, seeds)]
    reversed_order = engine.generate(prompts[::-1], sampling, seeds[::-1])[::-1]
    other_batches = HFEngine(policy_pair[0], generate_batch_size=2).generate(prompts, sampling, seeds)
    for out in (alone, reversed_order, other_batches):
        assert [[c.token_ids for c in g] for g in out] == [[c.token_ids for c in g] for g in together]
        for group, want in zip(out, together):
            for c, w in zip(group, want):
                assert torch.allclose(torch.tensor(c.logprobs), torch.tensor(w.logprobs), atol=1e-4)
    # The G samples of one prompt are distinct streams; one prompt under one seed gets the same samples in any row.
    assert len({tuple(c.token_ids) for c in together[0]}) > 1
    twice = engine.generate([prompts[0], prompts[0]], sampling, seeds[:1] * 2)
    assert [c.token_ids for c in twice[0]] == [c.token_ids for c in twice[1]]
    with pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        engine.generate(prompts, sampling, seeds[:2])


def test_greedy_decoding_at_temperature_zero(engine, prompts):
    out = engine.generate(prompts[:1], SamplingConfig(num_samples=3, max_new_tokens=12, temperature=0.0), seed=0)
    assert len({tuple(c.token_ids) for c in out[0]}) == 1
    c = out[0][0]
    logprobs = _forward_logprobs(engine.model, c.prompt_token_ids, c.token_ids)
    assert torch.allclose(torch.tensor(c.logprobs), logprobs, atol=1e-4)
    with torch.no_grad():  # each token is the argmax of its step
        logits = engine.model(torch.tensor([c.prompt_token_ids + c.token_ids])).logits[0, len(c.prompt_token_ids) - 1 : -1]
    assert logits.argmax(-1).tolist() == c.token_ids


def test_bad_prompts_are_refused(engine):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        engine.generate([[1, 2], []], SamplingConfig(num_samples=1, max_new_tokens=2), seed=0)
    with pytest.raises(ValueError, match="prompt 0 holds token ids outside the vocabulary"):
        engine.generate([[engine.vocab_size + 5]], SamplingConfig(num_samples=1, max_new_tokens=2), seed=0)


def test_load_weights_makes_it_the_source_model(policy_pair, prompts):
    from transformers import AutoModelForCausalLM

    target = HFEngine(policy_pair[0], generate_batch_size=5)
    source = AutoModelForCausalLM.from_pretrained(policy_pair[1], dtype=torch.float32)
    reference = HFEngine(policy_pair[1], generate_batch_size=5)
    sampling = SamplingConfig(num_samples=2, max_new_tokens=16)
    before = target.generate(prompts, sampling, seed=21)

    target.load_weights(source.named_parameters())

    assert weights_digest(target.named_weights()) == weights_digest(source.named_parameters())
    assert target.model.lm_head.weight.data_ptr() == target.model.model.embed_tokens.weight.data_ptr()  # still tied
    after = target.generate(prompts, sampling, seed=21)
    expected = reference.generate(prompts, sampling, seed=21)
    assert [[c.token_ids for c in g] for g in after] != [[c.token_ids for c in g] for g in before]
    assert [[c.token_ids for c in g] for g in after] == [[c.token_ids for c in g] for g in expected]


def test_load_weights_through_the_tied_alias_and_refusals(policy_pair):
    engine = HFEngine(policy_pair[0])
    new_embedding = torch.randn_like(engine.model.lm_head.weight)
    engine.load_weights([("lm_head.weight", new_embedding)])
    assert torch.equal(engine.model.model.embed_tokens.weight, new_embedding)
    with pytest.raises(KeyError, match="no parameter named 'model.layers.9.mlp.up_proj.weight'"):
        engine.load_weights([("model.layers.9.mlp.up_proj.weight", torch.zeros(1))])
    with pytest.raises(ValueError, match="weight model.norm.weight: shape"):
        engine.load_weights([("model.norm.weight", torch.zeros(3))])
