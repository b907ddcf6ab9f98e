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
from learner.broadcast import broadcast_weights, exported_weights, iter_full_buckets, param_metas
from learner.config import LearnerConfig
from learner.engine import build_engines, init_distributed_env, init_process_group, reference_on_device
from learner import lora
from learner.algo import LossInputs, LossNorm, check_grpo_config, make_algorithm
from learner.algo.staleness import staleness_stats
from learner.algo.tis import TISStats, tis_weights
from learner.algo.truncation import loss_mask
from learner.sft import sft_token_loss
from weightsync import WeightGroup, create_weight_group, weights_digest
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
    def train_step(
        self, samples: list[Sample], num_micro_batches: int, batch_tokens: int, batch_sequences: int,
        current_version: int | None = None,
    ) -> dict:
        """`updates_per_batch` optimiser steps on this rank's share of the batch, with the loss of learner.grpo.algorithm.

        `num_micro_batches` is the same on every rank (ranks with fewer samples run empty micro-batches, because under
        ZeRO-3 every forward is a collective); `batch_tokens`/`batch_sequences` are the whole batch's counts, so the
        per-rank losses add up to the batch loss exactly. With learner.grpo.mask_truncated the ranks count the tokens
        and sequences left in the loss themselves (one all-reduce), and these two are not used.

        Returns the loss, KL and engine/learner mismatch of the first update (the policy that generated the batch), the
        clipped-token count averaged over the updates, and under `updates` each update's loss and ratio statistics.
        Per-token statistics are over the tokens in the loss. With learner.grpo.tis_cap > 0 also the importance
        weights' statistics (`tis/*`, before the cap); given the learner's `current_version`, the samples' staleness
        (`staleness/*`, from Sample.policy_version). learner.algo.metrics.combine_rank_results adds the ranks up.
        """
        started = time.perf_counter()
        self.engine.train()
        grpo = self.cfg.grpo
        algorithm = make_algorithm(grpo, self.max_new_tokens)
        if grpo.old_logprobs == "rollout":
            _check_rollout_logprobs(samples, self.rank, "learner.grpo.old_logprobs=rollout")
        if grpo.tis_cap > 0:
            _check_rollout_logprobs(samples, self.rank, "learner.grpo.tis_cap > 0")
        micro_batches = self._micro_batches(samples, num_micro_batches)
        loss_masks = [loss_mask(batch.completion_mask, batch.truncated, grpo.mask_truncated) for batch, _ in micro_batches]
        if grpo.mask_truncated:
            norm = self._loss_counts(micro_batches, loss_masks)
        else:
            norm = LossNorm(tokens=batch_tokens, sequences=batch_sequences)
        old_logprobs: list[torch.Tensor | None] = [None] * len(micro_batches)
        if grpo.old_logprobs == "rollout":
            old_logprobs = [batch.rollout_logprobs for batch, _ in micro_batches]
        is_weights: list[torch.Tensor | None] = [None] * len(micro_batches)
        tis_total = TISStats(weight_sum=0.0, weight_max=0.0, capped_tokens=0.0, tokens=0.0)
        ref_logprobs = self._reference_logprobs(micro_batches)
        totals = {"kl": 0.0, "tokens": 0.0, "mismatch": 0.0}
        sample_mismatch: list[float] = []  # per sample, in order: its mean |learner - sampler| log-prob over its tokens
        updates: list[dict] = []
        grad_norm = None
        for _ in range(grpo.updates_per_batch):
            stats = {"loss": 0.0, "clipped_tokens": 0.0, "tokens": 0.0, "ratio_sum": 0.0, "ratio_min": math.inf, "ratio_max": -math.inf}
            for index, (batch, weight) in enumerate(micro_batches):
                self.engine.set_gradient_accumulation_boundary(index == len(micro_batches) - 1)
                logprobs = completion_logprobs(self.engine, batch, self.sampling_temperature)
                mask = loss_masks[index]
                if old_logprobs[index] is None:
                    # The first pass runs on the weights that generated the batch: its log-probs are the old policy's.
                    old_logprobs[index] = logprobs.detach()
                if grpo.tis_cap > 0 and is_weights[index] is None:
                    # pi_old (this first pass) against the sampler: fixed for the batch, so computed once.
                    is_weights[index], tis = tis_weights(old_logprobs[index], batch.rollout_logprobs, mask, grpo.tis_cap)
                    if weight:
                        tis_total = _add_tis(tis_total, tis)
                out = algorithm.loss(
                    LossInputs(logprobs, old_logprobs[index], ref_logprobs[index], batch.advantages, mask, is_weights[index]), norm
                )
                # DeepSpeed averages gradients over ranks, so scale by world size to get the batch sum / batch count.
                loss = out.loss * weight * self.world_size
                self.engine.backward(loss, scale_wrt_gas=False)
                self.engine.step()
                if weight == 0:
                    continue  # an empty filler micro-batch: nothing to count
                in_loss = mask.bool()
                ratio = out.ratio[in_loss]
                stats["loss"] += loss.item() / self.world_size
                stats["clipped_tokens"] += out.clipped.sum().item()
                stats["tokens"] += in_loss.sum().item()
                stats["ratio_sum"] += ratio.sum().item()
                if ratio.numel():
                    stats["ratio_min"] = min(stats["ratio_min"], ratio.min().item())
                    stats["ratio_max"] = max(stats["ratio_max"], ratio.max().item())
                if not updates:
                    totals["kl"] += (out.kl * mask).sum().item()
                    totals["tokens"] += in_loss.sum().item()
                    gap = (logprobs.detach() - batch.rollout_logprobs).abs()
                    totals["mismatch"] += (gap * mask).sum().item()
                    per_row = (gap * batch.completion_mask).sum(dim=1) / batch.completion_mask.sum(dim=1).clamp(min=1)
                    sample_mismatch += per_row.tolist()
            stats["ratio_mean"] = stats.pop("ratio_sum") / max(stats["tokens"], 1.0)
            updates.append(stats)
            grad_norm = self.engine.get_global_grad_norm()
        self.engine.set_gradient_accumulation_boundary(None)
        self.steps_done += 1
        tokens = max(totals["tokens"], 1.0)
        clipped_tokens = sum(u["clipped_tokens"] for u in updates) / len(updates)
        metrics = {
            "loss": updates[0]["loss"],
            "kl_sum": totals["kl"],
            "clipped_tokens": clipped_tokens,
            "tokens": totals["tokens"],
            "kl": totals["kl"] / tokens,
            "clip_fraction": clipped_tokens / tokens,
            "logprob_mismatch": totals["mismatch"] / tokens,
            "sample_mismatch": sample_mismatch,
            "grad_norm": float(grad_norm) if grad_norm is not None else math.nan,
            "lr": float(self.engine.get_lr()[0]),
            "updates": updates,
            "sequences": float(len(samples)),
            "truncated_masked": float(sum(s.truncated for s in samples)) if grpo.mask_truncated else 0.0,
            "seconds": time.perf_counter() - started,
        }
        if grpo.tis_cap > 0:
            metrics.update({
                "tis_weight_sum": tis_total.weight_sum, "tis_capped_tokens": tis_total.capped_tokens, "tis_tokens": tis_total.tokens,
                "tis/weight_mean": tis_total.weight_sum / max(tis_total.tokens, 1.0),
                "tis/weight_max": tis_total.weight_max,
                "tis/capped_fraction": tis_total.capped_tokens / max(tis_total.tokens, 1.0),
            })
        if current_version is not None:
            lag = staleness_stats([s.policy_version for s in samples], current_version)
            metrics.update({
                "staleness_sum": lag.total,
                "staleness/mean": lag.total / max(lag.sequences, 1.0),
                "staleness/max": lag.max,
            })
        return metrics

    def _loss_counts(self, micro_batches: list[tuple[PackedBatch, float]], loss_masks: list[torch.Tensor]) -> LossNorm:
        """The whole batch's tokens and sequences left in the loss: this rank's, summed over the ranks (every rank calls it)."""
        tokens = sum(float(mask.sum()) for mask, (_, weight) in zip(loss_masks, micro_batches) if weight)
        sequences = sum(float((mask.sum(dim=1) > 0).sum()) for mask, (_, weight) in zip(loss_masks, micro_batches) if weight)
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

    @property
    def has_reference(self) -> bool:
        """Whether the KL term has a reference: its own engine, or with LoRA the policy with adapters disabled."""
        return self.reference is not None or (self.cfg.lora.enabled and self.cfg.grpo.beta > 0)

    @torch.no_grad()
    def _reference_logprobs(self, micro_batches: list[tuple[PackedBatch, float]]) -> list[torch.Tensor | None]:
        if self.cfg.lora.enabled and self.cfg.grpo.beta > 0:
            with lora.reference_forward(self.engine.module):
                return [completion_logprobs(self.engine, batch, self.sampling_temperature) for batch, _ in micro_batches]
        if self.reference is None:
            return [None] * len(micro_batches)
        with reference_on_device(self.reference, self.cfg) as reference:  # one move for all micro-batches
            return [completion_logprobs(reference, batch, self.sampling_temperature) for batch, _ in micro_batches]

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
        # With LoRA the frozen base goes to base/ (below), so DeepSpeed's part holds the adapters and their optimiser only.
        self.engine.save_checkpoint(
            str(tmp / "deepspeed"), tag="state", client_state=client_state, exclude_frozen_parameters=self.cfg.lora.enabled
        )
        (tmp / "rng").mkdir(parents=True, exist_ok=True)
        torch.save(_rng_state(), tmp / "rng" / f"rank_{self.rank}.pt")
        if self.cfg.lora.enabled:
            self._save_lora(tmp)
            self._barrier()
            if self.rank == 0:
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
            self._barrier()
            return str(final)
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
        _, client_state = self.engine.load_checkpoint(str(root / "deepspeed"), tag="state", load_module_strict=not self.cfg.lora.enabled)
        if self.cfg.lora.enabled:
            # The base weights (changed by an SFT warm-up's fold): DeepSpeed's module state under ZeRO-3 lacks them.
            if not (root / "base").is_dir():
                raise FileNotFoundError(f"checkpoint {checkpoint_dir} holds no base/ weights for learner.lora")
            self._load_named(lora.base_parameters(self.engine.module), root / "base")
        elif self.reference is not None:
            if not (root / "reference").is_dir():
                raise FileNotFoundError(f"checkpoint {checkpoint_dir} holds no reference/ policy for the KL term")
            self._load_reference(root / "reference")
        rng_file = root / "rng" / f"rank_{self.rank}.pt"
        if rng_file.is_file():
            _set_rng_state(_load_rng_state(rng_file))
        return client_state or {}

    def _load_reference(self, folder: Path) -> None:
        self._load_named(dict(self.reference.module.named_parameters()), folder)

    @torch.no_grad()
    def _load_named(self, params: dict[str, torch.nn.Parameter], folder: Path) -> None:
        """Copies the HF-format weights saved in `folder` into `params` (by name; gathered and scattered under ZeRO-3)."""
        from safetensors.torch import load_file

        saved: dict[str, torch.Tensor] = {}
        for shard in sorted(folder.glob("*.safetensors")):
            saved.update(load_file(shard))
        for name, param in params.items():
            with _gathered_for_copy([param]):
                if not hasattr(param, "ds_id") or self.rank == 0:
                    if name not in saved:  # a tied alias saved under its other name
                        continue
                    param.data.copy_(saved[name])

    def _save_lora(self, tmp: Path) -> None:
        """With LoRA: `policy/` the merged model in HF format (what the workers and eval load), `base/` the frozen base
        weights (the KL reference, and what resume restores), `adapter/` the adapters in peft's format; the adapters'
        optimiser state is in `deepspeed/`. Every rank joins the ZeRO-3 gathers."""
        module = self.engine.module
        merged = _gather_all(exported_weights(module))
        base = _gather_all(_as_is(lora.base_parameters(module)))
        adapter_state = _gather_all(_as_is({name: p for name, p in module.named_parameters() if p.requires_grad}))
        if self.rank == 0:
            base_model = module.get_base_model()
            base_model.save_pretrained(tmp / "policy", state_dict=merged)
            self.tokenizer.save_pretrained(tmp / "policy")
            base_model.save_pretrained(tmp / "base", state_dict=base)
            module.save_pretrained(tmp / "adapter", state_dict=adapter_state)

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
            "dtype": self.cfg.dtype,
            "world_size": self.world_size,
            "reference": self.has_reference,
            "lora": self.cfg.lora.enabled,
            "trainable_params": sum(getattr(p, "ds_numel", p.numel()) for p in self.engine.module.parameters() if p.requires_grad),
        }


def _rng_state() -> dict:
    """Every generator a training step draws from (LoRA dropout, sampling in the loss): the CPU's, Python's, and on
    GPU every device's, so a resumed run continues the same streams."""
    import random

    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _load_rng_state(path: Path) -> dict:
    """The RNG states `_rng_state` saved: tensors, tuples and ints only, so torch's weights-only unpickler reads them and
    the file cannot run code (DeepSpeed's own state files still need full unpickling: checkpoints are trusted)."""
    return torch.load(path, weights_only=True)


def _set_rng_state(state: dict) -> None:
    import random

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_rollout_logprobs(samples: list[Sample], rank: int, setting: str) -> None:
    """With old_logprobs=rollout or TIS every completion token needs the engine's log-prob (pack would pad a missing one with 0)."""
    for index, sample in enumerate(samples):
        if len(sample.rollout_logprobs) != len(sample.completion_ids) or not all(map(math.isfinite, sample.rollout_logprobs)):
            raise ValueError(
                f"rank {rank}, sample {index}: {setting} needs one finite rollout log-prob per "
                f"completion token; got {len(sample.rollout_logprobs)} for {len(sample.completion_ids)} tokens"
            )


def _add_tis(total: TISStats, part: TISStats) -> TISStats:
    return TISStats(
        weight_sum=total.weight_sum + part.weight_sum,
        weight_max=max(total.weight_max, part.weight_max),
        capped_tokens=total.capped_tokens + part.capped_tokens,
        tokens=total.tokens + part.tokens,
    )


def _gathered_for_copy(params):
    """Under ZeRO-3, gathers both tensors; rank 0's write to the reference is scattered back to every rank on exit."""
    if hasattr(params[0], "ds_id"):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=0)
    from contextlib import nullcontext

    return nullcontext()


def _as_is(named: dict[str, torch.nn.Parameter]) -> list[lora.ExportedWeight]:
    return [lora.ExportedWeight(name, (p,), lambda p=p: p.data) for name, p in named.items()]


def _gather_all(weights: list[lora.ExportedWeight]) -> dict[str, torch.Tensor]:
    """Every tensor in full, on the CPU; under ZeRO-3 one gather of all their parameters (a collective: every rank
    calls it), as a checkpoint holds the whole model anyway."""
    sources = list({id(p): p for w in weights for p in w.params}.values())
    if sources and hasattr(sources[0], "ds_id"):
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(sources, modifier_rank=None)
    else:
        from contextlib import nullcontext

        gathered = nullcontext()
    with gathered, torch.no_grad():
        return {w.name: w.compute().detach().to("cpu", copy=True) for w in weights}


def _buckets(metas, bucket_bytes):
    from weightsync import plan_buckets

    return plan_buckets(metas, bucket_bytes)
