"""The one interface of a weight transport (rank 0 sends a bucket plan's tensors, every other rank receives them),
the registry of transports by the name weight_sync.backend gives them, and the factory that joins one."""

from __future__ import annotations

import datetime
import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist

from configtypes import registrar
from weightsync.meta import ParamMeta
from weightsync.plan import BucketPlan

log = logging.getLogger(__name__)

TRANSPORTS: dict[str, type[WeightTransport]] = {}


# @register_transport("name", ...): the transport is created for each of the names (its first constructor argument
# is the name).
register_transport = registrar(TRANSPORTS, "weight transport")


class WeightTransport(ABC):
    """One member's end of a weight group of `world_size` ranks; rank 0 (the learner) sends, the others receive."""

    backend: str
    rank: int
    world_size: int
    device: torch.device
    # After a receive: whether the tensors it yielded stay valid, rewritten in place by every later broadcast (so a
    # receiver may take them as its weights, no copy); otherwise a received tensor is only valid until the next bucket.
    persistent_views: bool = False

    @abstractmethod
    def send_buckets(self, plan: BucketPlan, tensors_per_bucket: Iterable[list[torch.Tensor]]) -> int:
        """Rank 0: sends each bucket of `plan`, its tensors given in the plan's order; returns the bytes sent."""

    @abstractmethod
    def receive_buckets(self, plan: BucketPlan) -> Iterator[tuple[tuple[ParamMeta, ...], torch.Tensor]]:
        """Rank > 0: yields (bucket, one flat tensor of the bucket's dtype holding it) as each bucket arrives."""

    @abstractmethod
    def close(self) -> None:
        """Leaves the group."""


def create_weight_group(
    backend: str, host: str, port: int, world_size: int, rank: int, timeout_s: float, store: dist.Store | None = None,
    segment_bytes: int | None = None,
) -> WeightTransport:
    """Joins the weight group whose store is at host:port over transport `backend` (a name in TRANSPORTS; "auto" is
    resolved by whoever knows the placement, before this); rank 0 passes the `store` it hosts
    (weightsync.rendezvous.host_store), or, without one, hosts a store at `port` itself. Blocks until every member has
    joined or the timeout passes. `segment_bytes` (shm only): the shared segment's size, default the whole broadcast."""
    for module in ("weightsync.group", "weightsync.shm"):  # importing a transport's module registers it
        importlib.import_module(module)

    if backend not in TRANSPORTS:
        raise ValueError(f"weight transport must be one of {', '.join(sorted(TRANSPORTS))}, got {backend!r}"
                         + (" (resolve 'auto' from the placement first)" if backend == "auto" else ""))
    timeout = datetime.timedelta(seconds=timeout_s)
    if store is None:
        store = dist.TCPStore(host, port, world_size, is_master=(rank == 0), timeout=timeout, wait_for_workers=True)
    options = {"segment_bytes": segment_bytes} if backend == "shm" else {}
    group = TRANSPORTS[backend](backend, store, rank, world_size, timeout, **options)
    log.info("weight group %s:%d joined as rank %d of %d (%s)", host, port, rank, world_size, backend)
    return group
