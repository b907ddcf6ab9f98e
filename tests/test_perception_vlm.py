"""The tiny Qwen2.5-VL, the VLM engines (transformers on real key frames, OpenAI-compatible HTTP against a local
server, vLLM where CUDA is present) and the in-process Describer."""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cluster.tiny_models import train_tokenizer
from perception.config import KeyframeConfig, PerceptionConfig, VLMConfig
from perception.describer import Describer, build_requests
from perception.engines import VLMRequest, make_vlm_engine
from perception.keyframes import extract_keyframes
from perception.prompts import first_frame_prompt
from perception.tiny_vlm import build_tiny_vlm
from tests.local_http import LocalHTTPServer, send_json

torch.set_num_threads(1)

TEXTS = ["The red building is to the left of the agent, a bridge ahead-right, trees below."] * 20


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("models")
    tokenizer = train_tokenizer(TEXTS, root / "tokenizer", vocab_size=1024)
    return build_tiny_vlm(tokenizer, root / "vlm", seed=0)


@pytest.fixture(scope="module")
def keyframes(realdata):
    video = realdata / "urbanvideo_bench" / "videos" / "AerialVLN_1_30BUDKLTXMTIKYKFIPPOXCMISXQE5S.mp4"
    return extract_keyframes(str(video), KeyframeConfig())


@pytest.fixture(scope="module")
def engine(tiny_vlm):
    return make_vlm_engine(VLMConfig(engine="transformers", max_new_tokens=12, batch_size=4), tiny_vlm)


def test_tiny_vlm_is_a_real_qwen2_5_vl_folder(tiny_vlm, tmp_path):
    from transformers import AutoConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    folder = Path(tiny_vlm)
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "qwen2_5_vl" and config.architectures == ["Qwen2_5_VLForConditionalGeneration"]
    assert {"model.safetensors", "tokenizer.json", "preprocessor_config.json", "config.json"} <= {p.name for p in folder.iterdir()}
    processor = Qwen2VLImageProcessorPil.from_pretrained(folder)
    grid = processor(images=[np.zeros((112, 112, 3), np.uint8)], return_tensors="pt")["image_grid_thw"]
    assert grid.tolist() == [[1, 8, 8]]
    meta = json.loads((folder / "tiny_model.json").read_text())
    assert 100_000 < meta["parameters"] < 1_000_000, meta
    # Reused, not rebuilt: the existing folder is returned untouched.
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_vlm(str(folder.parent / "tokenizer"), folder, seed=1) == str(folder)
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".vlm.")], "no temp folders left behind"


def test_transformers_engine_generates_from_real_keyframes(engine, keyframes):
    requests = build_requests(keyframes, None)
    assert len(requests) == len(keyframes.indices)
    assert [len(r.images) for r in requests] == [1] + [2] * (len(requests) - 1)
    started = time.perf_counter()
    texts = engine.generate(requests)
    elapsed = time.perf_counter() - started
    assert len(texts) == len(requests) and all(isinstance(t, str) for t in texts)
    assert engine.stats.requests == len(requests) and engine.stats.batches == -(-len(requests) // 4)
    assert engine.generate(requests) == texts, "greedy generation is reproducible"
    print(f"\n{len(requests)} requests on real key frames in {elapsed:.2f}s; sample: {texts[1]!r}")


def test_batched_generation_equals_one_by_one(engine, keyframes):
    requests = build_requests(keyframes, "Where is the bridge?")[:4]
    batched = engine.generate(requests)
    single = [engine.generate([request])[0] for request in requests]
    assert batched == single


def test_images_change_what_the_model_says(engine, keyframes):
    prompt = first_frame_prompt(None)
    image = keyframes.images[0]
    outputs = {engine.generate([VLMRequest([candidate], prompt)])[0]
               for candidate in (image, 255 - image, np.zeros_like(image), cv2.flip(image, 0))}
    assert len(outputs) > 1, "the vision tower's features reach the language model"


def test_image_tokens_are_expanded_per_image(engine):
    prompts = ["<|image_pad|> a <|image_pad|>", "b <|image_pad|>"]
    grid = torch.tensor([[1, 8, 8], [1, 4, 4], [1, 8, 8]])
    expanded = engine._expand_image_tokens(prompts, grid)
    assert expanded[0].count("<|image_pad|>") == 16 + 4 and expanded[1].count("<|image_pad|>") == 16
    with pytest.raises(ValueError):
        engine._expand_image_tokens(prompts, grid[:2])


def test_describer_in_process(tiny_vlm, realdata):
    video = realdata / "urbanvideo_bench" / "videos" / "AerialVLN_1_30BUDKLTXMTIKYKFIPPOXCMISXQE5S.mp4"
    cfg = PerceptionConfig(vlm=VLMConfig(max_new_tokens=8))
    describer = Describer(cfg, tiny_vlm)
    description = describer.describe_video(str(video), None)
    expected = extract_keyframes(str(video), cfg.keyframes)
    assert description.keyframe_indices == expected.indices and description.keyframe_frames == expected.frames
    assert len(description.frames) == len(expected.indices) == describer.num_requests
    assert len(description.to_text().splitlines()) == len(expected.indices)
    assert description.to_text().startswith("Frame 0: Observe:")
    failed = describer.try_describe_video(str(video.parent / "missing.mp4"))
    assert failed.description is None and "missing.mp4" in failed.error and failed.error.startswith("bad video")
    assert describer.num_requests == len(expected.indices), "a bad video costs no VLM request"


def test_unknown_engine_is_rejected():
    with pytest.raises(ValueError, match="unknown vlm.engine"):
        make_vlm_engine(VLMConfig(engine="magic"), "x")


# ------------------------------------------------------------------------------------------ vLLM (GPU only)


def test_vllm_engine_on_gpu(tiny_vlm, keyframes):
    if not torch.cuda.is_available():
        pytest.skip("vLLM engine needs CUDA; this machine has no GPU")
    pytest.importorskip("vllm", reason="vLLM is not installed (the `gpu` extra)")
    engine = make_vlm_engine(VLMConfig(engine="vllm", max_new_tokens=8, gpu_memory_utilization=0.3, max_model_len=2048), tiny_vlm)
    requests = build_requests(keyframes, None)
    texts = engine.generate(requests)
    assert len(texts) == len(requests) and all(isinstance(t, str) for t in texts)
    assert engine.generate(requests) == texts


def test_vllm_engine_without_vllm_says_why(without_vllm):
    with pytest.raises(RuntimeError, match="gpu"):
        make_vlm_engine(VLMConfig(engine="vllm"), "some/model")


# -------------------------------------------------------------------------- OpenAI-compatible HTTP engine

# The engine uses the openai client library, an optional extra; CI installs it (".[test,openai]").
needs_openai = pytest.mark.skipif(
    importlib.util.find_spec("openai") is None, reason="needs the openai client library: pip install '.[openai]'"
)


class FakeChatServer:
    """A local OpenAI-compatible endpoint for the HTTP client's unit tests: records requests, fails on demand."""

    def __init__(self, fail_first: int = 0, status: int = 503, delay_s: float = 0.0) -> None:
        self.fail_first, self.status, self.delay_s = fail_first, status, delay_s
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()

        def on_post(handler, body: dict) -> None:
            with self.lock:
                self.bodies.append(body)
                self.headers.append({k.lower(): v for k, v in handler.headers.items()})  # names are case-free
                attempt = len(self.bodies)
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            try:
                time.sleep(self.delay_s)
                if attempt <= self.fail_first:
                    handler.send_response(self.status)
                    handler.send_header("Retry-After", "0")
                    handler.end_headers()
                    handler.wfile.write(b'{"error": "busy"}')
                    return
                text = body["messages"][-1]["content"][0]["text"][:20]
                send_json(handler, 200, {"choices": [{"message": {"role": "assistant", "content": f"1. Move forward\n2. {text}"}}]})
            finally:
                with self.lock:
                    self.active -= 1

        self._http = LocalHTTPServer(on_post)
        self.url = self._http.url

    def close(self) -> None:
        self._http.close()


@pytest.fixture
def secret(monkeypatch) -> str:
    key = "sk-test-" + os.urandom(8).hex()
    monkeypatch.setenv("EMBODIED_R_TEST_KEY", key)
    return key


def openai_cfg(url: str, **overrides) -> VLMConfig:
    return VLMConfig(engine="openai", base_url=url, api_key_env="EMBODIED_R_TEST_KEY", **overrides)


@needs_openai
def test_openai_engine_sends_lossless_png_and_the_key(keyframes, secret):
    server = FakeChatServer()
    try:
        engine = make_vlm_engine(openai_cfg(server.url, image_size=0), "qwen2.5-vl-72b")
        requests = build_requests(keyframes, "Where is the bridge?")[:3]
        texts = engine.generate(requests)
        assert [t.splitlines()[0] for t in texts] == ["1. Move forward"] * 3
        assert len(server.bodies) == 3
        assert all(body["model"] == "qwen2.5-vl-72b" and body["temperature"] == 0.0 for body in server.bodies)
        # Requests run concurrently: find the first-frame one (its prompt is unique) among what the server got.
        (content,) = [b["messages"][-1]["content"] for b in server.bodies if b["messages"][-1]["content"][0]["text"] == requests[0].prompt]
        assert len(content) == 2, "prompt text, then one image"
        url = content[1]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        decoded = cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), keyframes.images[0]), "PNG is lossless"
        assert all(h.get("authorization") == f"Bearer {secret}" for h in server.headers)
        assert secret not in repr(engine)
    finally:
        server.close()


@needs_openai
def test_openai_engine_retries_transient_failures(keyframes, secret, caplog):
    server = FakeChatServer(fail_first=2, status=503)
    try:
        engine = make_vlm_engine(openai_cfg(server.url, max_concurrency=1, max_retries=3), "m")
        with caplog.at_level(logging.WARNING):
            texts = engine.generate([VLMRequest([keyframes.images[0]], "describe")])
        assert texts[0].startswith("1. Move forward") and len(server.bodies) == 3
        assert "HTTP 503" in caplog.text and secret not in caplog.text
    finally:
        server.close()


@needs_openai
def test_openai_engine_gives_up_with_a_clear_error(keyframes, secret, caplog):
    from perception.engines.openai_vlm import VLMRequestError

    server = FakeChatServer(fail_first=100, status=503)
    unauthorised = FakeChatServer(fail_first=100, status=401)
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(VLMRequestError, match="after 3 attempts"):
            make_vlm_engine(openai_cfg(server.url, max_retries=2), "m").generate([VLMRequest([], "hi")])
        with pytest.raises(VLMRequestError, match="HTTP 401.*EMBODIED_R_TEST_KEY") as caught:
            make_vlm_engine(openai_cfg(unauthorised.url, max_retries=5), "m").generate([VLMRequest([], "hi")])
        assert len(unauthorised.bodies) == 1, "a 401 is not retried"
        assert secret not in str(caught.value) and secret not in caplog.text
    finally:
        server.close()
        unauthorised.close()
    with pytest.raises(VLMRequestError):  # nothing listens there: connection refused, retried, then reported
        make_vlm_engine(openai_cfg(server.url, max_retries=1, timeout_s=2.0), "m").generate([VLMRequest([], "hi")])


@needs_openai
def test_openai_engine_bounds_concurrency(secret):
    server = FakeChatServer(delay_s=0.05)
    try:
        engine = make_vlm_engine(openai_cfg(server.url, max_concurrency=3), "m")
        texts = engine.generate([VLMRequest([], f"request {i}") for i in range(12)])
        assert [t.split("\n2. ")[1] for t in texts] == [f"request {i}" for i in range(12)], "order is kept"
        assert 1 < server.max_active <= 3
    finally:
        server.close()


def test_openai_engine_needs_a_url():
    with pytest.raises(ValueError, match="base_url"):
        make_vlm_engine(VLMConfig(engine="openai"), "m")
