"""actors/group.py with real Ray actors: the replacement budget, the ready timeout and a failed start (both naming the
actors), bundles no node has (a lost node's) ending the wait in the pool's timeout, the health check, and call_each's
one-argument-list-per-actor check."""

from __future__ import annotations

import sys
import time

import pytest

ray = pytest.importorskip("ray")

from actors.group import ActorGroup, ActorGroupError, PlacementLost  # noqa: E402
from actors.placement import Pool  # noqa: E402

pytestmark = pytest.mark.slow
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this test module


class Replica:
    def __init__(self, index: int, ready_delay_s: float = 0.0, fail: bool = False) -> None:
        if fail:
            raise RuntimeError(f"replica {index} cannot load its model")
        self.index, self.ready_delay_s = index, ready_delay_s

    def ready(self) -> int:
        time.sleep(self.ready_delay_s)
        return self.index

    def add(self, value: int) -> int:
        return self.index + value


def _kill(handle) -> None:
    """ray.kill, then wait until a call to the actor fails (the kill itself is asynchronous)."""
    ray.kill(handle, no_restart=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ray.get(handle.ready.remote(), timeout=5)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return
        time.sleep(0.1)
    raise AssertionError("the killed actor still answers")


def _group(size: int = 2, max_replacements: int = 0, start: bool = True, **args) -> ActorGroup:
    return ActorGroup("replicas", Replica, lambda i: (i, args.get("delays", {}).get(i, 0.0), i in args.get("fail", ())),
                      size, num_cpus=0.1, max_replacements=max_replacements, ready_timeout_s=60, start=start)


def test_replacements_stop_at_the_budget_and_the_health_check_finds_the_dead(ray_local):
    group = _group(max_replacements=1)
    try:
        assert group.dead() == []
        first = group.handles[1]
        _kill(first)
        assert group.dead(timeout_s=10) == [1]
        fresh = group.replace(1, "killed by the test")
        assert fresh is not first and group.replacements == 1
        assert ray.get(fresh.ready.remote()) == 1 and group.dead() == []
        _kill(group.handles[0])
        with pytest.raises(ActorGroupError, match=r"actor 0 died \(killed again\) and the group has used all 1 replacements"):
            group.replace(0, "killed again")
        assert group.replacements == 1 and group.dead(timeout_s=10) == [0]
    finally:
        group.shutdown()


def test_replace_all_starts_the_replacements_side_by_side_within_the_budget(ray_local):
    group = _group(size=2, max_replacements=2)
    try:
        old = list(group.handles)
        for handle in old:
            _kill(handle)
        group.replace_all([0, 1], "their node died")
        assert all(new is not gone for new, gone in zip(group.handles, old)) and group.replacements == 2
        assert ray.get([handle.ready.remote() for handle in group.handles]) == [0, 1]
    finally:
        group.shutdown()


def test_a_slow_start_times_out_naming_the_actor_and_a_failed_start_is_an_actor_group_error(ray_local):
    slow = _group(start=False, delays={1: 30.0})
    try:
        slow.launch()
        slow.wait_ready([0], timeout_s=120)  # actor 0 is up (on a loaded machine a start alone may take seconds)
        started = time.monotonic()
        with pytest.raises(ActorGroupError, match=r"replicas: actor\(s\) \[1\] not ready after 2.0 s \(each asks"):
            slow.wait_ready(range(2), timeout_s=2.0)
        assert time.monotonic() - started < 15
    finally:
        slow.shutdown()
    with pytest.raises(ActorGroupError, match="(?s)replicas: an actor failed to start: .*replica 0 cannot load its model"):
        _group(fail={0})


def test_call_each_takes_one_argument_list_per_actor(ray_local):
    group = _group(size=2)
    try:
        assert ray.get(group.call_each("add", [(10,), (20,)])) == [10, 21]
        with pytest.raises(ValueError, match="replicas: 1 argument lists for 2 actors"):
            group.call_each("add", [(10,)])
        with pytest.raises(ValueError, match="replicas: 3 argument lists for 2 actors"):
            group.call_each("add", [(1,), (2,), (3,)])
    finally:
        group.shutdown()


def test_actors_whose_bundles_no_live_node_has_stop_waiting_in_the_pools_timeout_naming_the_bundle(ray_local):
    """What a lost node leaves: bundles no live node holds (here a bundle asking for a resource no node has, as after its
    only node died). The wait ends after the pool's timeout (1 s), not the actors' ready timeout (60 s), with
    PlacementLost naming the bundle's resources."""
    from ray.util.placement_group import placement_group, remove_placement_group

    bundle = {"CPU": 0.1, "lost_node": 1.0}
    group = placement_group([bundle], name="embodied-r-test-lost")
    pool = Pool(name="replicas", group=group, num_cpus=0.1, num_gpus=0.0, size=1, bundles=[bundle], timeout_s=1.0)
    try:
        assert pool.unplaced_bundles() == [0]
        started = time.monotonic()
        with pytest.raises(PlacementLost, match=r"replicas: no live node has the resources of bundle\(s\) \[\{'CPU': 0.1, "
                                                r"'lost_node': 1.0\}\], which actor\(s\) \[0\] need") as lost:
            ActorGroup("replicas", Replica, lambda i: (i,), 1, pool=pool, ready_timeout_s=60)
        assert lost.value.missing == [bundle] and time.monotonic() - started < 30
    finally:
        remove_placement_group(group)
