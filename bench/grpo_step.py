"""Our GRPO step against TRL's GRPOTrainer on the same workload, at the same core budget, timed interleaved in one run.

    python -m bench.grpo_step                                   # both pairings, TRL from /tmp/trl-env if it is there
    python -m bench.grpo_step --threads 1 --rounds 3 --steps 3 --trl-python /tmp/trl-env/bin/python
    python -m bench.grpo_step --quick --no-trl                  # a smoke test of our side (tests/test_bench_grpo_step_smoke.py)
    python -m bench.grpo_step --policy smollm2-135m-instruct --dtype bfloat16 --prompts 2 --samples 4 --new-tokens 48
                                                                # at real size (issue 24), both sides in bfloat16

TRL runs in its own virtual environment (it must not disturb ours), as a subprocess with that interpreter::

    python3 -m venv /tmp/trl-env && /tmp/trl-env/bin/pip install -c constraints-cpu.txt trl==1.16.0 datasets accelerate

The workload (printed with the results): a Qwen2 causal LM with random weights built by cluster/tiny_models.py
(hidden 256, MLP 688, 4 layers, 4 heads, 2 KV heads, a byte-level BPE of `--vocab-size` tokens trained here, float32),
`--prompts` prompts of about `--prompt-tokens` tokens, G = `--samples` completions each of exactly `--new-tokens`
tokens at temperature 1.0 (EOS held back on both sides: sampling.min_new_tokens, TRL's generation_kwargs, so an
instruct model's early stops cannot make one side's work smaller), GRPO with a k3 KL (beta 0.001) to a frozen reference, lr 1e-5, one update per batch, and
a trivial reward (the fraction of distinct tokens in a completion) on both sides.

The pairings (`--threads`):

- 1: TRL with 1 torch thread against ours synchronous (trainer.max_staleness=0): one rollout worker and one learner
  rank of 1 thread each, never running at the same time;
- 2: TRL with 2 torch threads against ours asynchronous (trainer.max_staleness=1): the same two 1-thread actors, the
  next step's rollouts generated while this step learns.

Ours is the real thing: cluster/driver.py's TrainingPools (a Ray RolloutPool of HFEngine workers, a DeepSpeed ZeRO-2
LearnerGroup with its frozen reference, the gloo WeightSync) driven by cluster/stages.py's RolloutPipeline, as the
training loop drives them (only the reward is the trivial one). TRL is GRPOTrainer (gradient checkpointing and bf16,
its defaults, turned off: fp32 without recomputation, as ours), one generation batch per optimiser step.

Timing: the two systems take turns in blocks of `--steps` steps (a first block of `--warmup-steps` each is not timed),
so that the load of a shared machine falls on both alike; while one runs, the other waits idle. A TRL step is
on_step_begin to on_step_end (generation, reference and policy passes, optimiser step). Our step is the training
loop's: rollouts, reward, learner step, weight broadcast. Asynchronous blocks start with an empty pipeline, so their
first step is not timed (it waits for a whole generation): the figure is the steady state a long run sees.

Learner FLOPs are counted analytically: 2 x parameters x tokens for a forward pass (transformer body over every token
it runs, the tied LM head only over completion positions), x3 for the policy's forward and backward, plus the
reference's forward; attention's score/value products are left out (under 5% here). "TRL-equivalent" counts the
work of running every sequence whole, as TRL does; "executed" counts what our learner runs (each group's shared
prompt once per micro-batch, learner/batch.py). The learner's achieved FLOP/s (executed FLOPs over its step time)
stands beside a 1-thread matmul rate measured on the same shapes in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TRL_PYTHON = "/tmp/trl-env/bin/python"
MARK = "GRPO_BENCH "  # prefixes the TRL worker's protocol lines (the Trainer prints its logs to stdout too)

WORDS = ("left right ahead behind above below chair lamp door table sofa window shelf plant bed desk rug stairs "
         "move forward backward rotate tilt turn observe frame after question where relative of the a is you").split()


def trivial_reward(token_ids: list[int]) -> float:
    """The fraction of distinct tokens in a completion: cheap, deterministic, and different across a group."""
    return len(set(token_ids)) / max(len(token_ids), 1)


# ---------------------------------------------------------------------------------------------------- the workload


def build_workload(root: Path, args: argparse.Namespace) -> tuple[str, list[str], list[list[int]]]:
    """The policy (`--policy`, or a tiny one built here with its tokenizer) and the prompt pool: (model folder, prompt
    texts, their token ids)."""
    from transformers import AutoTokenizer

    from cluster.tiny_models import build_tiny_causal_lm, train_tokenizer

    rng = random.Random(0)
    # Made-up words as well as the prompt words, so that the BPE has enough distinct text to reach --vocab-size.
    letters = "abcdefghijklmnopqrstuvwxyz"
    coined = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(6000)]
    if args.policy:
        from engines.model_refs import resolve

        model_path = resolve(args.policy, key="--policy")
    else:
        lines = 1500 if args.vocab_size > 1024 else 300  # a small vocabulary (--quick) needs less text
        corpus = [" ".join(rng.choice(coined + list(WORDS)) for _ in range(40)) for _ in range(lines)]
        tokenizer_dir = train_tokenizer(corpus, root / "tokenizer", vocab_size=args.vocab_size)
        model_path = build_tiny_causal_lm(
            tokenizer_dir, root / "policy", seed=0, hidden_size=args.hidden_size, num_layers=args.layers,
            num_heads=args.heads, num_kv_heads=args.kv_heads, intermediate_size=args.intermediate_size,
        )
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    texts, ids = [], []
    for index in range(args.prompts * 4):  # a pool of distinct prompts; each step draws --prompts of them
        target = args.prompt_tokens + (index % 3 - 1) * 3
        words: list[str] = [f"Frame {index}:"]
        while len(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]) < target:
            words.append(rng.choice(WORDS + coined[:400]))
        text = " ".join(words)
        texts.append(text)
        ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return model_path, texts, ids


def model_sizes(model_path: str) -> dict:
    """Parameter counts for the FLOP count: the transformer body and the (tied) embedding / LM head."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    architecture = (config.architectures or [config.model_type])[0]
    model = AutoModelForCausalLM.from_pretrained(model_path)
    embedding = model.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())  # tied: the LM head is the embedding, counted once
    return {"architecture": architecture, "body": total - embedding, "head": embedding, "total": total, "hidden": config.hidden_size,
            "layers": config.num_hidden_layers, "heads": config.num_attention_heads, "kv_heads": config.num_key_value_heads,
            "intermediate": config.intermediate_size, "vocab": config.vocab_size}


def learner_flops(samples, micro_batch_size: int, sizes: dict) -> tuple[float, float]:
    """(TRL-equivalent FLOPs, FLOPs our learner executes) of one learner step on `samples` (one rank, in order)."""
    def forward(body_tokens: int, head_tokens: int) -> float:
        return 2.0 * sizes["body"] * body_tokens + 2.0 * sizes["head"] * head_tokens

    rows = len(samples)
    prompt_width = max(len(s.prompt_ids) for s in samples)
    completion_width = max(len(s.completion_ids) for s in samples)
    whole = forward(rows * (prompt_width + completion_width), rows * completion_width)
    executed = 0.0
    for start in range(0, rows, micro_batch_size):
        chunk = samples[start : start + micro_batch_size]
        width_p = max(len(s.prompt_ids) for s in chunk)
        width_c = max(len(s.completion_ids) for s in chunk)
        distinct = len({tuple(s.prompt_ids) for s in chunk})
        if distinct == len(chunk):
            executed += forward(len(chunk) * (width_p + width_c), len(chunk) * width_c)
        else:  # learner/batch.py: each distinct prompt once, then the completions but their last token
            executed += forward(distinct * width_p + len(chunk) * (width_c - 1), len(chunk) * width_c)
    return 4.0 * whole, 4.0 * executed  # policy forward + backward (3x) + reference forward (1x)


def matmul_rate(sizes: dict, tokens: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of one thread on the learner's matmul shapes (attention and MLP projections, LM head) at `tokens` rows."""
    import torch

    hidden, inter, vocab = sizes["hidden"], sizes["intermediate"], sizes["vocab"]
    kv = hidden * sizes["kv_heads"] // sizes["heads"]
    shapes = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden), (hidden, inter), (hidden, inter),
              (inter, hidden), (hidden, vocab)]
    operands = [(torch.randn(tokens, k), torch.randn(k, n)) for k, n in shapes]
    flops = sum(2.0 * tokens * k * n for k, n in shapes)
    best = []
    for _ in range(repeats):
        began = time.perf_counter()
        for x, w in operands:
            x @ w
        best.append(time.perf_counter() - began)
    return flops / statistics.median(best)


# ---------------------------------------------------------------------------------------------------- TRL's side


def trl_worker(args: argparse.Namespace) -> int:
    """Runs in TRL's environment: GRPOTrainer over the prompt pool, each block of steps released by the parent."""
    import torch

    torch.set_num_threads(args.threads_for_trl)
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    texts = json.loads(Path(args.prompts_file).read_text())
    total_steps = args.total_steps
    dataset = Dataset.from_dict({"prompt": [texts[i % len(texts)] for i in range(total_steps * args.prompts)]})

    def reward(completions, completion_ids, **_) -> list[float]:
        return [trivial_reward(list(ids)) for ids in completion_ids]

    class Gate(TrainerCallback):
        """Holds each step until the parent releases it ('run K' on stdin); reports each step's seconds."""

        def __init__(self) -> None:
            self.quota, self.began = 0, 0.0

        def on_step_begin(self, *_, **__):
            while self.quota == 0:
                line = sys.stdin.readline()
                if not line:
                    raise SystemExit("the parent went away")
                self.quota = int(line.split()[1])
            self.began = time.perf_counter()

        def on_step_end(self, *_, **__):
            print(MARK + json.dumps({"step_s": time.perf_counter() - self.began}), flush=True)
            self.quota -= 1

    with tempfile.TemporaryDirectory(prefix="trl_grpo_") as out:
        config = GRPOConfig(
            output_dir=out, per_device_train_batch_size=args.prompts * args.samples, gradient_accumulation_steps=1,
            num_generations=args.samples, max_completion_length=args.new_tokens, max_steps=total_steps,
            learning_rate=1e-5, beta=0.001, temperature=1.0, top_p=1.0, top_k=0, num_iterations=1,
            use_cpu=True, bf16=args.dtype == "bfloat16", fp16=False, gradient_checkpointing=False, shuffle_dataset=False,
            logging_steps=1, report_to=[], save_strategy="no", disable_tqdm=True, dataloader_num_workers=0, seed=0,
            generation_kwargs={"min_new_tokens": args.new_tokens},  # every completion is new_tokens long, as ours
        )
        trainer = GRPOTrainer(
            model=args.model, reward_funcs=reward, args=config, train_dataset=dataset,
            processing_class=AutoTokenizer.from_pretrained(args.model), callbacks=[Gate()],
        )
        import trl

        print(MARK + json.dumps({"ready": True, "trl": trl.__version__, "threads": torch.get_num_threads()}), flush=True)
        trainer.train()
    print(MARK + json.dumps({"done": True}), flush=True)
    return 0


class TRLProcess:
    """The TRL worker as a subprocess of `python` with `threads` torch threads (OMP_NUM_THREADS too)."""

    def __init__(self, python: str, threads: int, model_path: str, prompts_file: Path, total_steps: int,
                 args: argparse.Namespace, log_path: Path):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": ""}
        command = [python, "-u", str(Path(__file__).resolve()), "--trl-worker", "--model", model_path,
                   "--prompts-file", str(prompts_file), "--total-steps", str(total_steps),
                   "--threads-for-trl", str(threads), "--prompts", str(args.prompts), "--samples", str(args.samples),
                   "--new-tokens", str(args.new_tokens), "--dtype", args.dtype]
        self.log_path = log_path
        self.log = log_path.open("w")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                        text=True, env=env, cwd=tempfile.gettempdir())
        self.info = self._message()

    def _message(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        self.process.wait()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the TRL worker ended (rc {self.process.returncode}) before answering:\n{tail}")

    def run(self, steps: int) -> list[float]:
        self.process.stdin.write(f"run {steps}\n")
        self.process.stdin.flush()
        return [self._message()["step_s"] for _ in range(steps)]

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def trl_missing(python: str | None) -> str | None:
    """Why TRL cannot be run, or None."""
    if not python:
        return "no --trl-python given (--no-trl)"
    if not Path(python).exists():
        return f"{python} does not exist: make TRL's environment first (see this file's docstring)"
    probe = subprocess.run([python, "-c", "import trl, datasets"], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    if probe.returncode:
        return f"{python} cannot import trl and datasets: {probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else ''}"
    return None


# ---------------------------------------------------------------------------------------------------- our side


@dataclass
class BenchPrompt:
    token_ids: list[int]
    record: object = None


class Ours:
    """TrainingPools + RolloutPipeline on the workload: 1 rollout worker and 1 learner rank of 1 thread each."""

    def __init__(self, model_path: str, prompt_ids: list[list[int]], asynchronous: bool, args: argparse.Namespace):
        from cluster.config import load_config
        from cluster.models import ModelPaths
        from cluster.stages import RolloutPipeline
        from cluster.data import EpochSampler
        from cluster.driver import TrainingPools
        from learner.algo import make_algorithm

        overrides = [
            "ray.num_cpus=2", "rollout.num_replicas=1", "rollout.num_cpus_per_replica=1",
            f"rollout.generate_batch_size={args.prompts * args.samples}", f"sampling.num_samples={args.samples}",
            "sampling.temperature=1.0", "sampling.top_p=1.0", f"sampling.max_new_tokens={args.new_tokens}",
            f"sampling.min_new_tokens={args.new_tokens}",
            "sampling.max_prompt_tokens=4096", "learner.num_cpus_per_replica=1", "learner.lr=1e-5",
            "learner.warmup_ratio=0.0", f"learner.micro_batch_size={args.micro_batch_size}", "learner.grpo.beta=0.001",
            "rewards.judge.enabled=false", "rewards.stages=[{start: 0, format: 0.5, accuracy: 0.5, consistency: 0.0}]",
            f"trainer.max_staleness={1 if asynchronous else 0}",
            f"trainer.steps={10**6}", f"trainer.prompts_per_step={args.prompts}", "trainer.checkpoint_every=0",
            "weight_sync.verify=false", "trainer.progress=false", f"learner.dtype={args.dtype}",
            f"rollout.dtype={args.dtype}",
        ]
        # The typed DictConfig, as cluster code reads it (attribute access, and .get for keys a layer added lately).
        self.cfg = load_config(str(REPO / "configs" / "tiny.yaml"), overrides)
        self.pools = TrainingPools(self.cfg, ModelPaths(policy=model_path, judge=model_path, vlm=model_path))
        self.block_ends: set[int] = set()

        class BlockPipeline(RolloutPipeline):
            """Nothing is generated past the end of a block: the other system's turn finds our workers idle."""

            def is_barrier(inner, step: int) -> bool:  # noqa: N805
                return step in self.block_ends

        prompts = [BenchPrompt(ids) for ids in prompt_ids]
        self.pools.start()
        if hasattr(self.pools, "connect_workers"):  # the workers may still be loading when start() returns
            self.pools.connect_workers()
        self.pipeline = BlockPipeline(self.cfg, self.pools, EpochSampler(len(prompts), 0), prompts, 0)
        self.algorithm = make_algorithm(self.cfg.learner.grpo, args.new_tokens)
        self.samples_seen: list = []
        self.step = 0

    def run(self, steps: int) -> list[dict]:
        from learner.batch import Sample

        import torch

        self.block_ends.add(self.step + steps)
        rows = []
        for _ in range(steps):
            self.step += 1
            began = time.perf_counter()
            rollouts, synced = self.pipeline.rollouts(self.step)
            completions = rollouts.completions
            rewards = torch.tensor([trivial_reward(c.token_ids) for c in completions])
            advantages = self.algorithm.advantages(rewards, self.cfg.sampling.num_samples)
            samples = [Sample(c.prompt_token_ids, c.token_ids, c.logprobs, float(a), truncated=not c.finished,
                              policy_version=c.policy_version) for c, a in zip(completions, advantages.tolist())]
            learn_began = time.perf_counter()
            metrics = self.pools.learner.train_step(samples, current_version=self.step - 1)
            learn_s = time.perf_counter() - learn_began
            synced = {**synced, **self.pipeline.learned(self.step, True)}
            rows.append({
                "step_s": time.perf_counter() - began, "rollout_s": rollouts.wait_s, "generate_s": rollouts.generate_s,
                "learn_s": learn_s, "sync_s": synced.get("time/sync", 0.0), "loss": metrics["loss"], "kl": metrics["kl"],
                "generated_tokens": sum(len(c.token_ids) for c in completions), "first_of_block": not rows,
            })
            self.samples_seen = samples
        return rows

    def close(self) -> None:
        self.pools.close()


# ---------------------------------------------------------------------------------------------------- the run


def timed(rows: list[dict], asynchronous: bool) -> list[dict]:
    """The steps that count: an asynchronous block's first step waits for a whole generation (an empty pipeline)."""
    kept = [r for r in rows if not (asynchronous and r["first_of_block"])]
    return kept or rows


def run_pairing(threads: int, model_path: str, prompt_ids, prompts_file: Path, sizes: dict, args, trl_python: str | None,
                work: Path) -> dict:
    asynchronous = threads >= 2
    blocks = [args.warmup_steps] + [args.steps] * args.rounds
    trl = None
    if trl_python:
        trl = TRLProcess(trl_python, threads, model_path, prompts_file, sum(blocks), args, work / f"trl_{threads}.log")
    ours = Ours(model_path, prompt_ids, asynchronous, args)
    result = {"threads": threads, "ours_mode": "asynchronous" if asynchronous else "synchronous", "trl": [], "ours": [],
              "matmul_flops": [], "trl_info": trl.info if trl else None}
    try:
        for index, steps in enumerate(blocks):
            counted = index > 0
            # The order alternates per block, so neither system always runs right after the other.
            order = ("trl", "ours") if index % 2 == 0 else ("ours", "trl")
            for system in order:
                if system == "trl" and trl is not None:
                    seconds = trl.run(steps)
                    print(f"[{threads} thread(s), block {index}] TRL: " + " ".join(f"{x:.2f}" for x in seconds), file=sys.stderr)
                    if counted:
                        result["trl"].extend(seconds)
                elif system == "ours":
                    rows = ours.run(steps)
                    print(f"[{threads} thread(s), block {index}] ours: " + " ".join(
                        f"{r['step_s']:.2f} (rollout {r['rollout_s']:.2f} learn {r['learn_s']:.2f})" for r in rows), file=sys.stderr)
                    if counted:
                        result["ours"].extend(timed(rows, asynchronous) if steps > 1 else rows)
            if counted:
                result["matmul_flops"].append(matmul_rate(sizes))
        result["flops"] = learner_flops(ours.samples_seen, args.micro_batch_size, sizes)
    finally:
        ours.close()
        if trl is not None:
            trl.close()
    return result


def report(results: list[dict], workload: dict, trl_reason: str | None, load: tuple) -> str:
    med = statistics.median
    lines = ["workload: " + ", ".join(f"{k}={v}" for k, v in workload.items()),
             f"machine: {os.cpu_count()} cores; load average {load[0]:.2f} at the start, {load[1]:.2f} at the end "
             "(other processes share these cores: the ratio from one interleaved run is the figure to read)"]
    header = f"{'pairing':<22}{'system':<8}{'s/step':>8}{'(min-max)':>14}{'rollout':>9}{'learn':>8}{'sync':>7}{'n':>4}{'ours/TRL':>10}"
    lines.append(header)
    for r in results:
        label = f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}, ours {r['ours_mode'][:5]}"
        ours_s = med(x["step_s"] for x in r["ours"])
        if r["trl"]:
            trl_s = med(r["trl"])
            spread = f"({min(r['trl']):.2f}-{max(r['trl']):.2f})"
            lines.append(f"{label:<22}{'TRL':<8}{trl_s:>8.2f}{spread:>14}"
                         f"{'':>9}{'':>8}{'':>7}{len(r['trl']):>4}")
        ratio = f"{ours_s / trl_s:.2f}x" if r["trl"] else "-"
        steps = [x["step_s"] for x in r["ours"]]
        spread = f"({min(steps):.2f}-{max(steps):.2f})"
        lines.append(
            f"{label if not r['trl'] else '':<22}{'ours':<8}{ours_s:>8.2f}{spread:>14}"
            f"{med(x['rollout_s'] for x in r['ours']):>9.2f}{med(x['learn_s'] for x in r['ours']):>8.2f}"
            f"{med(x['sync_s'] for x in r['ours']):>7.3f}{len(steps):>4}{ratio:>10}"
        )
    for r in results:
        whole, executed = r["flops"]
        learn = med(x["learn_s"] for x in r["ours"])
        lines.append(
            f"learner ({r['threads']} thread pairing): {whole / 1e9:.0f} GFLOP/step TRL-equivalent, {executed / 1e9:.0f} "
            f"executed; achieved {executed / learn / 1e9:.1f} GFLOP/s executed ({whole / learn / 1e9:.1f} TRL-equivalent) "
            f"in {learn:.2f} s; 1-thread matmul on these shapes: {med(r['matmul_flops']) / 1e9:.1f} GFLOP/s "
            f"(min {min(r['matmul_flops']) / 1e9:.1f}, max {max(r['matmul_flops']) / 1e9:.1f})"
        )
        if r.get("trl_info"):
            lines.append(f"TRL ({r['threads']} thread pairing): trl {r['trl_info']['trl']}, {r['trl_info']['threads']} torch threads")
    if trl_reason:
        lines.append(f"TRL not measured: {trl_reason}")
    return "\n".join(lines)


QUICK = dict(hidden_size=64, layers=2, heads=2, kv_heads=1, intermediate_size=128, vocab_size=512, prompts=2,
             samples=2, new_tokens=8, prompt_tokens=24, steps=1, rounds=1, warmup_steps=1, micro_batch_size=4)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="pairings to run: 1 (sync), 2 (async), or both: 1,2")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per system per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup-steps", type=int, default=1, help="steps per system before timing (discarded)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--samples", type=int, default=8, help="G: completions per prompt")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=141)
    parser.add_argument("--micro-batch-size", type=int, default=8, help="our learner's micro-batch (learner.micro_batch_size)")
    parser.add_argument("--policy", default=None, metavar="REF",
                        help="a real policy by reference (e.g. smollm2-135m-instruct, or a folder); default: a tiny "
                        "random-weight Qwen2 of the sizes below, built here")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="both sides' dtype: our learner (DeepSpeed bf16, fp32 master weights) and rollout engine, "
                        "TRL's bf16 flag")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--intermediate-size", type=int, default=688)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--trl-python", default=DEFAULT_TRL_PYTHON, help="the interpreter of TRL's environment")
    parser.add_argument("--no-trl", action="store_true", help="time our side only")
    parser.add_argument("--quick", action="store_true", help="a tiny model and one step each: a smoke test")
    parser.add_argument("--json", help="also write the figures here")
    # The TRL worker's own arguments (the parent passes them).
    parser.add_argument("--trl-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--prompts-file", help=argparse.SUPPRESS)
    parser.add_argument("--total-steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads-for-trl", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        explicit = {a.split("=")[0].lstrip("-").replace("-", "_") for a in (argv if argv is not None else sys.argv[1:])}
        for key, value in QUICK.items():
            if key not in explicit:
                setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.trl_worker:
        return trl_worker(args)
    sys.path.insert(0, str(REPO))
    import torch

    torch.set_num_threads(1)  # the driver's own work (and the matmul probe) on one thread
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    pairings = sorted({int(t) for t in str(args.threads).split(",")})
    trl_python = None if args.no_trl else args.trl_python
    trl_reason = trl_missing(trl_python)
    if trl_reason:
        trl_python = None
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_grpo_step_") as tmp:
        work = Path(tmp)
        model_path, texts, prompt_ids = build_workload(work, args)
        prompts_file = work / "prompts.json"
        prompts_file.write_text(json.dumps(texts))
        sizes = model_sizes(model_path)
        workload = {
            "model": f"{args.policy or 'tiny'}: {sizes['architecture']} h{sizes['hidden']} mlp{sizes['intermediate']} "
                     f"L{sizes['layers']} heads {sizes['heads']}/{sizes['kv_heads']} vocab {sizes['vocab']} "
                     f"({sizes['total'] / 1e6:.2f}M params, {args.dtype} on both sides)",
            "prompt_tokens": f"{min(map(len, prompt_ids))}-{max(map(len, prompt_ids))}",
            "prompts": args.prompts, "G": args.samples, "new_tokens": args.new_tokens, "beta": 0.001, "lr": 1e-5,
            "micro_batch": args.micro_batch_size, "timed_steps_per_system": f"{args.rounds}x{args.steps}",
        }
        from cluster.runtime import start_ray

        start_ray("", 2, "bench_grpo_step")
        try:
            results = [run_pairing(t, model_path, prompt_ids, prompts_file, sizes, args, trl_python, work) for t in pairings]
        finally:
            import ray

            ray.shutdown()
    text = report(results, workload, trl_reason, (load_start, os.getloadavg()[0]))
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"workload": workload, "results": results, "trl_missing": trl_reason}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
