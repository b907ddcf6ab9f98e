"""A group of Ray actors of one class, one replica per slot of a reserved pool: started together, ready-checked, called
together, health-checked, replaced one by one, and shut down.

Every pool of the system (learner ranks, rollout workers, judges, perception describers) is a thin user of this class;
what each slot runs is the pool's business, how slots live and die is this one's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import ray

from actors.placement import Pool, free_resources

log = logging.getLogger(__name__)


class ActorGroupError(RuntimeError):
    """A group's actors failed to start, or a replacement was refused by the restart policy."""


class PlacementLost(ActorGroupError):
    """Actors wait for bundles that a dead node held and no live node has taken within the pool's `timeout_s`."""

    def __init__(self, message: str, group: str, missing: list[dict]):
        super().__init__(message)
        self.group, self.missing = group, missing


def _node_ip() -> str:
    return ray.util.get_node_ip_address()


class ActorGroup:
    """`size` actors of `actor_class`, actor i built with `args_of(i)`.

    With a `pool`, actor i takes replica i's bundles (`Pool.actor_options`); without one it is scheduled by its
    `num_cpus` / `num_gpus` alone. `max_replacements` bounds how many dead actors `replace` starts afresh over the
    group's life (the restart policy); `ray_max_restarts` is Ray's own restart of a crashed actor in place, for actors
    whose state a restart does not lose (judges, describers: a model and nothing else).
    """

    def __init__(
        self,
        name: str,
        actor_class: type,
        args_of: Callable[[int], Sequence[Any]],
        size: int,
        *,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        pool: Pool | None = None,
        max_replacements: int = 0,
        ray_max_restarts: int = 0,
        ready_method: str = "ready",
        ready_timeout_s: float | None = 600.0,
        start: bool = True,
    ) -> None:
        if size < 1:
            raise ValueError(f"the {name} group needs at least one actor, got {size}")
        if pool is not None and pool.size < size:
            raise ValueError(f"the {name} group has {size} actors but its pool reserved {pool.size} replicas")
        self.name = name
        self.size = size
        self.pool = pool
        self.max_replacements = max_replacements
        self.replacements = 0  # actors replaced since the group started
        self._remote = ray.remote(actor_class)
        self._args_of = args_of
        self._num_cpus, self._num_gpus = num_cpus, num_gpus
        self._ray_max_restarts = ray_max_restarts
        self._ready_method = ready_method
        self._ready_timeout_s = ready_timeout_s
        self.handles: list[Any] = []
        if start:
            self.start()

    # ---- life ---------------------------------------------------------------------------------------------------
    def options(self, index: int) -> dict:
        """The `.options(**...)` actor `index` is created with."""
        if self.pool is not None:
            options = self.pool.actor_options(index)
        else:
            options = {"num_cpus": self._num_cpus, "num_gpus": self._num_gpus}
        if self._ray_max_restarts:
            options["max_restarts"] = self._ray_max_restarts
        return options

    def _spawn(self, index: int) -> Any:
        return self._remote.options(**self.options(index)).remote(*self._args_of(index))

    def launch(self) -> None:
        """Creates every actor at once (their constructors run in parallel); `wait_ready` waits for them."""
        self.handles = [self._spawn(index) for index in range(self.size)]

    def start(self) -> None:
        """`launch`, then wait until every actor is ready."""
        self.launch()
        self.wait_ready(range(self.size))
        log.info("%s: %d actor(s) ready", self.name, self.size)

    def wait_ready(self, indices: Sequence[int] | range, timeout_s: float | None = None) -> list[Any]:
        """Waits for the `ready` method of the given actors; returns their answers. A failed or slow start raises
        ActorGroupError naming the actors and the resources they asked for; actors whose bundles were lost with a
        node and not placed again within the pool's `timeout_s` raise PlacementLost, naming those bundles."""
        indices = list(indices)
        timeout_s = self._ready_timeout_s if timeout_s is None else timeout_s
        refs = [getattr(self.handles[i], self._ready_method).remote() for i in indices]
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        pending, unplaced_since = list(refs), None

        def not_ready() -> list[int]:
            waiting = set(pending)
            return [i for i, ref in zip(indices, refs) if ref in waiting]

        while pending and (deadline is None or time.monotonic() < deadline):
            wait_s = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=wait_s)
            if pending and self.pool is not None:
                # Checked once a second: a GCS read, so a lost node stops the wait in the pool's timeout, not 600 s.
                unplaced_since = self._check_placement(not_ready(), unplaced_since)
        if pending:
            slow = not_ready()
            raise ActorGroupError(
                f"{self.name}: actor(s) {slow} not ready after {timeout_s} s (each asks {self.options(slow[0])}); "
                f"free now: {free_resources()}"
            )
        try:
            return ray.get(refs)
        except ray.exceptions.RayError as error:
            raise ActorGroupError(f"{self.name}: an actor failed to start: {error}") from error

    def _check_placement(self, waiting: list[int], unplaced_since: float | None) -> float | None:
        """Raises PlacementLost once bundles of the `waiting` actors have been unplaced for the pool's timeout;
        returns since when they have been (None while every one is placed)."""
        own = {bundle for index in waiting for bundle in self.pool.bundle_indices(index)}
        unplaced = [bundle for bundle in self.pool.unplaced_bundles() if bundle in own]
        if not unplaced:
            return None
        now = time.monotonic()
        if unplaced_since is None:
            log.warning("%s: bundle(s) %s of actor(s) %s have no live node (lost with theirs?); waiting up to %g s for "
                        "the cluster to place them again", self.name, unplaced, waiting, self.pool.timeout_s)
            return now
        if now - unplaced_since < self.pool.timeout_s:
            return unplaced_since
        missing = [self.pool.bundles[bundle] for bundle in unplaced]
        raise PlacementLost(
            f"{self.name}: no live node has the resources of bundle(s) {missing}, which actor(s) {waiting} need (their "
            f"node died, and none took them in {self.pool.timeout_s:g} s); free now: {free_resources()}. "
            "Add a node that has them", self.name, missing)

    def replace(self, index: int, reason: str, wait: bool = True) -> Any:
        """Kills actor `index` (if it still lives) and starts a fresh one in its bundles, within the restart policy;
        returns the new handle, once it is ready unless `wait` is False (the caller then watches its `ready`)."""
        if self.replacements >= self.max_replacements:
            raise ActorGroupError(
                f"{self.name}: actor {index} died ({reason}) and the group has used all {self.max_replacements} "
                "replacements its restart policy allows"
            )
        self.replacements += 1
        log.warning("%s: actor %d is dead (%s); starting a replacement (%d of %d allowed)",
                    self.name, index, reason, self.replacements, self.max_replacements)
        self._kill(self.handles[index])
        self.handles[index] = self._spawn(index)
        if wait:
            self.wait_ready([index])
        return self.handles[index]

    def replace_all(self, indices: Sequence[int], reason: str) -> None:
        """`replace` each of `indices`, the replacements starting side by side (a lost node's workers come back in one
        start-up, not one after the other); returns once all are ready."""
        for index in indices:
            self.replace(index, reason, wait=False)
        if indices:
            self.wait_ready(indices)

    def shutdown(self) -> None:
        """Kills every actor; safe to call twice and on a group whose actors already died."""
        for handle in self.handles:
            self._kill(handle)
        self.handles = []

    @staticmethod
    def _kill(handle: Any) -> None:
        try:
            ray.kill(handle, no_restart=True)
        except Exception:  # already gone
            log.debug("killing an actor failed", exc_info=True)

    # ---- calls --------------------------------------------------------------------------------------------------
    def call(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Starts `method(*args, **kwargs)` on every actor; returns the ObjectRefs in actor order."""
        return [getattr(handle, method).remote(*args, **kwargs) for handle in self.handles]

    def call_each(self, method: str, args_per_actor: Sequence[Sequence[Any]]) -> list[Any]:
        """Starts `method(*args_per_actor[i])` on actor i; returns the ObjectRefs."""
        if len(args_per_actor) != len(self.handles):
            raise ValueError(f"{self.name}: {len(args_per_actor)} argument lists for {len(self.handles)} actors")
        return [getattr(handle, method).remote(*args) for handle, args in zip(self.handles, args_per_actor)]

    def run(self, method: str, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> list[Any]:
        """`call` and wait for every answer."""
        return ray.get(self.call(method, *args, **kwargs), timeout=timeout_s)

    def dead(self, timeout_s: float = 10.0) -> list[int]:
        """Health check: the actors that no longer answer (dead, or silent for `timeout_s`)."""
        refs = [getattr(handle, self._ready_method).remote() for handle in self.handles]
        deadline = time.monotonic() + timeout_s
        dead = []
        for index, ref in enumerate(refs):
            try:
                ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
            except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
                dead.append(index)
        return dead

    def node_ips(self) -> list[str]:
        """The IP of the node each actor runs on."""
        return ray.get([handle.__ray_call__.remote(lambda _self: _node_ip()) for handle in self.handles])

    def __len__(self) -> int:
        return len(self.handles)
