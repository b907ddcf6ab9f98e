"""The learner ranks as Ray actors in one placement group, driven together (every call goes to every rank)."""

from __future__ import annotations

import math

import ray

from actors import ActorGroup, Pool
from learner.actor import Learner
from learner.algo.metrics import combine_rank_results
from learner.batch import Sample
from learner.config import LearnerConfig, supervised_micro_batch_size


class LearnerGroup:
    """`cfg.num_replicas` Learner actors. Rank 0 hosts the process group's rendezvous on its own node (its node IP and a
    port it bound there), so the group forms wherever Ray placed it, whichever node the driver runs on."""

    def __init__(self, cfg: LearnerConfig, model_path: str, pool: Pool, total_steps: int, seed: int,
                 max_new_tokens: int | None = None, rendezvous_timeout_s: float = 600.0, sampling_temperature: float = 1.0):
        """`max_new_tokens`: the sampling cap, dr_grpo's default loss normaliser; `sampling_temperature`: the rollout
        engines' temperature, at which the learner computes GRPO's log-probs."""
        self.cfg = cfg
        self.actors = ActorGroup(
            "learner", Learner,
            lambda rank: (cfg, model_path, rank, cfg.num_replicas, total_steps, seed, rendezvous_timeout_s, max_new_tokens,
                          sampling_temperature),
            cfg.num_replicas, pool=pool,
        )
        self.master = ray.get(self.ranks[0].host_rendezvous.remote())
        self.info = self.actors.run("setup", *self.master)[0]

    @property
    def ranks(self) -> list:
        return self.actors.handles

    def _shard(self, samples: list[Sample], micro_batch_size: int) -> tuple[list[list[Sample]], int, int]:
        """Round-robin shards, the micro-batch count every rank runs, and the batch's completion tokens."""
        shards = [samples[rank :: len(self.ranks)] for rank in range(len(self.ranks))]
        num_micro = max(1, max(math.ceil(len(s) / micro_batch_size) for s in shards))
        tokens = max(sum(len(s.completion_ids) for s in samples), 1)
        return shards, num_micro, tokens

    def train_step(self, samples: list[Sample], current_version: int | None = None) -> dict:
        """One step of learner.grpo.algorithm over all ranks; returns batch-level metrics (learner/algo/metrics.py).
        `current_version`: the learner's policy version, against which the samples' staleness is reported."""
        shards, num_micro, tokens = self._shard(samples, self.cfg.micro_batch_size)
        results = ray.get([
            r.train_step.remote(shard, num_micro, tokens, max(len(samples), 1), current_version=current_version)
            for r, shard in zip(self.ranks, shards)
        ])
        metrics = combine_rank_results(results)
        # Each sample's engine/learner log-prob gap, back in the batch's order (shards are dealt round-robin).
        mismatch = [0.0] * len(samples)
        for rank, result in enumerate(results):
            for position, value in enumerate(result.get("sample_mismatch", [])):
                mismatch[rank + position * len(self.ranks)] = value
        metrics["sample_mismatch"] = mismatch
        return metrics

    def sft_step(self, samples: list[Sample], lr: float) -> float:
        """One supervised step over all ranks; returns the batch's mean NLL per target token."""
        shards, num_micro, tokens = self._shard(samples, supervised_micro_batch_size(self.cfg))
        results = ray.get([r.sft_step.remote(shard, num_micro, tokens, lr) for r, shard in zip(self.ranks, shards)])
        return sum(r["nll_sum"] for r in results) / tokens

    def restart_from_current_policy(self) -> None:
        ray.get([r.restart_from_current_policy.remote() for r in self.ranks])

    def param_metas(self, dtype: str | None):
        return ray.get(self.ranks[0].param_metas.remote(dtype))

    def host_weight_group(self, world_size: int, timeout_s: float) -> tuple[str, int]:
        """Rank 0 starts the weight group's store on its node; returns the (node IP, port) every member dials."""
        return ray.get(self.ranks[0].host_rendezvous.remote("weights", world_size, timeout_s))

    def init_weight_group_refs(self, backend: str, host: str, port: int, world_size: int, timeout_s: float):
        return [r.init_weight_group.remote(backend, host, port, world_size, timeout_s) for r in self.ranks]

    def rendezvous(self) -> list[dict]:
        """Per rank: the (host, port) of each group it joined, and the IP of the node it runs on."""
        return ray.get([r.__ray_call__.remote(lambda learner: {
            "groups": dict(learner.rendezvous), "node_ip": ray.util.get_node_ip_address()}) for r in self.ranks])

    def pids(self) -> list[int]:
        return self.actors.run("pid")

    def dead_ranks(self) -> list[int]:
        return self.actors.dead()

    def broadcast_refs(self, plan):
        return [r.broadcast_weights.remote(plan) for r in self.ranks]

    def weights_digest(self, plan) -> str:
        return ray.get([r.weights_digest.remote(plan) for r in self.ranks])[0]

    def save_checkpoint(self, checkpoint_dir: str, client_state: dict) -> str:
        return ray.get([r.save_checkpoint.remote(checkpoint_dir, client_state) for r in self.ranks])[0]

    def load_checkpoint(self, checkpoint_dir: str) -> dict:
        return ray.get([r.load_checkpoint.remote(checkpoint_dir) for r in self.ranks])[0]

    def shutdown(self) -> None:
        self.actors.shutdown()
