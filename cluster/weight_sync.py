"""The driver's side of the weight broadcast: sets up the group, runs the learner's send beside the workers' receive, verifies."""

from __future__ import annotations

import logging
import time

import ray

from cluster.learner_group import LearnerGroup

log = logging.getLogger(__name__)


class WeightSync:
    def __init__(self, learner: LearnerGroup, rollout, backend: str, bucket_mb: int, timeout_s: float, wire_dtype: str, verify: bool = False):
        """`verify`: `verify()` will be called after broadcasts (so engines that can only digest what they receive
        take a digest at every broadcast from the start; without it they start at the first `verify()`)."""
        self.learner = learner
        self.rollout = rollout
        self.backend = backend
        self.bucket_bytes = bucket_mb << 20
        self.timeout_s = timeout_s
        # The wire carries the rollout engine's dtype, so a worker's weights can equal the learner's bit for bit.
        self.metas = learner.param_metas(wire_dtype)
        self.address: tuple[str, int] | None = None
        # vLLM keeps its weights fused, sharded and (on CPU) repacked, so a replica's digest can only be taken of the
        # tensors it received, at receive time; a transformers worker's is read back from its model when asked.
        self.receive_time_digests = getattr(getattr(rollout, "cfg", None), "engine", None) == "vllm"
        self.keep_digests = verify
        self._last_digested = False  # whether the last broadcast left a receive-time digest on every worker
        self.connect()

    def connect(self) -> None:
        """(Re)builds the weight group: learner rank 0 hosts its store on its own node, every worker rank joins. Called
        again after a worker is replaced: a collective group cannot take a new member, so everyone joins a new one."""
        world = self.rollout.weight_group_world_size
        self.address = self.learner.host_weight_group(world, self.timeout_s)
        refs = self.learner.init_weight_group_refs(self.backend, *self.address, world, self.timeout_s)
        refs += self.rollout.init_weight_group(self.backend, *self.address, self.timeout_s, world)
        ray.get(refs, timeout=self.timeout_s)

    def broadcast(self) -> dict:
        """Sends the learner's weights to every worker. A worker that died meanwhile is replaced, the group rebuilt
        and the broadcast sent again (a broadcast only copies the learner's weights, so repeating it is harmless)."""
        try:
            return self._broadcast()
        except ray.exceptions.RayError:
            if self.learner.dead_ranks() or not self.rollout.replace_dead():
                raise
            self.connect()
            return self._broadcast()

    def _broadcast(self) -> dict:
        started = time.perf_counter()
        digest = self.keep_digests and self.receive_time_digests
        self._last_digested = False
        send = self.learner.broadcast_refs(self.metas, self.bucket_bytes)
        receive = self.rollout.receive_weights(self.metas, self.bucket_bytes, digest=digest)
        sent = ray.get(send, timeout=self.timeout_s)
        ray.get(receive, timeout=self.timeout_s)
        self._last_digested = digest
        return {"sync/bytes": sent[0]["bytes"], "time/sync": time.perf_counter() - started}

    def verify(self) -> dict:
        """1.0 when every worker's weights hash equal to the learner's (as sent on the wire), else 0.0."""
        if self.receive_time_digests and not self._last_digested:
            # The weights the workers hold came without a digest: send them once more (a broadcast only copies the
            # learner's weights, so this changes nothing else), this time digested, and digest every later one.
            log.info("verify: re-sending the weights once so every vLLM replica digests what it receives")
            self.keep_digests = True
            self.broadcast()
        expected = self.learner.weights_digest(self.metas)
        digests = self.rollout.digests()
        matching = sum(d == expected for d in digests)
        return {"sync/match": float(matching == len(digests)), "sync/matching_workers": matching}
