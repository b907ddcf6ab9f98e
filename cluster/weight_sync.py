"""The driver's side of the weight broadcast: sets up the group, runs the learner's send beside the workers' receive, verifies."""

from __future__ import annotations

import time

import ray

from cluster.learner_group import LearnerGroup
from weightsync.group import free_port


class WeightSync:
    def __init__(self, learner: LearnerGroup, rollout, backend: str, bucket_mb: int, timeout_s: float, wire_dtype: str):
        self.learner = learner
        self.rollout = rollout
        self.bucket_bytes = bucket_mb << 20
        self.timeout_s = timeout_s
        # The wire carries the rollout engine's dtype, so a worker's weights can equal the learner's bit for bit.
        self.metas = learner.param_metas(wire_dtype)
        host = ray.util.get_node_ip_address()  # the learner rank 0's node hosts the group's store
        port = free_port()
        world = rollout.weight_group_world_size
        refs = learner.init_weight_group_refs(backend, host, port, world, timeout_s)
        refs += rollout.init_weight_group(backend, host, port, timeout_s, world)
        ray.get(refs, timeout=timeout_s)

    def broadcast(self) -> dict:
        started = time.perf_counter()
        send = self.learner.broadcast_refs(self.metas, self.bucket_bytes)
        receive = self.rollout.receive_weights(self.metas, self.bucket_bytes)
        sent = ray.get(send, timeout=self.timeout_s)
        ray.get(receive, timeout=self.timeout_s)
        return {"sync/bytes": sent[0]["bytes"], "time/sync": time.perf_counter() - started}

    def verify(self) -> dict:
        """1.0 when every worker's weights hash equal to the learner's (as sent on the wire), else 0.0."""
        expected = self.learner.weights_digest(self.metas)
        digests = self.rollout.digests()
        matching = sum(d == expected for d in digests)
        return {"sync/match": float(matching == len(digests)), "sync/matching_workers": matching}
