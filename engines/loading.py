"""What every engine reads from a checkpoint before it serves: the torch dtype a config's dtype name stands for, the tokenizer (left padding), the EOS and pad token ids, and the chat prompt through the model's own template."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

# The one dtype naming of every engine's config (rollout.dtype, rewards.judge.dtype, perception.vlm.dtype); vLLM
# takes the same strings.
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, key: str, auto: torch.dtype | str = "auto") -> torch.dtype | str:
    """The torch dtype `name` stands for. "auto" gives `auto`: by default the string "auto", which from_pretrained
    reads as the checkpoint's own dtype; an engine that means something else by it (the VLM: bfloat16 on GPU, float32
    on CPU) passes that. Any other name is a ValueError naming the config `key`."""
    if name == "auto":
        return auto
    dtype = _TORCH_DTYPES.get(name)
    if dtype is None:
        raise ValueError(f"{key} must be one of {', '.join(DTYPE_NAMES)}, got {name!r}")
    return dtype


def checkpoint_dtype_name(model_path: str) -> str:
    """The dtype name a checkpoint loads in with dtype "auto" in transformers: its config's `dtype` (or the older
    `torch_dtype`), float32 when it names none. A hub id (no local config.json) is asked of transformers' AutoConfig."""
    import json
    from pathlib import Path

    config_file = Path(model_path) / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        name = config.get("dtype") or config.get("torch_dtype")
    else:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_path)
        name = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(name).removeprefix("torch.") if name is not None else "float32"
    return name if name in _TORCH_DTYPES else "float32"


def load_tokenizer(model_path: str) -> Any:
    """The checkpoint's tokenizer, padding on the left: batched prompts then all end in the last column, where
    generation starts and where next-token logits are read."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    return tokenizer


@dataclass(frozen=True)
class SpecialTokens:
    eos_token_ids: list[int]  # sorted; generation stops at any of them
    pad_token_id: int


def _ids(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _saved_generation_config(model_path: str) -> Any:
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_path)
    except OSError:  # no generation_config.json: the tokenizer's tokens alone
        return None


def special_tokens(model_path: str, tokenizer: Any, generation_config: Any = None) -> SpecialTokens:
    """EOS: every id the generation config names plus the tokenizer's EOS (chat models end a turn with one and the
    document with another). Pad: the generation config's, else the tokenizer's, else the first EOS.

    `generation_config`: a loaded model's (transformers engines); None reads the checkpoint's generation_config.json
    (vLLM engines, which hold no transformers model). Raises ValueError naming the model when nothing names an EOS."""
    config = generation_config if generation_config is not None else _saved_generation_config(model_path)
    eos = set(_ids(getattr(config, "eos_token_id", None)))
    if tokenizer.eos_token_id is not None:
        eos.add(tokenizer.eos_token_id)
    if not eos:
        raise ValueError(f"model {model_path}: neither its generation config nor its tokenizer names an EOS token")
    eos_ids = sorted(eos)
    pad = getattr(config, "pad_token_id", None)
    if pad is None:
        pad = tokenizer.pad_token_id
    return SpecialTokens(eos_token_ids=eos_ids, pad_token_id=eos_ids[0] if pad is None else int(pad))


def chat_prompt(tokenizer: Any, messages: Sequence[dict[str, Any]], fallback: str | None = None) -> str:
    """The prompt text of `messages` through the tokenizer's chat template, ending with the assistant's generation
    prompt. Without a template (or a tokenizer): `fallback`, or a ValueError naming the tokenizer when there is none."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    if fallback is not None:
        return fallback
    name = getattr(tokenizer, "name_or_path", None)
    raise ValueError(f"tokenizer {name!r} has no chat template, and this engine needs one to build its prompts")


def encode(tokenizer: Any, text: str) -> list[int]:
    """The token ids of an already templated prompt: no special tokens added (the template wrote them)."""
    return list(tokenizer.encode(text, add_special_tokens=False))
