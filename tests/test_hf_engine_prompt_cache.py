"""rollout/engines/hf_engine.py: each distinct prompt of a chunk is prefilled once (its G samples share it), and the
completions are those of generate() prefilling every row itself: the same tokens, log-probs within float rounding."""

from __future__ import annotations

import pytest
import torch

from cluster.tiny_models import build_tiny_causal_lm, train_tokenizer
from rollout.config import SamplingConfig
from rollout.engines.hf_engine import HFEngine

TEXTS = [f"Frame {i}: the {c} chair is {s} of you, the lamp ahead." for i in range(20) for c in ("red", "blue")
         for s in ("left", "right")]


def _tiny_llama(tokenizer_dir: str, out_dir) -> str:
    """A tiny random-weight Llama (SmolLM2's architecture, the real default policy) with the same tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"))
    LlamaForCausalLM(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return str(out_dir)


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def engine(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_prompt_cache")
    tokenizer_dir = train_tokenizer(TEXTS, root / "tokenizer", vocab_size=512)
    if request.param == "llama":
        return HFEngine(_tiny_llama(tokenizer_dir, root / "llama"), generate_batch_size=8)
    return HFEngine(build_tiny_causal_lm(tokenizer_dir, root / "policy", seed=0), generate_batch_size=8)


def test_distinct_prompts_prefilled_once_and_completions_unchanged(engine, monkeypatch):
    prompts = [engine.tokenizer(TEXTS[i])["input_ids"] for i in (0, 5, 9)]  # different lengths: left padding
    sampling = SamplingConfig(num_samples=4, temperature=1.0, top_p=1.0, max_new_tokens=6)
    prefill_rows = []
    real_cache = engine._prompt_cache

    def spy(input_ids, attention_mask, max_new_tokens):
        cache = real_cache(input_ids, attention_mask, max_new_tokens)
        prefill_rows.append((input_ids.shape[0], cache.layers[0].keys.shape[0]))
        return cache

    monkeypatch.setattr(engine, "_prompt_cache", spy)
    shared = [c for group in engine.generate(prompts, sampling, seed=7) for c in group]
    # 12 rows in chunks of 8: prompts (0, 0, 0, 0, 1, 1, 1, 1) then (2, 2, 2, 2); the cache then covers every row.
    assert prefill_rows == [(8, 8), (4, 4)]
    monkeypatch.setattr(engine, "_prompt_cache", lambda *_: None)  # generate() prefills each row itself
    plain = [c for group in engine.generate(prompts, sampling, seed=7) for c in group]
    assert [c.token_ids for c in shared] == [c.token_ids for c in plain]
    for a, b in zip(shared, plain):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=1e-5)


def test_distinct_prompt_count_of_the_prefill(engine, monkeypatch):
    calls = []
    real_forward = engine.model.forward

    def forward(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(engine.model, "forward", forward)
    input_ids = torch.tensor([[0, 5, 6, 7], [0, 5, 6, 7], [8, 9, 10, 11], [0, 5, 6, 7]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1]])
    cache = engine._prompt_cache(input_ids, mask, 5)
    assert calls == [torch.Size([2, 3])]  # two distinct prompts, all but their last token
    assert int(cache.get_seq_length()) == 3 and cache.layers[0].max_cache_len == 4 + 5  # room for the whole generation
    keys = cache.layers[0].keys
    assert keys.shape[0] == 4
    torch.testing.assert_close(keys[0], keys[3])
    assert not torch.equal(keys[0, :, :3], keys[2, :, :3])
    assert engine._prompt_cache(input_ids[:, -1:], mask[:, -1:], 5) is None  # one-token prompts: nothing to cache
