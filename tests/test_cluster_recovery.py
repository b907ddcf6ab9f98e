"""The driver's recovery paths as units: a learner restart refused once trainer.max_restarts is spent; the weight
broadcast retried once after a rollout worker died mid-broadcast (and not retried when the learner died, or when no
worker was found dead). (A gloo broadcast that a member never joins: tests/test_weightsync.py.)"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import ray

import cluster.driver as train_module
from cluster.driver import TrainingPools
from cluster.weight_sync import WeightSync


# ---- trainer.max_restarts ---------------------------------------------------------------------------------------------
class _Learner:
    def __init__(self, log: list) -> None:
        self.log = log

    def shutdown(self) -> None:
        self.log.append("shutdown")


def _pools(monkeypatch, max_restarts: int):
    log: list = []
    cfg = SimpleNamespace(trainer=SimpleNamespace(max_restarts=max_restarts))
    pools = TrainingPools(cfg, models=None)
    pools.learner = _Learner(log)
    monkeypatch.setattr(pools, "start_learner", lambda: log.append("start_learner"))
    monkeypatch.setattr(pools, "connect_sync", lambda: setattr(pools, "sync", SimpleNamespace(
        broadcast=lambda version: log.append(("broadcast", version)))))
    monkeypatch.setattr(train_module, "begin", lambda *args, **kwargs: (log.append("begin") or (4, True)))
    return pools, cfg, log


def test_a_learner_restart_within_trainer_max_restarts_rebuilds_from_the_checkpoint(monkeypatch):
    pools, cfg, log = _pools(monkeypatch, max_restarts=2)
    error = ray.exceptions.RayActorError()
    assert pools.restart_learner(cfg, Path("/run"), None, [], error) == 4
    assert pools.restart_learner(cfg, Path("/run"), None, [], error) == 4
    assert log == ["shutdown", "start_learner", "begin", ("broadcast", 4)] * 2
    assert pools.learner_restarts == 2


def test_a_learner_restart_beyond_trainer_max_restarts_is_refused_naming_the_key_and_the_resume(monkeypatch):
    pools, cfg, log = _pools(monkeypatch, max_restarts=1)
    error = ray.exceptions.RayActorError()
    pools.restart_learner(cfg, Path("/run"), None, [], error)
    log.clear()
    with pytest.raises(RuntimeError, match=r"trainer.max_restarts=1 restarts are used up; resume with: .*/run/config.yaml "
                                           r"trainer.resume=true") as refused:
        pools.restart_learner(cfg, Path("/run"), None, [], error)
    assert refused.value.__cause__ is error
    assert log == []  # nothing was torn down or rebuilt
    with pytest.raises(RuntimeError, match="max_restarts=0"):
        _pools(monkeypatch, max_restarts=0)[0].restart_learner(SimpleNamespace(trainer=SimpleNamespace(max_restarts=0)),
                                                               Path("/run"), None, [], error)


# ---- the broadcast's retry ----------------------------------------------------------------------------------------------
class _Side:
    """The learner group and the rollout pool as WeightSync uses them; `fail_sends` broadcasts raise as a dead worker's."""

    def __init__(self, fail_sends: int, dead_ranks: list[int], dead_workers: list[int]) -> None:
        self.fail_sends, self._dead_ranks, self._dead_workers = fail_sends, dead_ranks, dead_workers
        self.events: list = []

    # learner group
    def param_metas(self, dtype):
        return []

    def broadcast_refs(self, plan):
        self.events.append("send")
        if self.fail_sends:
            self.fail_sends -= 1
            raise ray.exceptions.RayActorError()
        return [{"bytes": 7}]

    def dead_ranks(self):
        return self._dead_ranks

    # rollout pool
    def receive_weights(self, plan, digest, version):
        return [None]

    def digest_at_receive_only(self):
        return False

    def replace_dead(self):
        self.events.append("replace_dead")
        return self._dead_workers


@pytest.fixture
def sync_of(monkeypatch):
    """WeightSync over a stand-in learner and pool: their "refs" are the values themselves, so ray.get returns them
    (no Ray runtime is needed to test the retry's logic)."""
    import cluster.weight_sync as weight_sync

    monkeypatch.setattr(weight_sync.ray, "get", lambda refs, timeout=None: refs)

    def make(side: _Side) -> WeightSync:
        monkeypatch.setattr(WeightSync, "connect", lambda self: side.events.append("connect"))
        sync = WeightSync(side, side, backend="gloo", bucket_mb=1, timeout_s=30, wire_dtype="float32")
        side.events.clear()
        return sync

    return make


def test_a_worker_dead_mid_broadcast_is_replaced_and_the_broadcast_sent_again(sync_of):
    side = _Side(fail_sends=1, dead_ranks=[], dead_workers=[1])
    assert sync_of(side).broadcast(3)["sync/bytes"] == 7
    assert side.events == ["send", "replace_dead", "connect", "send"]


@pytest.mark.parametrize("dead_ranks, dead_workers", [([0], [1]), ([], [])], ids=["learner-dead", "no-worker-dead"])
def test_the_broadcast_is_not_retried_when_the_learner_died_or_no_worker_did(sync_of, dead_ranks, dead_workers):
    side = _Side(fail_sends=1, dead_ranks=dead_ranks, dead_workers=dead_workers)
    with pytest.raises(ray.exceptions.RayActorError):
        sync_of(side).broadcast(3)
    assert "connect" not in side.events and side.events.count("send") == 1


def test_a_second_failure_after_the_retry_is_raised(sync_of):
    side = _Side(fail_sends=2, dead_ranks=[], dead_workers=[1])
    with pytest.raises(ray.exceptions.RayActorError):
        sync_of(side).broadcast(3)
    assert side.events == ["send", "replace_dead", "connect", "send"]
