"""One learner rank: a DeepSpeed policy engine that takes GRPO steps and broadcasts its weights to the rollout workers."""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist

from learner.batch import PackedBatch, Sample, completion_logprobs, pack
from learner.broadcast import broadcast_weights, iter_full_buckets, param_metas
from learner.config import LearnerConfig
from learner.engine import build_engines, init_distributed_env, init_process_group
from learner.grpo import aggregate, check_grpo_config, grpo_token_loss
from learner.sft import sft_token_loss
from weightsync import WeightGroup, create_weight_group, weights_digest
from weightsync.rendezvous import host_store, join_store

log = logging.getLogger(__name__)


class Learner:
    """Created once per rank (the driver wraps it in a Ray actor); every public method is called on all ranks together.

    Two phases, so that rank 0 hosts the rendezvous on its own node: construction, then `host_rendezvous` on rank 0
    (its node IP and a port it holds), then `setup(host, port)` on every rank (the process group and the engines).
    """

    def __init__(self, cfg: LearnerConfig, model_path: str, rank: int, world_size: int, total_steps: int, seed: int = 0, rendezvous_timeout_s: float = 600.0):
        torch.set_num_threads(max(1, int(cfg.num_cpus_per_rank)))
        torch.manual_seed(seed + rank)
        check_grpo_config(cfg.grpo)
        self.cfg = cfg
        self.model_path = model_path
        self.rank = rank
        self.world_size = world_size
        self.total_steps = total_steps
        self.rendezvous_timeout_s = rendezvous_timeout_s
        self._stores: dict[str, object] = {}  # the stores this rank hosts, held for the groups' lifetime
        self.rendezvous: dict[str, tuple[str, int]] = {}  # group name -> (host, port) it was built on, for checks
        self.engine = self.reference = None
        self.weight_group: WeightGroup | None = None
        self.steps_done = 0

    def host_rendezvous(self, name: str = "learner", world_size: int | None = None, timeout_s: float | None = None) -> tuple[str, int]:
        """Rank 0 only: starts the store of group `name` on this node; returns (this node's IP, the port it bound)."""
        store, host, port = host_store(world_size or self.world_size, timeout_s or self.rendezvous_timeout_s)
        self._stores[name] = store
        return host, port

    def setup(self, master_addr: str, master_port: int) -> dict:
        """Joins the learner's process group at master_addr:master_port (hosted by rank 0) and builds the engines."""
        init_distributed_env(self.rank, self.world_size, master_addr, master_port)
        store = self._stores.get("learner") if self.rank == 0 else None
        if store is None:
            store = join_store(master_addr, master_port, self.world_size, self.rendezvous_timeout_s)
        init_process_group(self.cfg, store, self.rank, self.world_size, self.rendezvous_timeout_s)
        self.rendezvous["learner"] = (master_addr, master_port)
        self.engine, self.reference = build_engines(self.cfg, self.model_path, self.total_steps)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return self.describe()

    # ---- training -------------------------------------------------------------------------------------------
    def train_step(self, samples: list[Sample], num_micro_batches: int, batch_tokens: int, batch_sequences: int) -> dict:
        """`updates_per_batch` optimiser steps on this rank's share of the batch.

        `num_micro_batches` is the same on every rank (ranks with fewer samples run empty micro-batches, because under
        ZeRO-3 every forward is a collective); `batch_tokens`/`batch_sequences` are the whole batch's counts, so the
        per-rank losses add up to the batch loss exactly.

        Returns the loss, KL and engine/learner mismatch of the first update (the policy that generated the batch), the
        clipped-token count averaged over the updates, and under `updates` each update's loss and ratio statistics.
        """
        started = time.perf_counter()
        self.engine.train()
        grpo = self.cfg.grpo
        if grpo.old_logprobs == "rollout":
            _check_rollout_logprobs(samples, self.rank)
        micro_batches = self._micro_batches(samples, num_micro_batches)
        old_logprobs: list[torch.Tensor | None] = [None] * len(micro_batches)
        if grpo.old_logprobs == "rollout":
            old_logprobs = [batch.rollout_logprobs for batch, _ in micro_batches]
        ref_logprobs = [self._reference_logprobs(mb) for mb in micro_batches]
        totals = {"kl": 0.0, "tokens": 0.0, "mismatch": 0.0}
        updates: list[dict] = []
        grad_norm = None
        for _ in range(grpo.updates_per_batch):
            stats = {"loss": 0.0, "clipped_tokens": 0.0, "tokens": 0.0, "ratio_sum": 0.0, "ratio_min": math.inf, "ratio_max": -math.inf}
            for index, (batch, weight) in enumerate(micro_batches):
                self.engine.set_gradient_accumulation_boundary(index == len(micro_batches) - 1)
                logprobs = completion_logprobs(self.engine, batch)
                if old_logprobs[index] is None:
                    # The first pass runs on the weights that generated the batch: its log-probs are the old policy's.
                    old_logprobs[index] = logprobs.detach()
                per_token, kl, clipped = grpo_token_loss(
                    logprobs, old_logprobs[index], ref_logprobs[index], batch.advantages, batch.completion_mask, grpo
                )
                # DeepSpeed averages gradients over ranks, so scale by world size to get the batch sum / batch count.
                loss = aggregate(per_token, batch.completion_mask, grpo, batch_tokens, batch_sequences)
                loss = loss * weight * self.world_size
                self.engine.backward(loss, scale_wrt_gas=False)
                self.engine.step()
                if weight == 0:
                    continue  # an empty filler micro-batch: nothing to count
                mask = batch.completion_mask.bool()
                ratio = torch.exp(logprobs.detach() - old_logprobs[index])[mask]
                stats["loss"] += loss.item() / self.world_size
                stats["clipped_tokens"] += clipped.sum().item()
                stats["tokens"] += mask.sum().item()
                stats["ratio_sum"] += ratio.sum().item()
                if ratio.numel():
                    stats["ratio_min"] = min(stats["ratio_min"], ratio.min().item())
                    stats["ratio_max"] = max(stats["ratio_max"], ratio.max().item())
                if not updates:
                    totals["kl"] += (kl * batch.completion_mask).sum().item()
                    totals["tokens"] += mask.sum().item()
                    totals["mismatch"] += ((logprobs.detach() - batch.rollout_logprobs).abs() * batch.completion_mask).sum().item()
            stats["ratio_mean"] = stats.pop("ratio_sum") / max(stats["tokens"], 1.0)
            updates.append(stats)
            grad_norm = self.engine.get_global_grad_norm()
        self.engine.set_gradient_accumulation_boundary(None)
        self.steps_done += 1
        tokens = max(totals["tokens"], 1.0)
        clipped_tokens = sum(u["clipped_tokens"] for u in updates) / len(updates)
        return {
            "loss": updates[0]["loss"],
            "kl_sum": totals["kl"],
            "clipped_tokens": clipped_tokens,
            "tokens": totals["tokens"],
            "kl": totals["kl"] / tokens,
            "clip_fraction": clipped_tokens / tokens,
            "logprob_mismatch": totals["mismatch"] / tokens,
            "grad_norm": float(grad_norm) if grad_norm is not None else math.nan,
            "lr": float(self.engine.get_lr()[0]),
            "updates": updates,
            "seconds": time.perf_counter() - started,
        }

    def sft_step(self, samples: list[Sample], num_micro_batches: int, batch_tokens: int, lr: float) -> dict:
        """One optimiser step of supervised fine-tuning on (prompt, target) samples, with the same engine and batching.

        Runs at its own `lr` with the LR scheduler held still, so a warm-up consumes none of the GRPO schedule.
        """
        started = time.perf_counter()
        self.engine.train()
        scheduler, self.engine.lr_scheduler = self.engine.lr_scheduler, None
        saved_lrs = [group["lr"] for group in self.engine.optimizer.param_groups]
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr
        try:
            return self._sft_micro_batches(samples, num_micro_batches, batch_tokens, started)
        finally:
            for group, saved in zip(self.engine.optimizer.param_groups, saved_lrs):
                group["lr"] = saved
            self.engine.lr_scheduler = scheduler

    def _sft_micro_batches(self, samples: list[Sample], num_micro_batches: int, batch_tokens: int, started: float) -> dict:
        micro_batches = self._micro_batches(samples, num_micro_batches)
        nll, tokens = 0.0, 0.0
        for index, (batch, weight) in enumerate(micro_batches):
            self.engine.set_gradient_accumulation_boundary(index == len(micro_batches) - 1)
            logprobs = completion_logprobs(self.engine, batch)
            loss = sft_token_loss(logprobs, batch.completion_mask, batch_tokens) * weight * self.world_size
            self.engine.backward(loss, scale_wrt_gas=False)
            self.engine.step()
            nll += loss.item() / self.world_size * batch_tokens
            tokens += (batch.completion_mask * weight).sum().item()
        self.engine.set_gradient_accumulation_boundary(None)
        return {"nll_sum": nll, "tokens": tokens, "seconds": time.perf_counter() - started}

    def restart_from_current_policy(self) -> None:
        """Makes the current policy the starting point of RL: the KL reference becomes a copy of it, and the optimiser's
        moments are cleared (they hold the warm-up's gradients, which the first GRPO update must not continue)."""
        if self.reference is not None:
            with torch.no_grad():
                for (name, policy_param), (_, ref_param) in zip(
                    self.engine.module.named_parameters(), self.reference.module.named_parameters(), strict=True
                ):
                    with _gathered_for_copy([policy_param, ref_param]):
                        if not hasattr(ref_param, "ds_id") or self.rank == 0:
                            ref_param.data.copy_(policy_param.data)
        inner = self.engine.optimizer
        while hasattr(inner, "optimizer"):
            inner = inner.optimizer
        inner.state.clear()  # torch's AdamW re-initialises a parameter's state when it finds it empty

    def _micro_batches(self, samples: list[Sample], count: int) -> list[tuple[PackedBatch, float]]:
        size = self.cfg.micro_batch_size
        chunks = [samples[i : i + size] for i in range(0, len(samples), size)]
        if len(chunks) > count:
            raise ValueError(f"rank {self.rank}: {len(samples)} samples need {len(chunks)} micro-batches, the step allows {count}")
        packed = [(pack(chunk, self.pad_id), 1.0) for chunk in chunks]
        # Empty micro-batches keep every rank's collectives in step; weight 0 makes their gradient exactly zero.
        filler = Sample(prompt_ids=[self.pad_id], completion_ids=[self.pad_id], rollout_logprobs=[0.0], advantage=0.0)
        packed += [(pack([filler], self.pad_id), 0.0)] * (count - len(chunks))
        return [(self._to_device(b), w) for b, w in packed]

    def _to_device(self, batch: PackedBatch) -> PackedBatch:
        device = self.engine.device
        if str(device) == "cpu":
            return batch
        return PackedBatch(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in vars(batch).items()})

    @torch.no_grad()
    def _reference_logprobs(self, micro_batch: tuple[PackedBatch, float]) -> torch.Tensor | None:
        if self.reference is None:
            return None
        return completion_logprobs(self.reference, micro_batch[0])

    # ---- weights --------------------------------------------------------------------------------------------
    def param_metas(self, dtype: str | None = None):
        return param_metas(self.engine.module, getattr(torch, dtype) if dtype else None)

    def init_weight_group(self, backend: str, host: str, port: int, world_size: int, timeout_s: float) -> None:
        """Rank 0 joins the weight group over the store it hosts (`host_rendezvous("weights", ...)` first); a group
        built before (e.g. with a worker that has since died) is dropped."""
        if self.rank == 0:
            if self.weight_group is not None:
                self.weight_group.close()
            self.weight_group = create_weight_group(
                backend, host, port, world_size, 0, timeout_s, store=self._stores.pop("weights", None)
            )
            self.rendezvous["weights"] = (host, port)

    def broadcast_weights(self, metas, bucket_bytes: int) -> dict:
        started = time.perf_counter()
        sent = broadcast_weights(self.engine.module, self.weight_group, metas, bucket_bytes)
        return {"bytes": sent, "seconds": time.perf_counter() - started}

    def weights_digest(self, metas, bucket_bytes: int = 64 << 20) -> str:
        """Digest of the full weights as sent on the wire (gathered under ZeRO-3: call on every rank)."""
        named = []
        for bucket, tensors in zip(_buckets(metas, bucket_bytes), iter_full_buckets(self.engine.module, metas, bucket_bytes)):
            named.extend((m.name, t) for m, t in zip(bucket, tensors))
        return weights_digest(named)

    # ---- checkpoints ----------------------------------------------------------------------------------------
    def save_checkpoint(self, checkpoint_dir: str, client_state: dict) -> str:
        """Writes DeepSpeed state and an HF-format policy into a temp folder, then renames it into place (atomic)."""
        final = Path(checkpoint_dir)
        tmp = final.with_name(final.name + ".tmp")
        if self.rank == 0 and tmp.exists():
            shutil.rmtree(tmp)
        self._barrier()
        self.engine.save_checkpoint(str(tmp / "deepspeed"), tag="state", client_state=client_state)
        (tmp / "rng").mkdir(parents=True, exist_ok=True)
        torch.save(_rng_state(), tmp / "rng" / f"rank_{self.rank}.pt")
        state_dict = self._full_state_dict(self.engine)
        reference_state = self._full_state_dict(self.reference) if self.reference is not None else None
        if self.rank == 0:
            self.engine.module.save_pretrained(tmp / "policy", state_dict=state_dict)
            self.tokenizer.save_pretrained(tmp / "policy")
            if self.reference is not None:
                # The KL reference is the policy RL started from (after any SFT warm-up), not models.policy: a resumed
                # run must measure KL against the same model.
                self.reference.module.save_pretrained(tmp / "reference", state_dict=reference_state)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        self._barrier()
        return str(final)

    def load_checkpoint(self, checkpoint_dir: str) -> dict:
        """Restores the policy engine (weights, optimiser, LR schedule), the KL reference and this rank's RNG states."""
        root = Path(checkpoint_dir)
        _, client_state = self.engine.load_checkpoint(str(root / "deepspeed"), tag="state")
        if self.reference is not None:
            if not (root / "reference").is_dir():
                raise FileNotFoundError(f"checkpoint {checkpoint_dir} holds no reference/ policy for the KL term")
            self._load_reference(root / "reference")
        rng_file = root / "rng" / f"rank_{self.rank}.pt"
        if rng_file.is_file():
            _set_rng_state(torch.load(rng_file, weights_only=False))
        return client_state or {}

    @torch.no_grad()
    def _load_reference(self, folder: Path) -> None:
        from safetensors.torch import load_file

        saved: dict[str, torch.Tensor] = {}
        for shard in sorted(folder.glob("*.safetensors")):
            saved.update(load_file(shard))
        for name, param in self.reference.module.named_parameters():
            with _gathered_for_copy([param]):
                if not hasattr(param, "ds_id") or self.rank == 0:
                    if name not in saved:  # a tied alias saved under its other name
                        continue
                    param.data.copy_(saved[name])

    def _full_state_dict(self, engine):
        if self.cfg.zero_stage == 3:
            return engine._zero3_consolidated_16bit_state_dict()
        return None if self.rank else engine.module.state_dict()

    def pid(self) -> int:
        return os.getpid()

    def _barrier(self) -> None:
        if dist.is_initialized() and self.world_size > 1:
            dist.barrier()

    def ready(self) -> bool:
        return True

    def describe(self) -> dict:
        """What actually runs on this rank, for the run log: DeepSpeed version, ZeRO stage, backend, device."""
        import deepspeed

        return {
            "deepspeed": deepspeed.__version__,
            "zero_stage": int(self.engine.zero_optimization_stage()),
            "backend": dist.get_backend() if dist.is_initialized() else "none",
            "device": str(self.engine.device),
            "precision": self.cfg.precision,
            "world_size": self.world_size,
            "reference": self.reference is not None,
        }


def _rng_state() -> dict:
    import random

    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    import random

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


def _check_rollout_logprobs(samples: list[Sample], rank: int) -> None:
    """With old_logprobs=rollout every completion token needs the engine's log-prob (pack would pad a missing one with 0)."""
    for index, sample in enumerate(samples):
        if len(sample.rollout_logprobs) != len(sample.completion_ids) or not all(map(math.isfinite, sample.rollout_logprobs)):
            raise ValueError(
                f"rank {rank}, sample {index}: learner.grpo.old_logprobs=rollout needs one finite rollout log-prob per "
                f"completion token; got {len(sample.rollout_logprobs)} for {len(sample.completion_ids)} tokens"
            )


def _gathered_for_copy(params):
    """Under ZeRO-3, gathers both tensors; rank 0's write to the reference is scattered back to every rank on exit."""
    if hasattr(params[0], "ds_id"):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=0)
    from contextlib import nullcontext

    return nullcontext()


def _buckets(metas, bucket_bytes):
    from weightsync import plan_buckets

    return plan_buckets(metas, bucket_bytes)
