"""learner/batch.py: completion log-probs with the shared prompts of a GRPO group run once equal the full pass's."""

from __future__ import annotations

import pytest
import torch

from learner import batch as batch_module
from learner.batch import Sample, completion_logprobs, pack

PAD = 0


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def model(request):
    """A tiny Qwen2 (the tiny policies') and a tiny Llama (SmolLM2's architecture, the real default policy)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config_class, model_class = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}[request.param]
    config = config_class(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=128, tie_word_embeddings=True, pad_token_id=PAD,
    )
    return model_class(config).train()


def _samples(prompt_lengths: list[int], group_size: int, seed: int = 1) -> list[Sample]:
    """`group_size` samples per prompt (prompts of different lengths: left padding), completions of different lengths."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for length in prompt_lengths:
        prompt = torch.randint(1, 97, (length,), generator=generator).tolist()
        for _ in range(group_size):
            size = int(torch.randint(1, 9, (1,), generator=generator))
            completion = torch.randint(1, 97, (size,), generator=generator).tolist()
            samples.append(Sample(prompt, completion, [0.0] * size, advantage=1.0))
    return samples


def _logprobs_and_grads(model, batch, full: bool):
    model.zero_grad()
    compute = batch_module._full_pass_logprobs if full else completion_logprobs
    logprobs = compute(model, batch)
    (logprobs * batch.completion_mask).sum().backward()
    return logprobs.detach(), [p.grad.clone() for p in model.parameters()]


def test_shared_prompt_pass_equals_full_pass_with_gradients(model):
    batch = pack(_samples([5, 9, 3], group_size=3), PAD)
    assert batch_module._shared_prompts(batch) is not None  # the shared path really runs
    shared, shared_grads = _logprobs_and_grads(model, batch, full=False)
    full, full_grads = _logprobs_and_grads(model, batch, full=True)
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(shared[mask], full[mask], atol=1e-5, rtol=1e-5)
    for got, want in zip(shared_grads, full_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_shared_prompt_pass_at_a_sampling_temperature_equals_the_full_pass(model):
    batch = pack(_samples([6, 4], group_size=3, seed=2), PAD)
    with torch.no_grad():
        shared = completion_logprobs(model, batch, temperature=0.7)
        full = batch_module._full_pass_logprobs(model, batch, 0.7)
        untempered = completion_logprobs(model, batch)
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(shared[mask], full[mask], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(shared[mask], untempered[mask], atol=1e-3)


def test_rows_are_matched_to_their_own_prompt(model):
    """Groups interleaved (not consecutive) still get their own prompt's keys and values."""
    samples = _samples([4, 6], group_size=2)
    batch = pack([samples[0], samples[2], samples[1], samples[3]], PAD)
    first_rows, prompt_of_row = batch_module._shared_prompts(batch)
    assert prompt_of_row.tolist()[0] == prompt_of_row.tolist()[2] != prompt_of_row.tolist()[1] == prompt_of_row.tolist()[3]
    with torch.no_grad():
        shared = completion_logprobs(model, batch)
        full = batch_module._full_pass_logprobs(model, batch)
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(shared[mask], full[mask], atol=1e-5, rtol=1e-5)


def test_one_token_completions_need_only_the_prompt_pass(model):
    prompt = [3, 4, 5]
    batch = pack([Sample(prompt, [7], [0.0], 1.0), Sample(prompt, [8], [0.0], 1.0)], PAD)
    with torch.no_grad():
        torch.testing.assert_close(completion_logprobs(model, batch), batch_module._full_pass_logprobs(model, batch), atol=1e-5, rtol=1e-5)


def test_distinct_prompts_take_the_full_pass_unchanged(model):
    batch = pack(_samples([4, 6, 5], group_size=1), PAD)
    assert batch_module._shared_prompts(batch) is None
    with torch.no_grad():
        assert torch.equal(completion_logprobs(model, batch), batch_module._full_pass_logprobs(model, batch))


def test_gradient_checkpointing_takes_the_full_pass(model, monkeypatch):
    calls = []
    monkeypatch.setattr(batch_module, "_shared_prompt_logprobs", lambda *a: calls.append(a))
    model.gradient_checkpointing_enable()
    try:
        with torch.no_grad():
            completion_logprobs(model, pack(_samples([4], group_size=2), PAD))
    finally:
        model.gradient_checkpointing_disable()
    assert not calls
