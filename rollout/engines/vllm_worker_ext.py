"""Methods mixed into vLLM's worker (`worker_extension_cls`, GPU or CPU) so `LLM.collective_rpc` can join the weight group and write each broadcast bucket into the running model through vLLM's in-place weight reload.

vLLM builds its worker class with this class as an extra base, in the worker process (a separate process when the
engine core runs multiprocess), so the module must stay importable there and must not import vLLM at module level.

How weights get in: `Worker.reload_weights(weights_iterator=...)`, vLLM's own in-place reload (the one its weight
transfer engines use: `initialize_layerwise_reload`, the model's `load_weights`, `finalize_layerwise_reload`). It takes
Hugging Face checkpoint names, shards and fuses them (qkv, gate_up), and re-runs each layer's
`process_weights_after_loading` once the layer has all its weights, so kernel-specific layouts are rebuilt from the
new values. That matters on CPU, where processing repacks every Linear weight for oneDNN and drops the plain
parameter: a bare `model.load_weights` there finds no `weight_loader` on the emptied parameter.

One gap the reload leaves (vLLM documents it: tied parameters reflect the processing of one parent only): a tied
output head (`lm_head` sharing `embed_tokens.weight`, as in Qwen2.5 up to 3B) gets the new values in the shared
parameter, but on CPU its logits come from a packed copy made when it was processed, which stays stale. So after
each reload every module whose parameters are all borrowed from another module is processed again
(`quant_method.process_weights_after_loading`, the step vLLM's loader runs; a no-op for unquantized heads on GPU).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch


def _on_cuda(device: torch.device) -> bool:
    return torch.device(device).type == "cuda"


def _tied_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Modules with a quant_method whose own parameters all belong to a module met earlier (a tied head)."""
    owner: dict[int, torch.nn.Module] = {}
    tied = []
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if params and hasattr(module, "quant_method") and all(owner.get(id(p), module) is not module for p in params):
            tied.append(module)
        for p in params:
            owner.setdefault(id(p), module)
    return tied


class WeightSyncWorkerExtension:
    """`self` is vLLM's worker (GPU `Worker` or `CPUWorker`): it has `device`, `reload_weights`, `model_runner.model` and the vLLM parallel state."""

    def init_weight_group(self, backend: str, host: str, port: int, world_size: int, first_rank: int, timeout_s: float) -> int:
        """Joins the weight group as rank `first_rank + <this worker's rank in the engine>` (one rank per tensor-parallel
        shard); returns that rank. Blocks until every member has joined or the timeout passes."""
        from vllm.distributed.parallel_state import get_world_group

        from weightsync import create_weight_group

        rank = first_rank + get_world_group().rank
        if _on_cuda(self.device):
            torch.cuda.set_device(self.device)  # the NCCL group binds to the current device; gloo on CPU has none
        self.weight_group = create_weight_group(backend, host, port, world_size, rank, timeout_s)
        return rank

    def _reload(self, named_tensors: Iterator[tuple[str, torch.Tensor]]) -> None:
        """Writes checkpoint-format (name, tensor) pairs into the live model, consuming the iterator as it goes."""
        from vllm.config import set_current_vllm_config

        self.reload_weights(weights_iterator=named_tensors, is_checkpoint_format=True)
        with set_current_vllm_config(self.vllm_config):
            for module in _tied_modules(self.model_runner.model):
                module.quant_method.process_weights_after_loading(module)
        if _on_cuda(self.device):
            torch.cuda.synchronize(self.device)  # the copies are queued on the current stream

    def receive_weights(self, plain_plan: tuple[int, list[list[tuple[str, list[int], str]]]], keep_digest: bool = False) -> dict:
        """Receives every bucket of the broadcast and writes it into the model as it arrives.

        `plain_plan` is weightsync's BucketPlan as plain data (collective_rpc arguments should be plain data). With
        `keep_digest`, also returns weightsync's digest of the received tensors (copied to host memory, one model's
        worth), since vLLM's own parameters are fused, sharded and (on CPU) repacked, and cannot be compared with the
        learner's.
        """
        from weightsync import BucketPlan, receive_weights, weights_digest

        group = getattr(self, "weight_group", None)
        if group is None:
            raise RuntimeError("receive_weights called before init_weight_group")
        plan = BucketPlan.from_plain(plain_plan)
        start = time.perf_counter()
        counts = {"bytes": 0, "buckets": 0}
        host_copies: list[tuple[str, torch.Tensor]] = []

        def stream() -> Iterator[tuple[str, torch.Tensor]]:
            # One bucket in flight at a time: the reload consumes a bucket before the next broadcast is received.
            for bucket in receive_weights(group, plan, device=self.device):
                counts["bytes"] += sum(t.numel() * t.element_size() for _, t in bucket)
                counts["buckets"] += 1
                if keep_digest:
                    host_copies.extend((name, t.to("cpu", copy=True)) for name, t in bucket)
                yield from bucket

        self._reload(stream())
        result = {"rank": group.rank, "seconds": time.perf_counter() - start, **counts}
        if keep_digest:
            result["digest"] = weights_digest(host_copies)
        return result

    def load_serialized_weights(self, payload: bytes) -> int:
        """Loads Hugging Face-named tensors sent through collective_rpc itself as safetensors bytes (tensors cannot
        cross vLLM's RPC to an engine core in another process; bytes can). For small models and tests; the broadcast
        is the data path. Returns the number of tensors loaded."""
        from safetensors.torch import load

        tensors = load(payload)
        self._reload((name, t.to(self.device)) for name, t in tensors.items())
        return len(tensors)

    def named_weights_on_host(self) -> list[tuple[str, torch.Tensor]]:
        """This worker's parameters under vLLM's own names (fused, sharded), copied to host memory. On CPU, Linear
        weights live in oneDNN's packed form outside the parameters, so theirs come back empty."""
        return [(name, p.detach().to("cpu", copy=True)) for name, p in self.model_runner.model.named_parameters()]

    def close_weight_group(self) -> None:
        group = getattr(self, "weight_group", None)
        if group is not None:
            group.close()
            self.weight_group = None
