"""The vLLM engine: CPU imports never load vLLM; on a CUDA machine with vLLM, G completions with the log-probs of the
tempered distribution, and a weight broadcast over NCCL from a learner actor into the engine's worker."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
HAS_CUDA = torch.cuda.is_available()
HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not (HAS_CUDA and HAS_VLLM), reason=f"needs CUDA and vLLM (cuda={HAS_CUDA}, vllm installed={HAS_VLLM})")


def test_rollout_imports_without_vllm():
    code = (
        "import sys\n"
        "import rollout, rollout.prompt, rollout.worker, rollout.pool, rollout.engines\n"
        "import rollout.engines.vllm_engine, rollout.engines.vllm_worker_ext\n"
        "assert 'vllm' not in sys.modules, 'vllm was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_rpc_the_engine_calls_exists_on_the_worker_extension():
    from rollout.engines.vllm_worker_ext import WeightSyncWorkerExtension

    source = (REPO / "rollout" / "engines" / "vllm_engine.py").read_text()
    called = set(re.findall(r'collective_rpc\(\s*"([a-z_]+)"', source))
    assert called >= {"init_weight_group", "receive_weights"}
    assert all(callable(getattr(WeightSyncWorkerExtension, name, None)) for name in called), called


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from cluster.tiny_models import build_tiny_causal_lm, train_tokenizer

    root = tmp_path_factory.mktemp("tiny_vllm")
    texts = [f"Frame {i}: After move forward, Observe: a chair is {s} of you." for i in range(40) for s in ("left", "right")]
    tokenizer_dir = train_tokenizer(texts, root / "tokenizer")
    # head_dim 64: the attention kernels vLLM picks on GPU want head sizes of 32 and up
    build = dict(hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=256)
    return build_tiny_causal_lm(tokenizer_dir, root / "policy0", seed=0, **build), build_tiny_causal_lm(tokenizer_dir, root / "policy1", seed=1, **build)


@pytest.mark.gpu
@needs_vllm
def test_vllm_engine_samples_with_tempered_logprobs(tiny_model):
    from transformers import AutoModelForCausalLM

    from rollout.config import RolloutConfig, SamplingConfig
    from rollout.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine(tiny_model[0], RolloutConfig(engine="vllm", dtype="float16", gpu_memory_utilization=0.3, enforce_eager=True))
    tok = engine.tokenizer
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ("Frame 0: Observe:", "a chair is left of you")]
    sampling = SamplingConfig(num_samples=4, max_new_tokens=16, temperature=0.8)
    out = engine.generate(prompts, sampling, seed=3)
    assert [len(g) for g in out] == [4, 4]
    assert [[c.token_ids for c in g] for g in engine.generate(prompts, sampling, seed=3)] == [[c.token_ids for c in g] for g in out]

    reference = AutoModelForCausalLM.from_pretrained(tiny_model[0], dtype=torch.float32).cuda().eval()
    for p, group in enumerate(out):
        for c in group:
            assert c.prompt_index == p and len(c.logprobs) == len(c.token_ids) > 0
            ids = torch.tensor([c.prompt_token_ids + c.token_ids], device="cuda")
            with torch.no_grad():
                logits = reference(ids).logits[0, len(c.prompt_token_ids) - 1 : -1].float() / 0.8
            expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(c.token_ids, device="cuda")[:, None]).squeeze(1)
            assert torch.allclose(torch.tensor(c.logprobs), expected.cpu(), atol=5e-2)

    # load_weights through collective_rpc: the engine then scores like the source model
    source = AutoModelForCausalLM.from_pretrained(tiny_model[1], dtype=torch.float32)
    engine.load_weights(source.named_parameters())
    c = engine.generate(prompts[:1], SamplingConfig(num_samples=1, max_new_tokens=16, temperature=1.0), seed=4)[0][0]
    with torch.no_grad():
        logits = source(torch.tensor([c.prompt_token_ids + c.token_ids])).logits[0, len(c.prompt_token_ids) - 1 : -1]
    expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(c.token_ids)[:, None]).squeeze(1)
    assert torch.allclose(torch.tensor(c.logprobs), expected, atol=5e-2)


@pytest.mark.gpu
@needs_vllm
@pytest.mark.skipif(HAS_CUDA and torch.cuda.device_count() < 2, reason="an NCCL broadcast needs two GPUs (learner and rollout worker)")
def test_vllm_pool_receives_an_nccl_broadcast(tiny_model):
    import ray

    from rollout.config import RolloutConfig, SamplingConfig
    from rollout.pool import RolloutPool
    from weightsync import weights_digest

    @ray.remote(num_gpus=1)
    class Learner:
        def __init__(self, path: str):
            from transformers import AutoModelForCausalLM

            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float16).cuda()

        def metas(self):
            from weightsync import metas_of

            return metas_of((n, p.shape, p.dtype) for n, p in self.model.named_parameters())

        def digest(self) -> str:
            return weights_digest(self.model.named_parameters())

        def send(self, port: int, world: int, metas, bucket_bytes: int) -> int:
            from weightsync import create_weight_group, send_weights

            group = create_weight_group("nccl", "127.0.0.1", port, world, 0, timeout_s=120)
            named = dict(self.model.named_parameters())
            return send_weights(group, metas, lambda bucket: [named[m.name] for m in bucket], bucket_bytes)

    from weightsync.group import free_port

    ray.init(num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg = RolloutConfig(num_workers=1, engine="vllm", num_gpus_per_worker=1, dtype="float16", gpu_memory_utilization=0.3, enforce_eager=True)
        pool = RolloutPool(cfg, tiny_model[0])
        learner = Learner.remote(tiny_model[1])
        metas = ray.get(learner.metas.remote())
        port = free_port()
        # The learner joins (rank 0) and starts broadcasting; NCCL holds each bucket until the worker posts its receive.
        joins = pool.init_weight_group("nccl", "127.0.0.1", port, timeout_s=120)
        sent = learner.send.remote(port, pool.weight_group_world_size, metas, 1 << 16)
        ray.get(joins)
        receipts = pool.receive_weights(metas, 1 << 16, digest=True)
        results = ray.get(receipts)
        assert ray.get(sent) == results[0]["bytes"]
        assert results[0]["digest"] == ray.get(learner.digest.remote())
        out = pool.generate([[1, 2, 3]], SamplingConfig(num_samples=2, max_new_tokens=8), seed=0)
        assert len(out[0]) == 2
        pool.shutdown()
    finally:
        ray.shutdown()
