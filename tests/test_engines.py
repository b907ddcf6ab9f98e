"""The shared engine layer (engines/): one dtype naming for every engine's config, EOS/pad resolution, the chat prompt,
batching and left padding, the vLLM device arguments and its missing-vLLM error, and its place below the layers that
use it."""

from __future__ import annotations

import ast
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from engines.batching import batches, left_pad
from engines.loading import DTYPE_NAMES, chat_prompt, resolve_dtype, special_tokens
from engines.vllm_backend import CPU_ENV, VLLMUnavailableError, build_llm, vllm_device_kwargs

REPO = Path(__file__).resolve().parents[1]


def test_dtype_names_are_the_configs_choices_and_resolve_to_torch_dtypes():
    from perception.config import VLM_DTYPES
    from rewards.config import JUDGE_DTYPES
    from rollout.config import ENGINE_DTYPES

    # One naming: every engine config accepts exactly the names the loader resolves.
    assert set(ENGINE_DTYPES) == set(JUDGE_DTYPES) == set(VLM_DTYPES) == set(DTYPE_NAMES)
    assert resolve_dtype("bfloat16", "rollout.dtype") is torch.bfloat16
    assert resolve_dtype("float16", "x.dtype") is torch.float16 and resolve_dtype("float32", "x.dtype") is torch.float32
    assert resolve_dtype("auto", "rollout.dtype") == "auto"  # from_pretrained: the checkpoint's own dtype
    assert resolve_dtype("auto", "vlm.dtype", auto=torch.bfloat16) is torch.bfloat16
    with pytest.raises(ValueError, match="judge.dtype must be one of auto, float32, bfloat16, float16, got 'float64'"):
        resolve_dtype("float64", "judge.dtype")


def _tokenizer(eos=None, pad=None, template=None):
    return SimpleNamespace(eos_token_id=eos, pad_token_id=pad, chat_template=template, name_or_path="tok",
                           apply_chat_template=lambda messages, tokenize, add_generation_prompt: f"<{messages[-1]['content']}>")


def test_special_tokens_unite_the_eos_ids_and_fall_back_for_pad():
    config = SimpleNamespace(eos_token_id=[7, 3], pad_token_id=None)
    tokens = special_tokens("m", _tokenizer(eos=5, pad=9), config)
    assert tokens.eos_token_ids == [3, 5, 7] and tokens.pad_token_id == 9  # the tokenizer's pad when the config has none
    assert special_tokens("m", _tokenizer(eos=5, pad=9), SimpleNamespace(eos_token_id=4, pad_token_id=2)).pad_token_id == 2
    assert special_tokens("m", _tokenizer(eos=5), SimpleNamespace(eos_token_id=8, pad_token_id=None)).pad_token_id == 5
    with pytest.raises(ValueError, match="model m: neither its generation config nor its tokenizer names an EOS"):
        special_tokens("m", _tokenizer(), SimpleNamespace(eos_token_id=None, pad_token_id=None))


def test_special_tokens_read_the_checkpoint_when_no_model_is_loaded(tmp_path):
    from transformers import GenerationConfig

    GenerationConfig(eos_token_id=[11, 12], pad_token_id=0).save_pretrained(tmp_path)
    assert special_tokens(str(tmp_path), _tokenizer(eos=12)).eos_token_ids == [11, 12]
    assert special_tokens(str(tmp_path / "no_generation_config"), _tokenizer(eos=12)).eos_token_ids == [12]


def test_chat_prompt_uses_the_template_else_the_fallback_else_says_why():
    messages = [{"role": "user", "content": "hi"}]
    assert chat_prompt(_tokenizer(template="{{ x }}"), messages, fallback="plain") == "<hi>"
    assert chat_prompt(_tokenizer(), messages, fallback="plain") == "plain"
    assert chat_prompt(None, messages, fallback="plain") == "plain"
    with pytest.raises(ValueError, match="tokenizer 'tok' has no chat template"):
        chat_prompt(_tokenizer(), messages)


def test_batches_keep_order_and_left_pad_right_aligns_every_prompt():
    assert [list(b) for b in batches(list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batches([], 4)) == []
    with pytest.raises(ValueError, match="at least 1"):
        list(batches([1], 0))
    input_ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert input_ids.dtype == mask.dtype == torch.long


def test_vllm_device_kwargs_differ_where_the_builds_do(monkeypatch):
    for key in CPU_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")  # an operator's value wins
    assert vllm_device_kwargs("cpu", gpu_memory_utilization=0.5) == {"distributed_executor_backend": "uni", "enforce_eager": True}
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and os.environ["VLLM_CPU_KVCACHE_SPACE"] == "4"
    with pytest.raises(ValueError, match="tensor_parallel_size 1"):
        vllm_device_kwargs("cpu", tensor_parallel_size=2)
    assert vllm_device_kwargs("cuda", gpu_memory_utilization=0.5, enforce_eager=True) == {
        "gpu_memory_utilization": 0.5, "enforce_eager": True,
    }
    with pytest.raises(ValueError, match="'cuda' or 'cpu'"):
        vllm_device_kwargs("tpu")


def test_build_llm_without_vllm_names_the_engine_key(without_vllm):
    with pytest.raises(VLLMUnavailableError, match=r"judge.engine=vllm needs vLLM 0.30-0.32: pip install '.\[gpu\]'") as caught:
        build_llm("some/model", "judge.engine", device="cuda")
    assert isinstance(caught.value, ImportError) and isinstance(caught.value, RuntimeError)
    with pytest.raises(ValueError, match="judge.dtype must be one of"):  # checked before anything starts
        build_llm("some/model", "judge.engine", dtype="float64", device="cuda")


FORBIDDEN = {"rollout", "rewards", "perception", "learner", "cluster"}


def test_engines_import_no_layer_above_them():
    for path in sorted((REPO / "engines").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            )
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_openai_client_reads_the_named_key_and_refuses_a_missing_url(monkeypatch, caplog):
    pytest.importorskip("openai", reason="the openai client is the `openai` extra")
    from engines.openai_backend import openai_client

    with pytest.raises(ValueError, match=r"vlm.engine=openai needs vlm.base_url"):
        openai_client("vlm.engine", "", "EMBODIED_R_TEST_KEY", 5.0, 1)
    monkeypatch.setenv("EMBODIED_R_TEST_KEY", "sk-test-123")
    client = openai_client("judge.engine", "http://127.0.0.1:9/v1", "EMBODIED_R_TEST_KEY", 5.0, 3)
    assert (client.api_key, client.max_retries, client.timeout) == ("sk-test-123", 3, 5.0)
    monkeypatch.delenv("EMBODIED_R_TEST_KEY")
    with caplog.at_level("WARNING"):
        assert openai_client("judge.engine", "http://127.0.0.1:9/v1", "EMBODIED_R_TEST_KEY", 5.0, 0).api_key == "EMPTY"
    assert "EMBODIED_R_TEST_KEY is not set" in caplog.text


def test_what_an_engine_can_do_is_declared_on_its_class_not_branched_on_its_name():
    """Pools and commands read engines.base.Engine's capabilities (tensor_parallel, local_model, torch_threads); an
    engine's name is compared only in its family's factory."""
    import re
    from pathlib import Path

    from perception.config import PerceptionConfig, VLMConfig
    from perception.engines import vlm_engine_class
    from perception.pool import replica_tensor_parallel_size
    from rewards.judge import judge_class
    from rollout.config import RolloutConfig
    from rollout.engines import engine_class
    from rollout.pool import worker_tensor_parallel_size

    assert (engine_class("vllm").tensor_parallel, engine_class("transformers").tensor_parallel) == (True, False)
    assert worker_tensor_parallel_size(RolloutConfig(engine="vllm", tensor_parallel_size=4)) == 4
    assert worker_tensor_parallel_size(RolloutConfig(engine="transformers", tensor_parallel_size=4)) == 1
    assert replica_tensor_parallel_size(PerceptionConfig(vlm=VLMConfig(engine="vllm", tensor_parallel_size=2))) == 2
    assert replica_tensor_parallel_size(PerceptionConfig(vlm=VLMConfig(engine="openai", tensor_parallel_size=2))) == 1
    assert [vlm_engine_class(name).local_model for name in ("transformers", "vllm", "openai")] == [True, True, False]
    assert [judge_class(name).local_model for name in ("transformers", "vllm", "openai")] == [True, True, False]
    assert [cls.torch_threads for cls in (engine_class("transformers"), vlm_engine_class("transformers"),
                                          judge_class("transformers"), engine_class("vllm"), judge_class("openai"))] \
        == [True, True, True, False, False]

    root = Path(__file__).resolve().parents[1]
    factories = {root / "rollout/engines/__init__.py", root / "perception/engines/__init__.py"}
    branch = re.compile(r"""\bengine\s*(==|!=)\s*["'](transformers|vllm|openai)["']""")
    offenders = [f"{path.relative_to(root)}:{number}" for folder in ("cluster", "rollout", "perception", "rewards", "engines", "learner")
                 for path in sorted((root / folder).rglob("*.py")) if path not in factories
                 for number, line in enumerate(path.read_text().splitlines(), 1) if branch.search(line)]
    assert offenders == []


@pytest.mark.parametrize("installed, build, gpus, expected", [
    (False, "cpu", 0.0, "transformers"), (False, "cuda", 1.0, "transformers"),
    (True, "cpu", 0.0, "vllm"), (True, "cpu", 1.0, "transformers"),
    (True, "cuda", 1.0, "vllm"), (True, "cuda", 0.0, "transformers"),
])
def test_auto_rollout_engine_is_vllm_only_where_the_installed_build_runs_on_the_workers_device(
        monkeypatch, installed, build, gpus, expected):
    import importlib.util

    from engines import vllm_backend
    from rollout.config import RolloutConfig
    from rollout.engines import engine_class, resolve_engine

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: (object() if installed else None) if name == "vllm" else real_find_spec(name, *rest))
    monkeypatch.setattr(vllm_backend, "vllm_device", lambda: build)
    assert resolve_engine(RolloutConfig(engine="auto", num_gpus_per_replica=gpus)) == expected
    assert resolve_engine(RolloutConfig(engine="transformers", num_gpus_per_replica=gpus)) == "transformers"
    with pytest.raises(ValueError, match="rollout.engine=auto names no engine class: resolve it first"):
        engine_class("auto")
