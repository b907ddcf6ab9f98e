"""The process-group weight transports (gloo on CPU, NCCL on GPU): a stand-alone group spanning learner rank 0 and every
rollout worker, each bucket broadcast as one flat tensor (shared memory on one node is weightsync/shm.py).

Rollout workers are not members of the learner's DeepSpeed world, so the broadcast needs a group of its own.
It is built from a TCPStore directly (no `init_process_group`), so it lives beside whatever default group the
process already has. Rank 0 is always the learner.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator
import socket

import torch
import torch.distributed as dist

from weightsync.meta import ParamMeta
from weightsync.plan import BucketPlan
from weightsync.transport import WeightTransport, register_transport


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@register_transport("gloo", "nccl")
class WeightGroup(WeightTransport):
    """One member's handle on a gloo or NCCL weight group: broadcast from rank 0, with the group's timeout. A received
    tensor is this process's own buffer, overwritten by the next bucket: receivers copy it out."""

    def __init__(self, backend: str, store: dist.Store, rank: int, world_size: int, timeout: datetime.timedelta):
        self.backend = backend
        self.rank = rank
        self.world_size = world_size
        self.timeout = timeout
        self._store = store  # the group keeps using it; hold a reference for its lifetime
        prefix_store = dist.PrefixStore("weightsync", store)
        if backend == "gloo":
            self._pg = dist.ProcessGroupGloo(prefix_store, rank, world_size, timeout)
            self.device = torch.device("cpu")
        elif backend == "nccl":
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timeout
            self._pg = dist.ProcessGroupNCCL(prefix_store, rank, world_size, options)
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            raise ValueError(f"a process-group weight transport is gloo or nccl, got {backend!r}")

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> None:
        """In-place broadcast of `tensor` from `src`; raises if a member does not answer within the group's timeout."""
        work = self._pg.broadcast(tensor, src)
        if not work.wait(self.timeout):
            raise TimeoutError(f"weight broadcast did not complete within {self.timeout} (rank {self.rank})")

    def send_buckets(self, plan: BucketPlan, tensors_per_bucket: Iterable[list[torch.Tensor]]) -> int:
        """Rank 0: broadcasts each bucket as one flat tensor of its dtype; returns the bytes sent."""
        sent = 0
        for bucket, tensors in zip(plan, tensors_per_bucket, strict=True):
            dtype = bucket[0].torch_dtype
            flat = torch.cat([t.detach().reshape(-1).to(device=self.device, dtype=dtype) for t in tensors])
            self.broadcast(flat, 0)
            sent += flat.numel() * flat.element_size()
        return sent

    def receive_buckets(self, plan: BucketPlan) -> Iterator[tuple[tuple[ParamMeta, ...], torch.Tensor]]:
        """Rank > 0: yields (bucket, a fresh flat tensor holding it) as each broadcast arrives."""
        for bucket in plan:
            flat = torch.empty(sum(m.numel for m in bucket), dtype=bucket[0].torch_dtype, device=self.device)
            self.broadcast(flat, 0)
            yield bucket, flat

    def barrier(self) -> None:
        flag = torch.zeros(1, device=self.device)
        self.broadcast(flag, 0)

    def close(self) -> None:
        self._pg = None
        self._store = None

