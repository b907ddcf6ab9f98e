"""The description of one parameter that both ends of a broadcast agree on before any bytes move."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ParamMeta:
    name: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name without the "torch." prefix, e.g. "float32"

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def numel(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * torch.empty((), dtype=self.torch_dtype).element_size()


def metas_of(named_shapes: Iterable[tuple[str, torch.Size | tuple[int, ...], torch.dtype]]) -> list[ParamMeta]:
    return [ParamMeta(name, tuple(int(d) for d in shape), str(dtype).removeprefix("torch.")) for name, shape, dtype in named_shapes]
