"""The rollout worker talks to its engine's weight receiving through the declared interface
(engines.weights.WeightReceiver) only: both policy engines implement it, a duck-typed engine is refused, and the
transformers engine's implementation receives a real gloo broadcast in this process."""

from __future__ import annotations

import threading

import pytest
import torch

from engines.weights import InProcessWeightReceiver, WeightReceiver
from rollout.config import RolloutConfig
from rollout.engines.hf_engine import HFEngine
from rollout.engines.vllm_engine import VLLMEngine
from rollout.worker import RolloutWorker

torch.set_num_threads(1)


def test_both_policy_engines_implement_the_weight_receiver():
    assert issubclass(HFEngine, InProcessWeightReceiver) and issubclass(VLLMEngine, WeightReceiver)
    for engine in (HFEngine, VLLMEngine):
        assert not engine.__abstractmethods__, f"{engine.__name__} leaves {set(engine.__abstractmethods__)} abstract"


class RecordingEngine(WeightReceiver):
    """Stands in for an engine to isolate the worker; records what the worker asks of it."""

    tokenizer = None

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def init_weight_group(self, backend, host, port, world_size, first_rank, timeout_s):
        self.calls.append(("init", backend, host, port, world_size, first_rank, timeout_s))
        return (first_rank, first_rank + 1)  # two tensor-parallel shards

    def receive_weights(self, plan, keep_digest=False):
        self.calls.append(("receive", plan, keep_digest))
        receipt = {"rank": 0, "seconds": 0.0, "bytes": 10, "buckets": 2}
        return [{**receipt, "digest": "abc"} if keep_digest else receipt] * 2

    def weights_digest(self):
        self.calls.append(("digest",))
        raise RuntimeError("no digest kept")

    def shutdown(self):
        self.calls.append(("shutdown",))


class DuckEngine:
    """Has every method, but does not declare the interface."""

    tokenizer = None
    init_weight_group = receive_weights = weights_digest = shutdown = RecordingEngine.shutdown


def _worker(monkeypatch, engine, rank: int = 3) -> RolloutWorker:
    monkeypatch.setattr("rollout.worker.create_engine", lambda *args, **kwargs: engine)
    return RolloutWorker("unused", RolloutConfig(engine="vllm", num_replicas=1), rank=rank)


def test_the_worker_delegates_every_weight_call_to_the_interface(monkeypatch):
    engine = RecordingEngine()
    worker = _worker(monkeypatch, engine)
    assert worker.init_weight_group("gloo", "h", 1, 5, 3, 9.0) == [3, 4]
    result = worker.receive_weights(["plan"], digest=True)
    assert (result["bytes"], result["buckets"], result["digest"], result["weight_version"], result["rank"]) == (10, 2, "abc", 1, 3)
    assert "digest" not in worker.receive_weights(["plan"])
    with pytest.raises(RuntimeError, match="rollout worker 3: no digest kept"):
        worker.weights_digest()
    worker.close()
    assert engine.calls == [
        ("init", "gloo", "h", 1, 5, 3, 9.0), ("receive", ["plan"], True), ("receive", ["plan"], False),
        ("digest",), ("shutdown",),
    ]


def test_an_engine_that_does_not_declare_the_interface_is_refused(monkeypatch):
    with pytest.raises(TypeError, match="DuckEngine does not implement engines.weights.WeightReceiver"):
        _worker(monkeypatch, DuckEngine())


def test_a_transformers_worker_receives_a_gloo_broadcast_in_process(policy_pair):
    from transformers import AutoModelForCausalLM

    from weightsync import BucketPlan, create_weight_group, metas_of, send_weights, weights_digest
    from weightsync.group import free_port

    worker = RolloutWorker(policy_pair[0], RolloutConfig(engine="transformers", num_replicas=1, num_cpus_per_replica=1), rank=1)
    with pytest.raises(RuntimeError, match="rollout worker 1: receive_weights called before init_weight_group"):
        worker.receive_weights(BucketPlan.of([], 1 << 16))
    source = AutoModelForCausalLM.from_pretrained(policy_pair[1], dtype=torch.float32)
    named = dict(source.named_parameters())
    metas = metas_of((n, p.shape, p.dtype) for n, p in named.items())
    port, bucket_bytes, sent = free_port(), 1 << 14, {}

    def learner() -> None:
        group = create_weight_group("gloo", "127.0.0.1", port, 2, 0, timeout_s=60)
        sent["bytes"] = send_weights(group, BucketPlan.of(metas, bucket_bytes), lambda bucket: [named[m.name] for m in bucket])
        group.close()

    thread = threading.Thread(target=learner, daemon=True)
    thread.start()
    assert worker.init_weight_group("gloo", "127.0.0.1", port, 2, 1, 60) == [1]
    result = worker.receive_weights(BucketPlan.of(metas, bucket_bytes), digest=True)
    thread.join(60)
    assert result["bytes"] == sent["bytes"] and result["buckets"] > 1 and result["weight_version"] == 1
    assert result["digest"] == weights_digest(named.items()) == worker.weights_digest()
    worker.close()
    assert worker.engine._weight_group is None  # left the group


def test_a_transformers_worker_over_shm_shares_the_segment_and_owns_its_weights_again_after(policy_pair):
    """Over shm (a segment holding the whole broadcast) the engine's parameters become the segment's views, so the
    next broadcast updates them with no copy on the worker; a plain load afterwards gives them storage of their own."""
    from transformers import AutoModelForCausalLM

    from weightsync import BucketPlan, create_weight_group, metas_of, send_weights, weights_digest
    from weightsync.group import free_port

    worker = RolloutWorker(policy_pair[0], RolloutConfig(engine="transformers", num_replicas=1, num_cpus_per_replica=1), rank=1)
    sources = [dict(AutoModelForCausalLM.from_pretrained(m, dtype=torch.float32).named_parameters()) for m in policy_pair]
    metas = metas_of((n, p.shape, p.dtype) for n, p in sources[1].items())
    port, bucket_bytes = free_port(), 1 << 14
    checked, ready = threading.Event(), threading.Event()

    def learner() -> None:
        group = create_weight_group("shm", "127.0.0.1", port, 2, 0, timeout_s=60)
        for named, then in ((sources[1], checked), (sources[0], ready)):  # two broadcasts of different weights
            send_weights(group, BucketPlan.of(metas, bucket_bytes), lambda bucket: [named[m.name] for m in bucket])
            then.wait(60)  # as the driver: the next broadcast only once the worker is done with this one
        group.close()

    thread = threading.Thread(target=learner, daemon=True)
    thread.start()
    assert worker.init_weight_group("shm", "127.0.0.1", port, 2, 1, 60) == [1]
    engine = worker.engine
    first = worker.receive_weights(BucketPlan.of(metas, bucket_bytes), digest=True)
    assert first["digest"] == weights_digest(sources[1].items())
    bound = {name: p.data_ptr() for name, p in engine.model.named_parameters()}
    assert engine._bound, "the parameters should now be the segment's views"
    checked.set()
    second = worker.receive_weights(BucketPlan.of(metas, bucket_bytes), digest=True)
    assert second["digest"] == weights_digest(sources[0].items())  # the second broadcast reached the model ...
    assert {name: p.data_ptr() for name, p in engine.model.named_parameters()} == bound  # ... in the same storage
    ready.set()
    thread.join(60)
    worker.close()
    engine.load_weights(sources[1].items())  # e.g. a ring segment or gloo later: copies into storage of its own
    assert not engine._bound and worker.weights_digest() == weights_digest(sources[1].items())
    assert all(p.data_ptr() != bound[name] for name, p in engine.model.named_parameters())
