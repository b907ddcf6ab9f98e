"""The driver's side of the weight broadcast: resolves the transport once from the config and the placement, computes
the bucket plan once for both ends, sets up the group, runs the learner's send beside the workers' receive, verifies."""

from __future__ import annotations

import logging
import time

import ray

from cluster.learner_group import LearnerGroup
from weightsync.plan import BucketPlan

log = logging.getLogger(__name__)


def gpu_pools(cfg) -> bool:
    """Whether both the learner and the rollout workers hold GPUs (then "auto" is nccl)."""
    return cfg.rollout.num_gpus_per_replica > 0 and cfg.learner.num_gpus_per_replica > 0


def wire_dtype(rollout_dtype: str, policy_path: str) -> str:
    """The dtype the broadcast carries: the rollout engine's (rollout.dtype), so a worker's weights can equal the
    learner's bit for bit; "auto" is the checkpoint's own dtype, which is what a transformers engine loads then (a vLLM
    engine's "auto" may differ: name the dtype for vLLM)."""
    from engines.loading import checkpoint_dtype_name

    choice = str(rollout_dtype)
    return checkpoint_dtype_name(policy_path) if choice == "auto" else choice


def _node_id(actor) -> ray.ObjectRef:
    return actor.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id())


def resolve_backend(choice: str, gpus: bool, learner_node: str, worker_nodes: list[str]) -> str:
    """The one place weight_sync.backend is resolved: "auto" is nccl when both pools hold GPUs (`gpus`), else shm when
    every rollout worker shares learner rank 0's node, else gloo; "shm" with a worker elsewhere is refused, naming it."""
    choice = str(choice)  # a plain str (a config Choice prints as its value): it travels to the actors
    if choice == "auto" and gpus:
        return "nccl"
    elsewhere = [i for i, node in enumerate(worker_nodes) if node != learner_node]
    if choice == "shm" and elsewhere:
        raise RuntimeError(
            f"weight_sync.backend=shm needs every rollout worker on learner rank 0's node ({learner_node[:12]}), "
            f"but worker(s) {elsewhere} run on {sorted({worker_nodes[i][:12] for i in elsewhere})}: shared memory does "
            "not cross nodes; use weight_sync.backend=auto (gloo then) or gloo"
        )
    if choice == "auto":
        return "gloo" if elsewhere else "shm"
    return choice


class WeightSync:
    def __init__(self, learner: LearnerGroup, rollout, backend: str, bucket_mb: int, timeout_s: float, wire_dtype: str,
                 verify: bool = False, gpus: bool = False):
        """`backend`: weight_sync.backend (auto | gloo | nccl | shm), resolved at each connect() with `gpus` (both pools
        hold GPUs) and the actors' placement. `verify`: `verify()` will be called after broadcasts (so engines that can
        only digest what they receive take a digest at every broadcast from the start; without it they start at the
        first `verify()`)."""
        self.learner = learner
        self.rollout = rollout
        self.backend = backend
        self.gpus = gpus
        self.transport = backend  # what connect() chose
        self.timeout_s = timeout_s
        # The wire carries the rollout engine's dtype, so a worker's weights can equal the learner's bit for bit; the
        # plan is cut once here and handed to the learner and to every worker.
        self.plan = BucketPlan.of(learner.param_metas(wire_dtype), bucket_mb << 20)
        self.address: tuple[str, int] | None = None
        # An engine whose weights cannot be read back in the learner's form (vLLM) can only digest what it received,
        # at receive time; a transformers worker's digest is read back from its model when asked.
        self.receive_time_digests = rollout.digest_at_receive_only()
        self.keep_digests = verify
        self._last_digested = False  # whether the last broadcast left a receive-time digest on every worker
        self.version = 0  # the policy version the last broadcast sent (0: the workers hold models.policy)
        self.connect()

    def connect(self) -> None:
        """(Re)builds the weight group: learner rank 0 hosts its store on its own node, every worker rank joins. Called
        again after a worker is replaced: a collective group cannot take a new member, so everyone joins a new one
        (and the transport is chosen again: the replacement may run on another node)."""
        self.transport = self._transport()
        world = self.rollout.weight_group_world_size
        self.address = self.learner.host_weight_group(world, self.timeout_s)
        refs = self.learner.init_weight_group_refs(self.transport, *self.address, world, self.timeout_s)
        refs += self.rollout.init_weight_group(self.transport, *self.address, self.timeout_s, world)
        ray.get(refs, timeout=self.timeout_s)

    def _transport(self) -> str:
        """`backend` resolved (resolve_backend) against the nodes learner rank 0 and the workers run on."""
        if str(self.backend) in ("gloo", "nccl"):
            return str(self.backend)
        nodes = ray.get([_node_id(self.learner.ranks[0])] + [_node_id(w) for w in self.rollout.workers], timeout=self.timeout_s)
        transport = resolve_backend(self.backend, self.gpus, nodes[0], nodes[1:])
        log.info("weight transport: %s (weight_sync.backend=%s; %d of %d rollout workers on learner rank 0's node)",
                 transport, self.backend, sum(n == nodes[0] for n in nodes[1:]), len(nodes) - 1)
        return transport

    def broadcast(self, version: int) -> dict:
        """Sends the learner's weights, which are policy version `version` (a step number), to every worker; each
        worker stamps its later completions with it. A worker that died meanwhile is replaced, the group rebuilt and
        the broadcast sent again (a broadcast only copies the learner's weights, so repeating it is harmless)."""
        try:
            return self._broadcast(version)
        except ray.exceptions.RayError:
            if self.learner.dead_ranks() or not self.rollout.replace_dead():
                raise
            self.connect()
            return self._broadcast(version)

    def _broadcast(self, version: int) -> dict:
        started = time.perf_counter()
        digest = self.keep_digests and self.receive_time_digests
        self._last_digested = False
        send = self.learner.broadcast_refs(self.plan)
        receive = self.rollout.receive_weights(self.plan, digest=digest, version=version)
        sent = ray.get(send, timeout=self.timeout_s)
        ray.get(receive, timeout=self.timeout_s)
        self._last_digested = digest
        self.version = version
        return {"sync/bytes": sent[0]["bytes"], "time/sync": time.perf_counter() - started}

    def verify(self) -> dict:
        """1.0 when every worker's weights hash equal to the learner's (as sent on the wire), else 0.0."""
        if self.receive_time_digests and not self._last_digested:
            # The weights the workers hold came without a digest: send them once more (a broadcast only copies the
            # learner's weights, so this changes nothing else), this time digested, and digest every later one.
            log.info("verify: re-sending the weights once so every vLLM replica digests what it receives")
            self.keep_digests = True
            self.broadcast(self.version)
        expected = self.learner.weights_digest(self.plan)
        digests = self.rollout.digests()
        differing = [index for index, d in enumerate(digests) if d != expected]
        if differing:
            log.warning("verify: rollout worker(s) %s hold weights that differ from the learner's (digest %s...)",
                        differing, expected[:12])
        matching = len(digests) - len(differing)
        return {"sync/match": float(not differing), "sync/matching_workers": matching}
