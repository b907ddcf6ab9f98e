"""The transformers backend: a checkpoint loaded by path (any `from_pretrained` class) in the config's dtype, frozen and in eval mode on one device."""

from __future__ import annotations

from typing import Any

import torch


def default_device(device: str | None = None) -> torch.device:
    """`device`, or the GPU when there is one, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_model(model_class: Any, model_path: str, dtype: torch.dtype | str, device: torch.device | str) -> Any:
    """`model_class.from_pretrained(model_path)` in `dtype` (from engines.loading.resolve_dtype) on `device`, in eval
    mode with gradients off: engines only run the model; weight updates copy into it in place (no autograd)."""
    model = model_class.from_pretrained(model_path, dtype=dtype).to(device).eval()
    model.requires_grad_(False)
    return model
