"""Builds the embedded default's VLM: a tiny random-weight Qwen2_5_VLForConditionalGeneration (vision tower + LM, a few
hundred thousand parameters) saved with its tokenizer and image-processor config, loadable by path like a real one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

# Special tokens the model config points at; the tokenizer (cluster.tiny_models.train_tokenizer) has them all.
IMAGE_PAD, VIDEO_PAD, VISION_START, VISION_END = "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"
# Larger than Qwen's 0.02 so that a random model's greedy output depends on its input instead of collapsing to one
# repeated token: tests can then see images and prompts change what it says.
INIT_STD = 0.5


def build_tiny_vlm(
    tokenizer_dir: str,
    out_dir: str | os.PathLike,
    seed: int,
    image_size: int = 112,
    text_hidden_size: int = 64,
    text_layers: int = 2,
    vision_hidden_size: int = 32,
    vision_depth: int = 2,
) -> str:
    """A seeded random Qwen2.5-VL saved with the tokenizer and a Qwen2VLImageProcessorPil config; returns the folder.

    Reuses an existing folder; writes into a temp folder beside it and renames it into place, so a crash leaves no
    half-written model.  `image_size` (a multiple of 28) bounds the image processor's pixels to image_size**2.
    """
    from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    out = Path(out_dir)
    if (out / "config.json").exists():
        return str(out)
    patch_size, merge_size = 14, 2
    if image_size % (patch_size * merge_size):
        raise ValueError(f"image_size must be a multiple of {patch_size * merge_size}, got {image_size}")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    token_ids = {token: tokenizer.convert_tokens_to_ids(token) for token in (IMAGE_PAD, VIDEO_PAD, VISION_START, VISION_END)}
    missing = [token for token, token_id in token_ids.items() if token_id is None or token_id == tokenizer.unk_token_id]
    if missing:
        raise ValueError(f"tokenizer at {tokenizer_dir} lacks the vision tokens {missing}")
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    num_heads = 4
    head_dim = text_hidden_size // num_heads
    # Multimodal RoPE splits each head's rotary half (head_dim / 2) between time, height and width.
    half = head_dim // 2
    mrope_section = [half - 2 * (half // 3), half // 3, half // 3]
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": text_hidden_size,
            "intermediate_size": 2 * text_hidden_size,
            "num_hidden_layers": text_layers,
            "num_attention_heads": num_heads,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "initializer_range": INIT_STD,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": mrope_section},
            "eos_token_id": eos_id,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": None,
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": vision_hidden_size,
            "intermediate_size": 2 * vision_hidden_size,
            "num_heads": 2,
            "out_hidden_size": text_hidden_size,
            "patch_size": patch_size,
            "spatial_merge_size": merge_size,
            "temporal_patch_size": 2,
            "window_size": image_size,
            "fullatt_block_indexes": [vision_depth - 1],
            "initializer_range": INIT_STD,
        },
        image_token_id=token_ids[IMAGE_PAD],
        video_token_id=token_ids[VIDEO_PAD],
        vision_start_token_id=token_ids[VISION_START],
        vision_end_token_id=token_ids[VISION_END],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [eos_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=2,
        size={"shortest_edge": (patch_size * merge_size) ** 2, "longest_edge": image_size * image_size},
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        image_processor.save_pretrained(tmp)
        num_parameters = sum(parameter.numel() for parameter in model.parameters())
        (tmp / "tiny_model.json").write_text(
            json.dumps({"seed": seed, "built_by": "perception.tiny_vlm", "parameters": num_parameters})
        )
        if out.exists():  # another process won the race; its copy is equivalent
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(out)
