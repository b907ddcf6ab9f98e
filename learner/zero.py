"""The one ZeRO-3 parameter gather: partitioned parameters made full inside a `with`, plain ones left as they are."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


def is_partitioned(param: torch.nn.Parameter) -> bool:
    """Whether ZeRO-3 holds only this rank's partition of `param` (DeepSpeed marks those with a `ds_id`)."""
    return hasattr(param, "ds_id")


def full_shape(param: torch.nn.Parameter) -> torch.Size:
    """The parameter's whole shape, also under ZeRO-3 (where `param.shape` is that of an empty placeholder)."""
    return getattr(param, "ds_shape", param.shape)


@contextmanager
def gathered(params: Iterable[torch.nn.Parameter], rank: int | None = None) -> Iterator[bool]:
    """Inside, every parameter of `params` is full: under ZeRO-3 gathered from the ranks' partitions (a collective,
    which every rank enters in step), otherwise as it is.

    Without `rank` the gather is for reading. With this rank's `rank` it is for writing, and yields whether this rank
    writes: under ZeRO-3 rank 0 only, whose writes are scattered back to every rank on exit; otherwise every rank.
    """
    params = list(params)
    if not params or not is_partitioned(params[0]):
        yield True
        return
    import deepspeed  # deferred: a rank without ZeRO-3 parameters never needs it here

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None if rank is None else 0):
        yield rank is None or rank == 0
