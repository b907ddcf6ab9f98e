"""The consistency judge's engines agree on the letter: transformers (the definition), an in-process vLLM engine, a pool
of vLLM replicas in Ray actors, and an OpenAI-compatible endpoint (a real vLLM server on 127.0.0.1, which the
perception HTTP engine is pointed at too); a request an engine fails on is a failed judgement (None), never a letter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rewards.config import JudgeConfig
from rewards.judge import Judge, JudgeRequest, letter_from_logprobs

from vllm_env import DEVICE, HAS_CUDA, HAS_OPENAI, HAS_VLLM, HAS_VLLM_CPU, RUNS_VLLM, require_when_ci_asks  # noqa: E402

require_when_ci_asks(openai=True)
needs_openai = pytest.mark.skipif(not HAS_OPENAI, reason="needs the openai client library: pip install '.[openai]'")
needs_vllm = pytest.mark.skipif(
    not (RUNS_VLLM and HAS_OPENAI),
    reason=f"needs vLLM that runs here and the openai client: the environment .ci/vllm-env DIR builds, or the CUDA "
    f"build on a GPU (vllm installed={HAS_VLLM}, vllm-cpu={HAS_VLLM_CPU}, cuda={HAS_CUDA}, openai={HAS_OPENAI})",
)
SERVER_START_S = 240.0  # a vLLM server on a tiny model answered ~75 s after launch on 2 cores; bounded, not assumed
# Two engines computing the same logits in float32 (vLLM's CPU kernels vs torch) can order two letters differently
# only when their logits are this close; above it the letter must be the same.
MARGIN = 1e-3

def _margins(judge: Judge, requests: list[JudgeRequest]) -> list[float]:
    """The gap between each request's best and second-best letter logits under the transformers judge."""
    margins = []
    for row in judge.letter_logits(requests):
        top = torch.topk(row, min(2, len(row))).values
        margins.append(float(top[0] - top[1]) if len(top) > 1 else float("inf"))
    return margins


def _assert_same_letters(got: list[str | None], want: list[str | None], margins: list[float]) -> None:
    decided = [i for i, margin in enumerate(margins) if margin > MARGIN]
    assert len(decided) >= len(margins) // 2, f"too few clear-cut requests to compare: margins {margins}"
    assert [got[i] for i in decided] == [want[i] for i in decided], (got, want, margins)
    assert all(letter is not None for letter in got)


# ------------------------------------------------------------------------------------------------ no vLLM needed


def _candidate(token: str, logprob: float) -> SimpleNamespace:
    return SimpleNamespace(token=token, logprob=logprob)


def test_letter_from_logprobs_takes_the_best_valid_letter_or_none():
    def reply(first, *top):
        content = SimpleNamespace(token=first.token, logprob=first.logprob, top_logprobs=list(top))
        return SimpleNamespace(choices=[SimpleNamespace(logprobs=SimpleNamespace(content=[content]))])

    # the sampled token is not a letter; the best letter among the candidates wins; " B" is another token than B
    response = reply(
        _candidate("the", -0.1), _candidate("the", -0.1), _candidate("C", -3.0), _candidate("B", -2.0),
        _candidate(" A", -1.0),
    )
    assert letter_from_logprobs(response, "ABC") == "B"
    assert letter_from_logprobs(response, "AC") == "C", "a letter outside the request's options is not an answer"
    assert letter_from_logprobs(reply(_candidate("x", -0.1), _candidate("y", -1.0)), "AB") is None
    assert letter_from_logprobs(SimpleNamespace(choices=[]), "AB") is None
    assert letter_from_logprobs(SimpleNamespace(choices=[SimpleNamespace(logprobs=None)]), "AB") is None


def test_pool_refuses_an_unknown_engine_or_an_openai_engine_without_url():
    from rewards.judge_pool import JudgePool

    with pytest.raises(ValueError, match="judge.engine"):
        JudgePool(JudgeConfig(model="m", engine="tgi"))
    with pytest.raises(ValueError, match="base_url"):
        JudgePool(JudgeConfig(model="m", engine="openai"))


@needs_openai
def test_openai_judge_counts_a_failed_request_as_none(judge_requests):
    from weightsync.group import free_port

    cfg = JudgeConfig(
        model="judge-model", engine="openai", base_url=f"http://127.0.0.1:{free_port()}/v1",  # nothing listens
        max_retries=0, request_timeout_s=5.0,
    )
    judge = Judge("judge-model", cfg)
    assert judge.tokenizer is None  # not a folder: the reasoning is cut by characters
    requests = judge_requests(3) + [JudgeRequest(question="q", choices=(), think="t")]
    assert judge.judge(requests) == [None] * 4


# ------------------------------------------------------------------------------------------------ with vLLM


JUDGE_CFG = dict(batch_size=3, max_think_tokens=64, dtype="float32")


@pytest.fixture(scope="module")
def reference(tiny_judge) -> Judge:
    return Judge(tiny_judge, JudgeConfig(model=tiny_judge, **JUDGE_CFG), device="cpu")


@needs_vllm
@pytest.mark.slow
def test_vllm_judge_picks_the_transformers_letters(tiny_judge, reference, judge_requests):
    requests = judge_requests(12) + [JudgeRequest(question="q", choices=(), think="t")]
    judge = Judge(tiny_judge, JudgeConfig(model=tiny_judge, engine="vllm", **JUDGE_CFG), device=DEVICE)
    got = judge.judge(requests)
    want = reference.judge(requests)
    assert got[-1] is None and want[-1] is None
    _assert_same_letters(got[:-1], want[:-1], _margins(reference, requests[:-1]))
    assert judge.judge(requests[:5]) == got[:5], "batching does not change a letter"


@needs_vllm
@pytest.mark.slow
def test_judge_pool_of_vllm_replicas_in_ray_actors_picks_the_transformers_letters(tiny_judge, reference, judge_requests):
    """engine=vllm as training runs it: each replica a Ray actor holding its own vLLM engine (in the actor's process
    on CPU), batched by the pool; a request no engine can judge is a counted failure, not a failed batch."""
    import ray

    from rewards.judge_pool import JudgePool

    on_gpu = DEVICE == "cuda"
    ray.init(num_cpus=2, num_gpus=1 if on_gpu else 0, include_dashboard=False, log_to_driver=False)
    try:
        cfg = JudgeConfig(
            model=tiny_judge, engine="vllm", num_replicas=1, num_cpus_per_replica=1,
            num_gpus_per_replica=1 if on_gpu else 0, timeout_s=120, **JUDGE_CFG,
        )
        pool = JudgePool(cfg, ready_timeout_s=300)
        requests = judge_requests(8) + [JudgeRequest(question="q", choices=(), think="t")]
        ticket = pool.submit(requests)
        assert [(call.begin, call.end) for call in ticket.calls] == [(0, 3), (3, 6), (6, 9)]  # batch_size 3
        result = pool.collect(ticket)
        want = reference.judge(requests)
        assert result.letters[-1] is None and result.failures == 1 and result.failed_batches == 0, result.errors
        _assert_same_letters(result.letters[:-1], want[:-1], _margins(reference, requests[:-1]))
        pool.shutdown()
    finally:
        ray.shutdown()


def _vllm_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_TARGET_DEVICE", "cpu" if DEVICE == "cpu" else "cuda")
    if DEVICE == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    return env


@pytest.fixture(scope="module")
def server(tiny_judge, tmp_path_factory):
    """`python -m vllm.entrypoints.openai.api_server` on the tiny judge (the `vllm` console script is broken in
    vllm-cpu), serving it under its path; up to SERVER_START_S to answer /health; killed with its children after."""
    from weightsync.group import free_port

    if not (RUNS_VLLM and HAS_OPENAI):
        pytest.skip("needs vLLM and the openai client")
    port = free_port()
    log_path = Path(tmp_path_factory.mktemp("vllm_server")) / "server.log"
    vocab = len(reference_tokenizer(tiny_judge))
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", tiny_judge,
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "2048",
        "--max-logprobs", str(vocab),  # top_logprobs over the whole vocabulary: see test_openai_judge_...
        "--enforce-eager", "--seed", "0",
    ]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command, env=_vllm_env(), stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    started = time.perf_counter()
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.perf_counter() - started > SERVER_START_S:
                raise TimeoutError(f"the vLLM server did not answer within {SERVER_START_S} s:\n{log_path.read_text()[-4000:]}")
            time.sleep(1.0)
        print(f"vLLM server healthy after {time.perf_counter() - started:.1f} s")
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}/v1", model=tiny_judge, vocab=vocab)
    finally:
        # The whole session: the API server may have spawned an engine-core process.
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def reference_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@needs_vllm
@pytest.mark.slow
def test_openai_judge_on_a_vllm_server_picks_the_transformers_letters(server, reference, judge_requests):
    # A random tiny model rarely puts a letter among its top 20 tokens (a trained judge does): ask for the whole
    # vocabulary so the restricted argmax is exact and comparable.
    cfg = JudgeConfig(model=server.model, engine="openai", base_url=server.url, top_logprobs=server.vocab, **JUDGE_CFG)
    judge = Judge(server.model, cfg)
    assert judge.tokenizer is not None  # a folder: the reasoning is cut by tokens, as the reference does
    requests = judge_requests(8)
    assert [judge.build_prompt(r) for r in requests] == [reference.build_prompt(r) for r in requests]
    _assert_same_letters(judge.judge(requests), reference.judge(requests), _margins(reference, requests))

    # With the default top 20, a reply without any option letter is a failed judgement (None), never a guess.
    narrow = Judge(server.model, JudgeConfig(model=server.model, engine="openai", base_url=server.url, top_logprobs=1))
    for letter, request in zip(narrow.judge(requests), requests):
        assert letter is None or letter in request.letters


@needs_vllm
@pytest.mark.slow
def test_perception_openai_engine_on_a_vllm_server_matches_greedy_transformers(server):
    """Text-only requests (the served model is a text LM): the reply is the greedy continuation of the chat prompt."""
    from transformers import AutoModelForCausalLM

    from perception.config import VLMConfig
    from perception.engines import VLMRequest, make_vlm_engine
    from perception.engines.base import SYSTEM_PROMPT

    cfg = VLMConfig(engine="openai", base_url=server.url, api_key_env="", max_new_tokens=6, max_retries=1)
    prompts = ["Frame 0: After move forward, Observe:", "a chair is left of you"]
    texts = make_vlm_engine(cfg, server.model).generate([VLMRequest([], prompt) for prompt in prompts])

    tokenizer = reference_tokenizer(server.model)
    model = AutoModelForCausalLM.from_pretrained(server.model, dtype=torch.float32).eval()
    for prompt, text in zip(prompts, texts):
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
        chat = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(chat, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=model.config.eos_token_id)
        assert text == tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
