"""One policy rollout worker: an engine that samples completions with log-probs, and a member of the learner's weight group that loads each broadcast bucket as it arrives.

A plain class: `RolloutPool` runs it as a Ray actor; tests and single-process runs may use it directly.
"""

from __future__ import annotations

import logging
import time

import torch

from engines.weights import WeightReceiver
from rollout.config import RolloutConfig, SamplingConfig
from rollout.engines import create_engine
from rollout.types import Completion

log = logging.getLogger(__name__)


class RolloutWorker:
    def __init__(self, model_path: str, cfg: RolloutConfig, rank: int, bundle_indices: list[int] | None = None):
        self.rank = rank
        self.cfg = cfg
        self.model_path = model_path
        on_gpu = cfg.num_gpus_per_replica > 0 and torch.cuda.is_available()
        if not on_gpu:
            # Ray sets no thread limit; torch would otherwise start one thread per core in every worker.
            torch.set_num_threads(max(1, int(cfg.num_cpus_per_replica)))
        self.engine = create_engine(model_path, cfg, device="cuda" if on_gpu else "cpu", bundle_indices=bundle_indices)
        if not isinstance(self.engine, WeightReceiver):
            raise TypeError(f"rollout engine {type(self.engine).__name__} does not implement engines.weights.WeightReceiver")
        self.tokenizer = self.engine.tokenizer
        self.total_generated_tokens = 0
        self.total_generate_seconds = 0.0
        self.weight_version = 0  # how many weight updates this worker has loaded
        self.policy_version = 0  # the policy version of the weights it holds (0: models.policy), as the last broadcast said
        log.info("rollout worker %d: %s engine on %s from %s", rank, cfg.engine, "GPU" if on_gpu else "CPU", model_path)

    def ready(self) -> int:
        return self.rank

    def pid(self) -> int:
        import os

        return os.getpid()

    # ---------------------------------------------------------------- generation

    def generate_with_stats(self, prompt_token_ids: list[list[int]], sampling: SamplingConfig, seed: int | list[int]) -> tuple[list[list[Completion]], dict]:
        """Completions (prompt-local indices) and this call's throughput: generated tokens, seconds, tokens/s."""
        start = time.perf_counter()
        completions = self.engine.generate(prompt_token_ids, sampling, seed) if prompt_token_ids else []
        for group in completions:
            for completion in group:
                completion.policy_version = self.policy_version
        seconds = time.perf_counter() - start
        generated = sum(len(c.token_ids) for group in completions for c in group)
        self.total_generated_tokens += generated
        self.total_generate_seconds += seconds
        stats = {
            "rank": self.rank,
            "prompts": len(prompt_token_ids),
            "completions": sum(len(group) for group in completions),
            "generated_tokens": generated,
            "seconds": seconds,
            "tokens_per_s": generated / seconds if seconds > 0 else 0.0,
            "weight_version": self.weight_version,
            "policy_version": self.policy_version,
        }
        return completions, stats

    def generate(self, prompt_token_ids: list[list[int]], sampling: SamplingConfig, seed: int | list[int]) -> list[list[Completion]]:
        return self.generate_with_stats(prompt_token_ids, sampling, seed)[0]

    def stats(self) -> dict:
        """Totals since start."""
        seconds = self.total_generate_seconds
        return {
            "rank": self.rank,
            "generated_tokens": self.total_generated_tokens,
            "seconds": seconds,
            "tokens_per_s": self.total_generated_tokens / seconds if seconds > 0 else 0.0,
            "weight_version": self.weight_version,
        }

    # ---------------------------------------------------------------- weights
    # Every engine is a WeightReceiver (engines/weights.py): the calls below delegate to it, whichever engine it is.

    def init_weight_group(self, backend: str, host: str, port: int, world_size: int, rank: int, timeout_s: float) -> list[int]:
        """Joins the learner's weight group (rank 0 is the learner); returns the group ranks this worker holds (one per
        tensor-parallel shard for vLLM, else just `rank`). Blocks until every member joined or the timeout passes."""
        return list(self.engine.init_weight_group(backend, host, port, world_size, rank, timeout_s))

    def receive_weights(self, plan, digest: bool = False, version: int | None = None) -> dict:
        """Receives one broadcast of the learner's weights (weightsync's BucketPlan says how it is cut), loading each
        bucket into the engine as it arrives; they are policy `version` from now on (every completion is stamped with
        it).

        Returns {"seconds", "bytes", "buckets", "weight_version", "policy_version", "rank"} and, with `digest`,
        "digest" (weightsync's digest of the weights now in the engine: read back from the model for transformers, of
        the received tensors for vLLM)."""
        start = time.perf_counter()
        try:
            receipts = self.engine.receive_weights(plan, keep_digest=digest)
        except RuntimeError as err:
            raise RuntimeError(f"rollout worker {self.rank}: {err}") from err
        result = {"bytes": receipts[0]["bytes"], "buckets": receipts[0]["buckets"]}  # every shard got the whole broadcast
        if digest:
            result["digest"] = receipts[0]["digest"]
        self.weight_version += 1
        if version is not None:
            self.policy_version = int(version)
        result["seconds"] = time.perf_counter() - start
        result["weight_version"] = self.weight_version
        result["policy_version"] = self.policy_version
        result["rank"] = self.rank
        return result

    def digest_at_receive_only(self) -> bool:
        """Whether the engine's digest is only known when taken at receive time (engines.weights.WeightReceiver)."""
        return bool(self.engine.digest_at_receive_only)

    def set_policy_version(self, version: int) -> None:
        """The weights it holds are policy `version` from now on (the driver's step whose groups were all filtered
        out changed no weight, so nothing is sent)."""
        self.policy_version = int(version)

    def weights_digest(self) -> str:
        """weightsync's digest of the engine's weights, comparable with the learner's digest of what it sent (a vLLM
        engine's is taken at receive time, so it needs the last receive_weights to have been called with digest=True)."""
        try:
            return self.engine.weights_digest()
        except RuntimeError as err:
            raise RuntimeError(f"rollout worker {self.rank}: {err}") from err

    def close(self) -> None:
        self.engine.shutdown()
