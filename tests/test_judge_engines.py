"""The consistency judge's engines agree on the letter: transformers (the definition), an in-process vLLM engine, a pool
of vLLM replicas in Ray actors, and an OpenAI-compatible endpoint (a real vLLM server on 127.0.0.1, which the
perception HTTP engine is pointed at too); a request an engine fails on is a failed judgement (None), never a letter.

Without vLLM: a flapping OpenAI-compatible endpoint (500s, stalls, dropped connections on a schedule) behind a real
JudgePool actor, the RewardScorer and the driver's scoring stage: failed judgements are counted and excluded from the
advantages and the learner's batch, and a step's scoring is bounded by the judge's timeouts."""

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
from rewards.judge import Judge, JudgeRequest, letter_from_logprobs, make_judge
from tests.local_http import LocalHTTPServer, send_json

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


def test_every_configurable_judge_engine_is_registered_where_it_is_written():
    from rewards.config import JUDGE_ENGINES
    from rewards.judge import JUDGES, judge_class

    judge_class("transformers")  # imports rewards/judges/, which registers each engine
    assert set(JUDGES) == set(JUDGE_ENGINES)
    assert {name: cls.__module__ for name, cls in JUDGES.items()} == {
        name: f"rewards.judges.{name}_judge" for name in JUDGE_ENGINES}


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
    judge = make_judge("judge-model", cfg)
    assert judge.tokenizer is None  # not a folder: the reasoning is cut by characters
    requests = judge_requests(3) + [JudgeRequest(question="q", choices=(), think="t")]
    assert judge.judge(requests) == [None] * 4


# ------------------------------------------------------------------------------------------------ with vLLM


JUDGE_CFG = dict(batch_size=3, max_think_tokens=64, dtype="float32")


@pytest.fixture(scope="module")
def reference(tiny_judge) -> Judge:
    return make_judge(tiny_judge, JudgeConfig(model=tiny_judge, **JUDGE_CFG), device="cpu")


@needs_vllm
@pytest.mark.slow
def test_vllm_judge_picks_the_transformers_letters(tiny_judge, reference, judge_requests):
    requests = judge_requests(12) + [JudgeRequest(question="q", choices=(), think="t")]
    judge = make_judge(tiny_judge, JudgeConfig(model=tiny_judge, engine="vllm", **JUDGE_CFG), device=DEVICE)
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
    judge = make_judge(server.model, cfg)
    assert judge.tokenizer is not None  # a folder: the reasoning is cut by tokens, as the reference does
    requests = judge_requests(8)
    assert [judge.build_prompt(r) for r in requests] == [reference.build_prompt(r) for r in requests]
    _assert_same_letters(judge.judge(requests), reference.judge(requests), _margins(reference, requests))

    # With the default top 20, a reply without any option letter is a failed judgement (None), never a guess.
    narrow = make_judge(server.model, JudgeConfig(model=server.model, engine="openai", base_url=server.url, top_logprobs=1))
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


# ------------------------------------------------------------------------------------------------ a flapping endpoint


class FlappingJudgeServer:
    """A local OpenAI-compatible chat endpoint (127.0.0.1 only) that flaps on a schedule: each request's reasoning
    carries a key `[kN]`, and `plan(N)` lists what the server does on that key's 1st, 2nd, ... attempt (the last entry
    repeats): "ok" answers the key's letter in the first token's top_logprobs (`letter(N)`), "500" answers HTTP 500,
    "stall" holds the request for `stall_s` (or until `release()`) before answering, "drop" closes the connection
    without a reply. Every attempt is recorded as (key, attempt, mode)."""

    def __init__(self, plan, letter, stall_s: float = 60.0) -> None:
        import re
        import threading

        self.plan, self.letter, self.stall_s = plan, letter, stall_s
        self.attempts: list[tuple[int, int, str]] = []
        self._released = threading.Event()
        self._lock = threading.Lock()

        def on_post(handler, body: dict) -> None:
            key = int(re.search(r"\[k(\d+)\]", body["messages"][-1]["content"]).group(1))
            with self._lock:
                attempt = 1 + sum(1 for k, _, _ in self.attempts if k == key)
                steps = self.plan(key)
                mode = steps[min(attempt, len(steps)) - 1]
                self.attempts.append((key, attempt, mode))
            if mode == "drop":
                handler.close_connection = True  # no status line at all: the client sees the connection end
                return
            if mode == "500":
                send_json(handler, 500, {"error": {"message": "flapping", "type": "server_error"}})
                return
            if mode == "stall":
                self._released.wait(self.stall_s)
            letter = self.letter(key)
            candidate = {"token": letter, "logprob": -0.1, "bytes": list(letter.encode())}
            send_json(handler, 200, {
                "id": f"k{key}", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{
                    "index": 0, "finish_reason": "length",
                    "message": {"role": "assistant", "content": letter},
                    "logprobs": {"content": [{**candidate, "top_logprobs": [candidate]}]},
                }],
            })

        self._http = LocalHTTPServer(on_post)
        self.url = self._http.url

    def release(self) -> None:
        """Stalled requests answer now, and later stalls do not wait."""
        self._released.set()

    def outcome(self, key: int) -> str:
        """The mode of the key's last attempt: what its judgement came to."""
        return [mode for k, _, mode in self.attempts if k == key][-1]

    def close(self) -> None:
        self.release()
        self._http.close()


G = 4
GROUPS = 3  # each group: 3 correct answers (B), each with a keyed reasoning the judge is asked about, and 1 wrong (A)


def _flapping_rollouts():
    """GROUPS groups of G completions about their own question (answer B); completion g*G+j (j < 3) is correct and its
    reasoning carries the key 3*g+j; the last of each group answers A (wrong: no judge call)."""
    from cluster.stages import Rollouts, StepPrompts
    from embodied_data.records import Record
    from rollout.types import Completion

    groups, prompts = [], []
    for g in range(GROUPS):
        texts = [f"<think>[k{3 * g + j}] The lamp is on my right.</think>\n<answer>B</answer>" for j in range(G - 1)]
        texts.append("<think>The lamp is on my left.</think>\n<answer>A</answer>")
        # Each completion's tokens are its own (100 * index + ...), so a learner sample names its completion.
        groups.append([Completion(g, [1, 2], [100 * (g * G + j) + t for t in range(3)], [-0.5] * 3, text, True, 0)
                       for j, text in enumerate(texts)])
        prompts.append(SimpleNamespace(record=Record(
            id=f"q{g}", video="v.mp4", question=f"Where is the lamp {g}?", choices=("left", "right", "behind"),
            answer="B", category="rel_direction", scene="s", source="test")))
    return Rollouts(StepPrompts(1, 0, list(range(GROUPS)), prompts, [0] * GROUPS), groups, 0, 0.0, 0.0)


def _completion_of_key(key: int) -> int:
    return (key // 3) * G + key % 3


def _flapping_config(url: str, **judge):
    from omegaconf import OmegaConf

    from cluster.config import TrainConfig
    from rewards.config import RewardStage

    cfg = OmegaConf.to_object(OmegaConf.structured(TrainConfig))
    cfg.sampling.num_samples = G
    cfg.rewards.stages = [RewardStage(start=0, format=0.1, accuracy=0.7, consistency=0.2)]
    cfg.learner.grpo.filter_equal_reward_groups = False
    for name, value in dict(model="judge-model", engine="openai", base_url=url, api_key_env="", num_replicas=1,
                            num_cpus_per_replica=0.5, batch_size=16, max_concurrency=8, **judge).items():
        setattr(cfg.rewards.judge, name, value)
    return cfg


def _assert_failed_ones_left_out(scored, failed: set[int]) -> None:
    """A failed judgement is no reward: consistency None, excluded, advantage 0, and not in the learner's batch."""
    n = GROUPS * G
    rewards = scored.rewards
    assert {i for i in range(n) if rewards.excluded[i]} == failed
    assert {i for i in range(n) if rewards.judge_failed[i]} == failed
    assert all(rewards.consistency[i] is None and scored.advantages[i] == 0.0 for i in failed)
    assert set(scored.sample_of_completion) == set(range(n)) - failed
    # The learner's batch, read from its samples' tokens (completion i's start at 100 * i): exactly the others.
    assert sorted(sample.completion_ids[0] // 100 for sample in scored.samples) == sorted(set(range(n)) - failed)
    metrics = scored.metrics()
    assert metrics["reward/judge_failures"] == len(failed) and metrics["reward/excluded"] == len(failed)


@needs_openai
@pytest.mark.slow  # a real JudgePool actor in a local Ray
def test_a_flapping_judge_endpoint_fails_judgements_not_the_step(ray_local):
    """500s, stalls past the per-request timeout and dropped connections, each either recovered by the client's one
    retry or a counted failed judgement that is excluded from the advantages and the learner's batch; the step's
    scoring time is bounded by the per-request timeouts, far below the pool's deadline."""
    from cluster.stages import score
    from rewards.combine import RewardScorer
    from rewards.judge_pool import JudgePool

    plans = [["ok"], ["500", "500"], ["stall", "stall"], ["drop", "drop"], ["500", "ok"], ["drop", "ok"], ["stall", "ok"]]
    server = FlappingJudgeServer(plan=lambda key: plans[key % len(plans)], letter=lambda key: "BC"[key % 2])
    try:
        cfg = _flapping_config(server.url, request_timeout_s=1.0, max_retries=1, timeout_s=30.0)
        pool = JudgePool(cfg.rewards.judge, ready_timeout_s=120)
        try:
            scored = score(cfg, RewardScorer(cfg.rewards, pool), _flapping_rollouts())
            stats = pool.stats()
        finally:
            pool.shutdown()
    finally:
        server.close()

    keys = range(3 * GROUPS)
    # Every keyed request was tried exactly as planned: once, or twice (max_retries=1) when the first try failed.
    assert sorted({k for k, _, _ in server.attempts}) == list(keys)
    for key in keys:
        assert [mode for k, _, mode in server.attempts if k == key] == plans[key % len(plans)], server.attempts
    failed_keys = {key for key in keys if server.outcome(key) != "ok"}
    assert failed_keys == {1, 2, 3, 8}
    failed = {_completion_of_key(key) for key in failed_keys}
    _assert_failed_ones_left_out(scored, failed)
    rewards = scored.rewards
    assert rewards.judge_failures == 4 and rewards.judged == 5
    for key in set(keys) - failed_keys:  # the judged ones score what the server said: B agrees, C does not
        assert rewards.consistency[_completion_of_key(key)] == (1.0 if key % 2 == 0 else 0.0)
    # Each failure was a request's own (after its retry), not the pool's deadline; the slowest chain is two 1 s stalls
    # and one backoff (< 1 s), so the step took a few seconds, not judge.timeout_s.
    assert stats["judge/failed_batches"] == 0 and stats["judge/failures"] == 4
    assert scored.seconds < 10.0, scored.seconds


@needs_openai
@pytest.mark.slow  # a real JudgePool actor in a local Ray
def test_a_stalled_judge_endpoint_costs_a_step_at_most_the_judge_timeout_and_the_run_goes_on(ray_local):
    """Every request stalls far past judge.timeout_s: the step's scoring returns at the pool's deadline with every
    judgement counted failed and excluded; once the endpoint answers again, the next step is judged in full."""
    from cluster.stages import score
    from rewards.combine import RewardScorer
    from rewards.judge_pool import JudgePool

    healthy = False
    server = FlappingJudgeServer(plan=lambda key: ["ok"] if healthy else ["stall"], letter=lambda key: "B", stall_s=60.0)
    try:
        timeout_s = 3.0
        cfg = _flapping_config(server.url, request_timeout_s=30.0, max_retries=0, timeout_s=timeout_s)
        pool = JudgePool(cfg.rewards.judge, ready_timeout_s=120)
        try:
            scorer = RewardScorer(cfg.rewards, pool)
            stalled = score(cfg, scorer, _flapping_rollouts())
            assert timeout_s <= stalled.seconds < timeout_s + 3.0, stalled.seconds
            judged_completions = {_completion_of_key(key) for key in range(3 * GROUPS)}
            _assert_failed_ones_left_out(stalled, judged_completions)
            assert stalled.rewards.judged == 0 and pool.stats()["judge/failed_batches"] >= 1

            healthy = True
            server.release()  # the stalled requests answer now; their late batch's letters are ignored
            recovered = score(cfg, scorer, _flapping_rollouts())
        finally:
            pool.shutdown()
    finally:
        server.close()
    assert recovered.rewards.judge_failures == 0 and recovered.rewards.judged == 3 * GROUPS
    assert all(recovered.rewards.consistency[i] == 1.0 for i in judged_completions)
    assert len(recovered.samples) == GROUPS * G and recovered.seconds < timeout_s
