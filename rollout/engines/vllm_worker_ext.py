"""Methods mixed into vLLM's GPU worker (`worker_extension_cls`) so `LLM.collective_rpc` can join the weight group and load each broadcast bucket straight into the running model.

vLLM builds its worker class with this class as an extra base, in the worker process (a separate process when the
engine core runs multiprocess), so the module must stay importable there and must not import vLLM at module level.
The pattern is vLLM's RLHF example (`examples/offline_inference/rlhf_utils.py`): a stand-alone collective group
between the trainer and every worker (here weightsync's group), then `model_runner.model.load_weights(weights=...)`,
which takes Hugging Face checkpoint names and shards and fuses them (qkv, gate_up) as the model needs.
"""

from __future__ import annotations

import time

import torch


class WeightSyncWorkerExtension:
    """`self` is vLLM's worker: it has `device`, `model_runner.model` and the vLLM parallel state."""

    def init_weight_group(self, backend: str, host: str, port: int, world_size: int, first_rank: int, timeout_s: float) -> int:
        """Joins the weight group as rank `first_rank + <this worker's rank in the engine>` (one rank per tensor-parallel
        shard); returns that rank. Blocks until every member has joined or the timeout passes."""
        from vllm.distributed.parallel_state import get_world_group

        from weightsync import create_weight_group

        rank = first_rank + get_world_group().rank
        torch.cuda.set_device(self.device)  # the NCCL group binds to the current device
        self.weight_group = create_weight_group(backend, host, port, world_size, rank, timeout_s)
        return rank

    def receive_weights(self, metas: list[tuple[str, list[int], str]], bucket_bytes: int, keep_digest: bool = False) -> dict:
        """Receives every bucket of the broadcast and loads it into the model as it arrives.

        `metas` are plain (name, shape, dtype) tuples (collective_rpc arguments should be plain data). With
        `keep_digest`, also returns weightsync's digest of the received tensors (copied to host memory, one model's
        worth), since vLLM's own parameters are fused and sharded and cannot be compared with the learner's.
        """
        from weightsync import ParamMeta, receive_weights, weights_digest

        group = getattr(self, "weight_group", None)
        if group is None:
            raise RuntimeError("receive_weights called before init_weight_group")
        param_metas = [ParamMeta(name, tuple(int(d) for d in shape), dtype) for name, shape, dtype in metas]
        start = time.perf_counter()
        received_bytes, num_buckets = 0, 0
        host_copies: list[tuple[str, torch.Tensor]] = []
        model = self.model_runner.model
        for bucket in receive_weights(group, param_metas, bucket_bytes, device=self.device):
            model.load_weights(weights=bucket)
            received_bytes += sum(t.numel() * t.element_size() for _, t in bucket)
            num_buckets += 1
            if keep_digest:
                host_copies.extend((name, t.to("cpu", copy=True)) for name, t in bucket)
        torch.cuda.synchronize()
        result = {"rank": group.rank, "seconds": time.perf_counter() - start, "bytes": received_bytes, "buckets": num_buckets}
        if keep_digest:
            result["digest"] = weights_digest(host_copies)
        return result

    def load_named_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> None:
        """Loads host tensors sent through collective_rpc itself: for small models and tests; the broadcast is the data path."""
        self.model_runner.model.load_weights(weights=[(name, t.to(self.device)) for name, t in named_tensors])
        torch.cuda.synchronize()

    def named_weights_on_host(self) -> list[tuple[str, torch.Tensor]]:
        """This worker's parameters under vLLM's own names (fused, sharded), copied to host memory."""
        return [(name, p.detach().to("cpu", copy=True)) for name, p in self.model_runner.model.named_parameters()]

    def close_weight_group(self) -> None:
        group = getattr(self, "weight_group", None)
        if group is not None:
            group.close()
            self.weight_group = None
