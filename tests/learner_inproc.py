"""A DeepSpeed learner rank in the test process itself (world size 1, gloo), for tests that need a real engine but no
Ray (starting Ray and an actor costs more than the few steps these tests take)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from learner.batch import Sample

_DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TEXTS = [f"Frame {i}: After rotate {d}, Observe: a {c} lamp is {d} of you." for i in range(20) for d in ("left", "right") for c in ("red", "blue")]


def tiny_policy(root: Path) -> str:
    from cluster.tiny_models import build_tiny_causal_lm, train_tokenizer

    return build_tiny_causal_lm(train_tokenizer(TEXTS, root / "tokenizer", vocab_size=512), root / "policy", seed=0)


@contextmanager
def learner_process_group() -> Iterator[None]:
    """Sets what DeepSpeed reads while engines are built, then restores the environment and the thread count.

    The process group itself (made by the first Learner.setup: rank 0 hosts its store) is left up for the rest of the
    test process: DeepSpeed caches the groups it derives from it, so a destroyed and remade group breaks the next engine.
    """
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "embodied-r" / "torch_extensions"))
    saved_env = {key: os.environ.get(key) for key in _DIST_ENV}
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(threads)


def make_learner(cfg, model_path: str, total_steps: int = 10):
    """One rank of world size 1, set up (engines built) in this process."""
    from learner.actor import Learner

    learner = Learner(cfg, model_path, rank=0, world_size=1, total_steps=total_steps, seed=0)
    learner.setup(*learner.host_rendezvous())
    return learner


def make_samples(vocab: int, advantages: list[float], seed: int) -> list[Sample]:
    """Prompts and completions of different lengths, so packing pads both sides."""
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for index, advantage in enumerate(advantages):
        prompt_len, completion_len = 3 + (index * 2) % 7, 2 + (index * 3) % 6
        tokens = torch.randint(10, vocab - 10, (prompt_len + completion_len,), generator=gen).tolist()
        samples.append(Sample(prompt_ids=tokens[:prompt_len], completion_ids=tokens[prompt_len:],
                              rollout_logprobs=(-torch.rand(completion_len, generator=gen) * 5).tolist(), advantage=advantage))
    return samples
