"""Builds the embedded default's models locally: a byte-level BPE tokenizer trained on the data's text and tiny
Qwen2 causal LMs (policy, judge) with random weights, saved with save_pretrained so that every later stage loads
them by path through the same code that loads a real checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

# Special tokens of the Qwen2 / Qwen2.5-VL families that our prompts and the tiny VLM rely on.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# The answer-format tags as single, ordinary (not special: decoding keeps them) tokens, so a tiny policy can learn the
# format in a few dozen steps instead of spelling each tag out of BPE pieces.
FORMAT_TAGS = ["<think>", "</think>", "<answer>", "</answer>"]
# Qwen2's chat template, reduced to what we use (system/user/assistant turns, generation prompt).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Words every prompt and answer uses, so they tokenize compactly even when the training text is small.
SEED_TEXT = (
    "<think> </think> <answer> </answer> A B C D E F G left right back front ahead behind above below "
    "move forward backward upward downward rotate tilt Frame Observe After Question Choices answer "
)


def _atomic_dir(out_dir: Path):
    """A temp folder beside `out_dir` that is renamed into place once complete, so a crash leaves no half model."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))


def _publish(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(tmp)  # another process won the race; its copy is equivalent
        return
    os.replace(tmp, out_dir)


def train_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 4096) -> str:
    """Trains a byte-level BPE on `texts` and saves it as a Qwen2 tokenizer (chat template included); returns the folder.

    Reuses an existing folder: the tokenizer is part of the run's cached models.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    out = Path(out_dir)
    if (out / "tokenizer.json").exists():
        return str(out)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_with_seed_text(texts), trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    tok.add_tokens(FORMAT_TAGS)
    tok.chat_template = CHAT_TEMPLATE
    tmp = _atomic_dir(out)
    tok.save_pretrained(tmp)
    _publish(tmp, out)
    return str(out)


def _with_seed_text(texts: Iterable[str]):
    for _ in range(20):
        yield SEED_TEXT
    yield from texts


def build_tiny_causal_lm(
    tokenizer_dir: str,
    out_dir: str | os.PathLike,
    seed: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    # head_dim 32: vLLM's CPU attention supports head sizes 32, 64, 80, 96, 112, 128, ... only (not 16); one KV head
    # keeps the k/v projections the size they were with 2 heads of 16
    num_heads: int = 2,
    num_kv_heads: int = 1,
    intermediate_size: int = 128,
    max_position_embeddings: int = 4096,
) -> str:
    """A Qwen2ForCausalLM with random weights (seeded), saved with its tokenizer; returns the folder. Reuses an existing one."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    if (out / "config.json").exists():
        return str(out)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = [config.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config.pad_token_id = tok.pad_token_id
    tmp = _atomic_dir(out)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "tiny_model.json").write_text(json.dumps({"seed": seed, "built_by": "cluster.tiny_models"}))
    _publish(tmp, out)
    return str(out)
