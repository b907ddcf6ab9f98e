"""The bucket plan of a broadcast: the parameters, in order, cut into buckets of one dtype and at most `bucket_bytes`,
computed once by the driver and handed to the sender and to every receiver, so both ends cut the same way."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from weightsync.meta import ParamMeta

# The plan as plain data (bucket bytes, then each bucket's (name, shape, dtype) triples): what crosses an RPC that
# wants no project types, such as vLLM's collective_rpc.
PlainPlan = tuple[int, list[list[tuple[str, list[int], str]]]]


@dataclass(frozen=True)
class BucketPlan(Sequence[tuple[ParamMeta, ...]]):
    """The buckets of one broadcast, in send order; a bucket holds parameters of one dtype, at most `bucket_bytes`
    of them unless one tensor alone is larger (it then gets a bucket of its own)."""

    buckets: tuple[tuple[ParamMeta, ...], ...]
    bucket_bytes: int

    @classmethod
    def of(cls, metas: Sequence[ParamMeta], bucket_bytes: int) -> BucketPlan:
        """Groups `metas`, in order, into buckets: a new one starts at a dtype change or when the next tensor would
        take the current one past `bucket_bytes`."""
        if bucket_bytes <= 0:
            raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
        buckets: list[tuple[ParamMeta, ...]] = []
        current: list[ParamMeta] = []
        current_bytes = 0
        for meta in metas:
            if current and (meta.dtype != current[0].dtype or current_bytes + meta.nbytes > bucket_bytes):
                buckets.append(tuple(current))
                current, current_bytes = [], 0
            current.append(meta)
            current_bytes += meta.nbytes
        if current:
            buckets.append(tuple(current))
        return cls(tuple(buckets), bucket_bytes)

    @property
    def metas(self) -> list[ParamMeta]:
        """Every parameter of the plan, in send order."""
        return [meta for bucket in self.buckets for meta in bucket]

    @property
    def nbytes(self) -> int:
        """The bytes one broadcast carries."""
        return sum(meta.nbytes for meta in self.metas)

    def __getitem__(self, index):  # Sequence: plan[b] is bucket b
        return self.buckets[index]

    def __len__(self) -> int:
        return len(self.buckets)

    def __iter__(self) -> Iterator[tuple[ParamMeta, ...]]:
        return iter(self.buckets)

    def to_plain(self) -> PlainPlan:
        return self.bucket_bytes, [[(m.name, list(m.shape), m.dtype) for m in bucket] for bucket in self.buckets]

    @classmethod
    def from_plain(cls, plain: PlainPlan) -> BucketPlan:
        bucket_bytes, buckets = plain
        return cls(tuple(tuple(ParamMeta(name, tuple(int(d) for d in shape), dtype) for name, shape, dtype in bucket)
                         for bucket in buckets), int(bucket_bytes))
