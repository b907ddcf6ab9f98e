"""A stand-alone weight group spanning learner rank 0 and every rollout worker: a process group (gloo on CPU, NCCL on GPU),
or, with backend "shm", shared memory on one node (weightsync/shm.py).

Rollout workers are not members of the learner's DeepSpeed world, so the broadcast needs a group of its own.
It is built from a TCPStore directly (no `init_process_group`), so it lives beside whatever default group the
process already has. Rank 0 is always the learner.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator
import logging
import socket

import torch
import torch.distributed as dist

from weightsync.meta import ParamMeta
from weightsync.shm import ShmWeightGroup

BACKENDS = ("gloo", "nccl", "shm")

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class WeightGroup:
    """One member's handle on the weight group: broadcast from rank 0, with the group's timeout."""

    # A received tensor is this process's own buffer, overwritten by the next bucket: receivers copy it out.
    persistent_views = False

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
            raise ValueError(f"weight group backend must be one of {BACKENDS}, got {backend!r}")

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> None:
        """In-place broadcast of `tensor` from `src`; raises if a member does not answer within the group's timeout."""
        work = self._pg.broadcast(tensor, src)
        if not work.wait(self.timeout):
            raise TimeoutError(f"weight broadcast did not complete within {self.timeout} (rank {self.rank})")

    def send_buckets(self, buckets: list[list[ParamMeta]], tensors_per_bucket: Iterable[list[torch.Tensor]]) -> int:
        """Rank 0: broadcasts each bucket as one flat tensor of its dtype; returns the bytes sent."""
        sent = 0
        for bucket, tensors in zip(buckets, tensors_per_bucket, strict=True):
            dtype = bucket[0].torch_dtype
            flat = torch.cat([t.detach().reshape(-1).to(device=self.device, dtype=dtype) for t in tensors])
            self.broadcast(flat, 0)
            sent += flat.numel() * flat.element_size()
        return sent

    def receive_buckets(self, buckets: list[list[ParamMeta]]) -> Iterator[tuple[list[ParamMeta], torch.Tensor]]:
        """Rank > 0: yields (bucket, a fresh flat tensor holding it) as each broadcast arrives."""
        for bucket in buckets:
            flat = torch.empty(sum(m.numel for m in bucket), dtype=bucket[0].torch_dtype, device=self.device)
            self.broadcast(flat, 0)
            yield bucket, flat

    def barrier(self) -> None:
        flag = torch.zeros(1, device=self.device)
        self.broadcast(flag, 0)

    def close(self) -> None:
        self._pg = None
        self._store = None


def create_weight_group(
    backend: str, host: str, port: int, world_size: int, rank: int, timeout_s: float, store: dist.Store | None = None,
    segment_bytes: int | None = None,
) -> WeightGroup | ShmWeightGroup:
    """Joins the weight group whose store is at host:port; rank 0 passes the `store` it hosts
    (weightsync.rendezvous.host_store), or, without one, hosts a store at `port` itself. Blocks until every member has
    joined or the timeout passes. `segment_bytes` (shm only): the shared segment's size, default the whole broadcast."""
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    if store is None:
        store = dist.TCPStore(host, port, world_size, is_master=(rank == 0), timeout=timeout, wait_for_workers=True)
    if backend == "shm":
        group = ShmWeightGroup(store, rank, world_size, timeout, segment_bytes=segment_bytes)
    else:
        group = WeightGroup(backend, store, rank, world_size, timeout)
    log.info("weight group %s:%d joined as rank %d of %d (%s)", host, port, rank, world_size, backend)
    return group
