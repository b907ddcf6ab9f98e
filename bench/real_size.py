"""Where a GRPO step's time goes at real size, float32 beside bfloat16 in one run: matmul rates on each of the model's
linear layers (q, k, v, o, gate, up, down, the LM head: each [tokens x in] by its [out x in] weight, into a
preallocated output, as nn.Linear computes it),
the decode bound from memory bandwidth, generation tokens/s (HFEngine, the per-row seeded sampler against greedy), and
the learner's forward+backward over a packed GRPO batch (learner.batch.completion_logprobs) with its executed FLOP/s.

    python -m bench.real_size                                   # smollm2-135m-instruct, 2 threads
    python -m bench.real_size --model /path/to/folder --threads 1 --json out.json

The workload (printed with the results): `--prompts` prompts of `--prompt-tokens` tokens (synthetic frame text), G =
`--samples` completions each of exactly `--new-tokens` tokens (EOS suppressed, so both dtypes do the same work), at
temperature 1.0. Every figure is the median of `--repeats` timed calls after one untimed call, the two dtypes
interleaved call by call so that other load on a shared machine falls on both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path[:1] != [str(REPO)]:  # bench/engines.py must not shadow the engines package
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

DTYPES = ("float32", "bfloat16")


def median_seconds(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def linear_shapes(config) -> dict[str, tuple[int, int, int]]:
    """The model's linear layers: name -> (in features, out features, how many the model has)."""
    hidden, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (hidden // config.num_attention_heads)
    return {"q": (hidden, hidden, layers), "k": (hidden, kv, layers), "v": (hidden, kv, layers),
            "o": (hidden, hidden, layers), "gate": (hidden, inner, layers), "up": (hidden, inner, layers),
            "down": (inner, hidden, layers), "lm_head": (hidden, config.vocab_size, 1)}


def matmul_rates(config, tokens: int, repeats: int) -> dict:
    """GFLOP/s of each linear layer's product over `tokens` rows ([tokens x in] @ [out x in]^T into a preallocated
    [tokens x out], the layout nn.Linear uses; a fresh output every call would time the allocator's page faults)."""
    rates = {}
    for dtype in DTYPES:
        torch_dtype = getattr(torch, dtype)
        for name, (k, n, _) in linear_shapes(config).items():
            x, w = torch.randn(tokens, k, dtype=torch_dtype), torch.randn(n, k, dtype=torch_dtype)
            out = torch.empty(tokens, n, dtype=torch_dtype)
            seconds = median_seconds(lambda: torch.matmul(x, w.t(), out=out), repeats)
            rates[f"{name}/{dtype}"] = 2 * tokens * k * n / seconds / 1e9
    return rates


def matmul_seconds(config, rates: dict, dtype: str, body_tokens: int, head_tokens: int) -> float:
    """How long a forward and backward pass's linear layers take at the measured rates: each layer's 6 FLOPs a weight
    a token (forward, and the two backward products, at the forward shape's rate) over the tokens it runs."""
    seconds = 0.0
    for name, (k, n, count) in linear_shapes(config).items():
        tokens = head_tokens if name == "lm_head" else body_tokens
        seconds += 6 * k * n * count * tokens / (rates[f"{name}/{dtype}"] * 1e9)
    return seconds


def bandwidth_gb_s(repeats: int) -> float:
    """Memory bandwidth of a 512 MB copy (read + write)."""
    source = torch.empty(128 << 20, dtype=torch.float32)
    target = torch.empty_like(source)
    seconds = median_seconds(lambda: target.copy_(source), repeats)
    return 2 * source.numel() * 4 / seconds / 1e9


def prompts_of(tokenizer, count: int, length: int) -> list[list[int]]:
    text = " ".join(f"Frame {i}: After rotate left, Observe: a red chair is ahead-left of you, a lamp to the right."
                    for i in range(64))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [ids[i * 7 : i * 7 + length] for i in range(count)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.real_size", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a model reference (a name, a folder)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--samples", type=int, default=4, help="G")
    parser.add_argument("--prompt-tokens", type=int, default=300)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from engines.model_refs import resolve
    from learner.batch import Sample, completion_logprobs, pack
    from rollout.config import SamplingConfig
    from rollout.engines.hf_engine import HFEngine
    from transformers import AutoModelForCausalLM

    path = resolve(args.model, key="--model")
    engines = {dtype: HFEngine(path, dtype=dtype, generate_batch_size=args.prompts * args.samples) for dtype in DTYPES}
    config = engines["float32"].model.config
    params = sum(p.numel() for p in engines["float32"].model.parameters())
    for engine in engines.values():  # exactly --new-tokens each: the same work in both dtypes
        engine.eos_token_ids = []
        engine.model.generation_config.eos_token_id = None
    prompts = prompts_of(engines["float32"].tokenizer, args.prompts, args.prompt_tokens)
    sampled = SamplingConfig(num_samples=args.samples, temperature=1.0, max_new_tokens=args.new_tokens)
    greedy = SamplingConfig(num_samples=args.samples, temperature=0.0, max_new_tokens=args.new_tokens)
    rows = args.prompts * args.samples
    results: dict = {"workload": {**{k: v for k, v in vars(args).items() if k != "json"}, "model_path": path,
                                  "parameters": params}}
    tokens_run = args.prompts * args.prompt_tokens + rows * args.new_tokens  # the learner's body tokens (shared prompts)
    results["matmul_gflops"] = matmul_rates(config, tokens_run, args.repeats)
    results["bandwidth_gb_s"] = bandwidth_gb_s(args.repeats)

    generated = rows * args.new_tokens
    for dtype, engine in engines.items():
        weight_bytes = params * engine.model.dtype.itemsize
        decode_bound = results["bandwidth_gb_s"] * 1e9 / weight_bytes * rows  # tokens/s if each step reads every weight once
        seconds = median_seconds(lambda: engine.generate(prompts, sampled, list(range(args.prompts))), args.repeats)
        greedy_s = median_seconds(lambda: engine.generate(prompts, greedy, 0), args.repeats)
        results[f"generate/{dtype}"] = {"tokens_per_s": generated / seconds, "greedy_tokens_per_s": generated / greedy_s,
                                        "decode_bound_tokens_per_s": decode_bound}

    completions = engines["float32"].generate(prompts, sampled, list(range(args.prompts)))
    samples = [Sample(c.prompt_token_ids, c.token_ids, c.logprobs, 1.0) for group in completions for c in group]
    batch = pack(samples, pad_id=engines["float32"].tokenizer.pad_token_id or 0)
    # 2 FLOPs a parameter a token forward, 4 backward: the body over every token run (each shared prompt once), the
    # (tied) LM head only over the completion positions whose log-probs are read; attention's products left out.
    head = config.vocab_size * config.hidden_size
    executed = 6 * ((params - head) * tokens_run + head * rows * args.new_tokens)
    for dtype in DTYPES:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).train()

        def step(model=model):
            model.zero_grad(set_to_none=True)
            (completion_logprobs(model, batch, 1.0) * batch.completion_mask).sum().backward()

        seconds = median_seconds(step, args.repeats)
        rate = executed / seconds / 1e9
        at_matmul_rate = matmul_seconds(config, results["matmul_gflops"], dtype, tokens_run, rows * args.new_tokens)
        # The share of the matmul rate the learner reaches: its linear layers' time at the measured per-layer rates
        # over its whole forward+backward (attention, norms, the optimizer-free rest and overheads included).
        results[f"learner/{dtype}"] = {"fwd_bwd_s": seconds, "executed_gflops": rate,
                                       "matmul_only_s": at_matmul_rate, "of_matmul_rate": at_matmul_rate / seconds}

    print(json.dumps(results, indent=2))
    print(f"\n{args.model}: {params / 1e6:.1f}M parameters, {args.threads} thread(s), {args.prompts} prompts x G "
          f"{args.samples}, {args.prompt_tokens} + {args.new_tokens} tokens; memory {results['bandwidth_gb_s']:.1f} GB/s")
    print("matmul GFLOP/s per linear layer: " + "; ".join(
        f"{dtype} " + ", ".join(f"{name} {results['matmul_gflops'][f'{name}/{dtype}']:.0f}" for name in linear_shapes(config))
        for dtype in DTYPES))
    print(f"{'':10} {'gen tok/s':>10} {'greedy tok/s':>13} {'decode bound':>13} "
          f"{'fwd+bwd s':>10} {'matmuls alone s':>16} {'learner GFLOP/s':>16} {'of matmul rate':>15}")
    for dtype in DTYPES:
        gen, learn = results[f"generate/{dtype}"], results[f"learner/{dtype}"]
        print(f"{dtype:10} {gen['tokens_per_s']:10.1f} "
              f"{gen['greedy_tokens_per_s']:13.1f} {gen['decode_bound_tokens_per_s']:13.0f} {learn['fwd_bwd_s']:10.2f} "
              f"{learn['matmul_only_s']:16.2f} {learn['executed_gflops']:16.1f} {learn['of_matmul_rate']:15.0%}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
