"""One learner rank: a DeepSpeed policy engine that takes GRPO steps and broadcasts its weights to the rollout workers."""

from __future__ import annotations

import logging
import math
import os
import time

import torch
import torch.distributed as dist

from learner.batch import PackedBatch, Sample, completion_logprobs, pack
from learner.broadcast import broadcast_weights, iter_full_buckets, param_metas
from learner.config import LearnerConfig, supervised_micro_batch_size
from learner.engine import build_engines, init_distributed_env, init_process_group, reference_on_device
from learner import checkpoint, lora
from learner.algo import Algorithm, LossNorm, check_grpo_config, make_algorithm
from learner.sft import sft_token_loss
from learner.step import FirstPass, MicroBatch, rank_metrics, update
from learner.zero import gathered
from weightsync import BucketPlan, WeightTransport, create_weight_group, weights_digest
from weightsync.rendezvous import host_store, join_store

log = logging.getLogger(__name__)


class Learner:
    """Created once per rank (the driver wraps it in a Ray actor); every public method is called on all ranks together.

    Two phases, so that rank 0 hosts the rendezvous on its own node: construction, then `host_rendezvous` on rank 0
    (its node IP and a port it holds), then `setup(host, port)` on every rank (the process group and the engines).
    """

    def __init__(
        self, cfg: LearnerConfig, model_path: str, rank: int, world_size: int, total_steps: int, seed: int = 0,
        rendezvous_timeout_s: float = 600.0, max_new_tokens: int | None = None, sampling_temperature: float = 1.0,
    ):
        torch.set_num_threads(max(1, int(cfg.num_cpus_per_replica)))
        torch.manual_seed(seed + rank)
        check_grpo_config(cfg.grpo)
        make_algorithm(cfg.grpo, max_new_tokens)  # fails here, before any work, if the variant cannot be built
        self.max_new_tokens = max_new_tokens  # the sampling cap: dr_grpo's normaliser unless learner.grpo.max_tokens_norm
        # sampling.temperature: GRPO's log-probs (policy, old, reference) are those of the distribution the rollout
        # engines sampled from (learner.batch.completion_logprobs); SFT's stay at temperature 1.
        self.sampling_temperature = sampling_temperature
        self.cfg = cfg
        self.model_path = model_path
        self.rank = rank
        self.world_size = world_size
        self.total_steps = total_steps
        self.rendezvous_timeout_s = rendezvous_timeout_s
        self._stores: dict[str, object] = {}  # the stores this rank hosts, held for the groups' lifetime
        self.rendezvous: dict[str, tuple[str, int]] = {}  # group name -> (host, port) it was built on, for checks
        self.engine = self.reference = None
        self.weight_group: WeightTransport | None = None
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
    @property
    def algorithm(self) -> Algorithm:
        """learner.grpo's loss variant with its options (built once per distinct settings: learner.algo.make_algorithm)."""
        return make_algorithm(self.cfg.grpo, self.max_new_tokens)

    def train_step(
        self, samples: list[Sample], num_micro_batches: int, batch_tokens: int, batch_sequences: int,
        current_version: int | None = None,
    ) -> dict:
        """`updates_per_batch` optimiser steps on this rank's share of the batch, with the loss of learner.grpo.algorithm.

        `num_micro_batches` is the same on every rank (ranks with fewer samples run empty micro-batches, because under
        ZeRO-3 every forward is a collective); `batch_tokens`/`batch_sequences` are the whole batch's counts, so the
        per-rank losses add up to the batch loss exactly. With learner.grpo.mask_truncated the ranks count the tokens
        and sequences left in the loss themselves (one all-reduce), and these two are not used.

        Returns the metrics of learner.step.rank_metrics (given the learner's `current_version`, with the samples'
        staleness), the gradient norm and the LR; learner.algo.metrics.combine_rank_results adds the ranks up.
        """
        started = time.perf_counter()
        self.engine.train()
        algorithm = self.algorithm
        algorithm.check_samples(samples, self.rank)
        micro_batches = [MicroBatch(b, w, algorithm.loss_mask(b))
                         for b, w in self._micro_batches(samples, num_micro_batches, self.cfg.micro_batch_size)]
        norm = self._loss_counts(micro_batches) if algorithm.masks_truncated else LossNorm(batch_tokens, batch_sequences)
        for micro, ref_logprobs in zip(micro_batches, self._reference_logprobs([m.batch for m in micro_batches])):
            micro.ref_logprobs = ref_logprobs
        first, updates, grad_norm = FirstPass(), [], None
        for index in range(self.cfg.grpo.updates_per_batch):
            args = (self.engine, algorithm, micro_batches, norm, self.sampling_temperature, self.world_size)
            updates.append(update(*args, first=first if index == 0 else None))
            grad_norm = self.engine.get_global_grad_norm()
        self.engine.set_gradient_accumulation_boundary(None)
        self.steps_done += 1
        return {
            **rank_metrics(algorithm, updates, first, samples, current_version),
            "grad_norm": float(grad_norm) if grad_norm is not None else math.nan,
            "lr": float(self.engine.get_lr()[0]),
            "seconds": time.perf_counter() - started,
        }

    def _loss_counts(self, micro_batches: list[MicroBatch]) -> LossNorm:
        """The whole batch's tokens and sequences left in the loss: this rank's, summed over the ranks (every rank calls it)."""
        tokens = sum(float(m.mask.sum()) for m in micro_batches if m.weight)
        sequences = sum(float((m.mask.sum(dim=1) > 0).sum()) for m in micro_batches if m.weight)
        counts = torch.tensor([tokens, sequences], dtype=torch.float64)
        if self.world_size > 1 and dist.is_initialized():
            counts = counts.to(self.engine.device)
            dist.all_reduce(counts)
            counts = counts.cpu()
        # A batch with nothing left in the loss gives a zero loss (every mask is 0), not a division by zero.
        return LossNorm(tokens=max(counts[0].item(), 1.0), sequences=max(counts[1].item(), 1.0))

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
        micro_batches = self._micro_batches(samples, num_micro_batches, supervised_micro_batch_size(self.cfg))
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
        """Makes the current policy the starting point of RL: the KL reference becomes a copy of it (with LoRA: the
        adapters are folded into the base, which is the reference), and the optimiser's moments are cleared (they hold
        the warm-up's gradients, which the first GRPO update must not continue)."""
        if self.cfg.lora.enabled:
            lora.fold_adapters(self.engine.module, self.rank)
        if self.reference is not None:
            with torch.no_grad():
                for (name, policy_param), (_, ref_param) in zip(
                    self.engine.module.named_parameters(), self.reference.module.named_parameters(), strict=True
                ):
                    with gathered([policy_param, ref_param], self.rank) as writes:
                        if writes:
                            ref_param.data.copy_(policy_param.data)
        inner = self.engine.optimizer
        while hasattr(inner, "optimizer"):
            inner = inner.optimizer
        inner.state.clear()  # torch's AdamW re-initialises a parameter's state when it finds it empty

    def _micro_batches(self, samples: list[Sample], count: int, size: int) -> list[tuple[PackedBatch, float]]:
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

    @property
    def has_reference(self) -> bool:
        """Whether the KL term has a reference: its own engine, or with LoRA the policy with adapters disabled."""
        return self.reference is not None or (self.cfg.lora.enabled and self.cfg.grpo.beta > 0)

    @torch.no_grad()
    def _reference_logprobs(self, batches: list[PackedBatch]) -> list[torch.Tensor | None]:
        if self.cfg.lora.enabled and self.cfg.grpo.beta > 0:
            with lora.reference_forward(self.engine.module):
                return [completion_logprobs(self.engine, batch, self.sampling_temperature) for batch in batches]
        if self.reference is None:
            return [None] * len(batches)
        with reference_on_device(self.reference, self.cfg) as reference:  # one move for all micro-batches
            return [completion_logprobs(reference, batch, self.sampling_temperature) for batch in batches]

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

    def broadcast_weights(self, plan: BucketPlan) -> dict:
        """Sends the weights along the driver's bucket plan (rank 0; the other ranks join ZeRO-3's gathers)."""
        started = time.perf_counter()
        sent = broadcast_weights(self.engine.module, self.weight_group, plan)
        return {"bytes": sent, "seconds": time.perf_counter() - started}

    def weights_digest(self, plan: BucketPlan) -> str:
        """Digest of the full weights as sent on the wire (gathered under ZeRO-3: call on every rank)."""
        named = []
        for bucket, tensors in zip(plan, iter_full_buckets(self.engine.module, plan)):
            named.extend((m.name, t) for m, t in zip(bucket, tensors))
        return weights_digest(named)

    # ---- checkpoints ----------------------------------------------------------------------------------------
    def save_checkpoint(self, checkpoint_dir: str, client_state: dict) -> str:
        """Writes DeepSpeed state and an HF-format policy into a temp folder, then renames it into place (atomic)."""
        return checkpoint.save(self, checkpoint_dir, client_state)

    def load_checkpoint(self, checkpoint_dir: str) -> dict:
        """Restores the policy engine (weights, optimiser, LR schedule), the KL reference and this rank's RNG states."""
        return checkpoint.load(self, checkpoint_dir)

    def pid(self) -> int:
        return os.getpid()

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
            "dtype": self.cfg.dtype,
            "world_size": self.world_size,
            "reference": self.has_reference,
            "lora": self.cfg.lora.enabled,
            "trainable_params": sum(getattr(p, "ds_numel", p.numel()) for p in self.engine.module.parameters() if p.requires_grad),
        }

