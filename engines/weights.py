"""The declared interface by which a policy engine takes the learner's weight broadcast (`WeightReceiver`), and its implementation for engines whose model lives in this process (`InProcessWeightReceiver`, on weightsync's group, bucketed receive and digest)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any

import torch


class WeightReceiver(ABC):
    """A member of the learner's weight group: joins it, loads each broadcast into the engine's model as it arrives,
    and says which weights it holds. The rollout worker talks to its engine through these four methods only."""

    # Whether `weights_digest` can only describe what was received (taken at receive time with keep_digest), because
    # the engine's own parameters cannot be read back in the learner's form (vLLM: fused, sharded, repacked).
    digest_at_receive_only: bool = False

    @abstractmethod
    def init_weight_group(self, backend: str, host: str, port: int, world_size: int, first_rank: int, timeout_s: float) -> list[int]:
        """Joins the weight group (rank 0 is the learner) as ranks first_rank, first_rank + 1, ... (one per
        tensor-parallel shard); returns them. Blocks until every member joined or the timeout passes."""

    @abstractmethod
    def receive_weights(self, plan, keep_digest: bool = False) -> list[dict]:
        """Receives one whole broadcast, cut as weightsync's BucketPlan `plan` says, into the model. One
        receipt per group rank held: {"rank", "seconds", "bytes", "buckets"} and, with `keep_digest`, "digest"
        (weightsync's digest of the weights now loaded; every receipt's is the same)."""

    @abstractmethod
    def weights_digest(self) -> str:
        """weightsync's digest of the weights the engine holds, comparable with the learner's of what it sent.
        RuntimeError where it cannot be known (see the engine)."""

    @abstractmethod
    def shutdown(self) -> None:
        """Leaves the weight group. The engine keeps generating with the weights it has."""


class InProcessWeightReceiver(WeightReceiver):
    """For an engine holding its model in this process: one group rank, each bucket copied into the model with
    `load_weights` (or, where the transport's tensors persist across broadcasts, taken as the model's own storage
    with `bind_weights`), the digest read back from the model's own parameters (`named_weights`)."""

    _weight_group: Any = None

    @abstractmethod
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copies Hugging Face-named tensors into the model's parameters in place."""

    @abstractmethod
    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The model's parameters as (Hugging Face name, tensor)."""

    def bind_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Takes tensors that the transport rewrites in place at every broadcast (weightsync's shm segment) as the
        model's parameters, where the engine can; this default copies them, as `load_weights` does."""
        self.load_weights(named_tensors)

    def init_weight_group(self, backend: str, host: str, port: int, world_size: int, first_rank: int, timeout_s: float) -> list[int]:
        from weightsync import create_weight_group

        self._weight_group = create_weight_group(backend, host, port, world_size, first_rank, timeout_s)
        return [first_rank]

    def receive_weights(self, plan, keep_digest: bool = False) -> list[dict]:
        from weightsync import receive_weights

        group = self._weight_group
        if group is None:
            raise RuntimeError("receive_weights called before init_weight_group")
        start = time.perf_counter()
        received_bytes, num_buckets = 0, 0
        for bucket in receive_weights(group, plan):
            if group.persistent_views:  # views into a segment every later broadcast rewrites: share them, no copy
                self.bind_weights(bucket)
            else:  # before the next bucket arrives: one bucket's buffer in memory at a time
                self.load_weights(bucket)
            received_bytes += sum(t.numel() * t.element_size() for _, t in bucket)
            num_buckets += 1
        receipt = {"rank": group.rank, "seconds": time.perf_counter() - start, "bytes": received_bytes, "buckets": num_buckets}
        if keep_digest:
            receipt["digest"] = self.weights_digest()
        return [receipt]

    def weights_digest(self) -> str:
        from weightsync import weights_digest

        return weights_digest(self.named_weights())

    def shutdown(self) -> None:
        if self._weight_group is not None:
            self._weight_group.close()
            self._weight_group = None
