"""A pool of `Judge` replicas as Ray actors: requests are split into batches across the replicas and collected with a
deadline; a batch that times out or fails yields None for each of its samples (counted in `failures`), never 0.

Each replica runs the judge engine `cfg.engine` names (transformers, an in-process vLLM engine, or an OpenAI-compatible
endpoint; see rewards/judge.py); batching, deadlines and failure accounting are the same for all three, and a request
that an engine fails on comes back as None and is counted like a failed batch's.

Replica failures: Ray restarts a crashed replica up to `max_restarts` times; a replica that is dead for good is
replaced by a fresh actor, which gets work again once it has loaded its model.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ray

from actors import ActorGroup, Pool
from rewards.config import JudgeConfig
from rewards.judge import JudgeRequest, judge_class

log = logging.getLogger(__name__)


@dataclass
class JudgeCall:
    ref: Any  # ray.ObjectRef of one Judge.judge call
    begin: int  # the call judges requests[begin:end]
    end: int
    replica: int
    actor: Any  # the actor handle the call went to (a replica may be replaced later)


@dataclass
class JudgeTicket:
    """Judgements in flight: returned by `JudgePool.submit`, redeemed with `JudgePool.collect`."""

    calls: list[JudgeCall]
    num_requests: int
    submitted_at: float  # time.perf_counter() at submit
    deadline: float  # submitted_at + timeout_s


@dataclass
class JudgeResult:
    letters: list[str | None]  # one per request; None where its batch timed out or failed
    failures: int = 0  # requests without a judgement (in failed batches, or ones the judge could not judge)
    failed_batches: int = 0
    latency_s: float = 0.0  # from submit to the end of collect
    errors: list[str] = field(default_factory=list)  # one line per failed batch


class JudgePool:
    """`cfg.num_replicas` Judge actors loading `model_path` (default `cfg.model`).

    `pool` (the driver's reservation, one bundle per replica) places the replicas; without it Ray places them by their
    resource requests.
    """

    def __init__(
        self,
        cfg: JudgeConfig,
        model_path: str | None = None,
        pool: Pool | None = None,
        ready_timeout_s: float | None = 600.0,
    ) -> None:
        if cfg.num_replicas < 1:
            raise ValueError(f"judge.num_replicas must be >= 1, got {cfg.num_replicas}")
        if cfg.batch_size < 1:
            raise ValueError(f"judge.batch_size must be >= 1, got {cfg.batch_size}")
        if not cfg.timeout_s > 0:
            raise ValueError(f"judge.timeout_s must be > 0, got {cfg.timeout_s}")
        engine = judge_class(cfg.engine)  # refuses an unknown engine
        engine.check_config(cfg)
        self.cfg = cfg
        self.model_path = model_path or cfg.model
        if self.model_path in ("", "???"):
            raise ValueError("judge.model is not set: name the reference LM (a hub id or a local path)")
        # One torch thread per reserved CPU, so replicas on one node do not oversubscribe its cores.
        num_threads = max(1, int(cfg.num_cpus_per_replica))
        # Ray restarts a crashed judge in place (max_restarts: it holds nothing but its model); one dead for good is
        # replaced by the group, as often as it dies (a judge replica costs only its load time).
        self.actors = ActorGroup(
            "judge", engine, lambda _index: (self.model_path, cfg, None, num_threads), cfg.num_replicas,
            num_cpus=cfg.num_cpus_per_replica, num_gpus=cfg.num_gpus_per_replica, pool=pool,
            max_replacements=10**9, ray_max_restarts=cfg.max_restarts, start=False,
        )
        self.actors.launch()  # each replica's readiness is watched below, so a slow one does not hold up the others
        self._loading: dict[int, Any] = {}  # replacement replica index -> its ready() ref, until it has loaded
        self._broken: set[int] = set()  # replicas whose replacement failed to load; not replaced again
        # Cumulative counters over the pool's life, for metrics.
        self.requests_total = 0
        self.failures = 0
        self.failed_batches = 0
        self.latencies_s: deque[float] = deque(maxlen=1000)  # the latest collects' latencies
        self._next_replica = 0
        if ready_timeout_s is not None:
            self.wait_ready(ready_timeout_s)

    @property
    def replicas(self) -> list[Any]:
        return self.actors.handles

    def _replace(self, index: int, reason: str) -> None:
        replacement = self.actors.replace(index, reason, wait=False)
        self._loading[index] = replacement.ready.remote()

    @property
    def replaced(self) -> int:
        return self.actors.replacements

    def _usable_replicas(self) -> list[int]:
        """Replicas with a loaded model; all of them if every one is still loading (their calls then queue)."""
        for index, ref in list(self._loading.items()):
            done, _ = ray.wait([ref], timeout=0)
            if not done:
                continue
            del self._loading[index]
            try:
                ray.get(ref)
            except ray.exceptions.ActorDiedError as exc:
                # Replacing again would likely fail the same way (bad path, out of memory): leave it out, loudly.
                log.error("judge replica %d: its replacement failed to load (%s); it gets no more work", index, exc)
                self._broken.add(index)
            except ray.exceptions.RayError:
                pass  # restarting: its calls fail or queue, and are counted if they fail
        everyone = [index for index in range(len(self.replicas)) if index not in self._broken]
        usable = [index for index in everyone if index not in self._loading]
        # With none loaded, calls queue on the loading ones; with every replica broken they fail and are counted.
        return usable or everyone or list(range(len(self.replicas)))

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Blocks until every replica has loaded its model; a clear error if that takes longer than `timeout_s`."""
        deadline = None if timeout_s is None else time.perf_counter() + timeout_s
        waiting = [replica for index, replica in enumerate(self.replicas) if index not in self._broken]
        while waiting:
            remaining = None if deadline is None else max(0.0, deadline - time.perf_counter())
            refs = [replica.ready.remote() for replica in waiting]
            ready, pending = ray.wait(refs, num_returns=len(refs), timeout=remaining)
            if pending:
                raise TimeoutError(
                    f"{len(pending)} of {len(self.replicas)} judge replicas ({self.model_path}) not ready after "
                    f"{timeout_s} s: are {self.cfg.num_cpus_per_replica} CPUs / {self.cfg.num_gpus_per_replica} GPUs "
                    "per replica available?"
                )
            still_restarting = []
            for replica, ref in zip(waiting, refs):
                try:
                    ray.get(ref)
                except ray.exceptions.ActorUnavailableError:
                    still_restarting.append(replica)  # Ray is restarting it (max_restarts): ask again
                except ray.exceptions.ActorDiedError as exc:
                    raise RuntimeError(f"a judge replica failed to load {self.model_path}: {exc}") from exc
            waiting = still_restarting
            if waiting:
                time.sleep(0.1)
        self._loading.clear()

    def submit(self, requests: Sequence[JudgeRequest], timeout_s: float | None = None) -> JudgeTicket:
        """Sends the requests to the replicas in batches (spread evenly, at most batch_size each) and returns at once.

        The ticket's deadline is now + `timeout_s` (default cfg.timeout_s).
        """
        timeout_s = self.cfg.timeout_s if timeout_s is None else timeout_s
        if not timeout_s > 0:
            raise ValueError(f"judge timeout must be > 0, got {timeout_s}")
        now = time.perf_counter()
        calls: list[JudgeCall] = []
        if requests:
            usable = self._usable_replicas()
            per_call = min(self.cfg.batch_size, math.ceil(len(requests) / len(usable)))
            for begin in range(0, len(requests), per_call):
                end = min(begin + per_call, len(requests))
                replica = usable[self._next_replica % len(usable)]
                self._next_replica += 1
                actor = self.replicas[replica]
                ref = actor.judge.remote(list(requests[begin:end]))
                calls.append(JudgeCall(ref=ref, begin=begin, end=end, replica=replica, actor=actor))
        return JudgeTicket(calls=calls, num_requests=len(requests), submitted_at=now, deadline=now + timeout_s)

    def collect(self, ticket: JudgeTicket) -> JudgeResult:
        """Waits until the ticket's deadline (submit + timeout_s) at most; batches not done by then count as failed."""
        result = JudgeResult(letters=[None] * ticket.num_requests)
        refs = [call.ref for call in ticket.calls]
        if refs:
            remaining = max(0.0, ticket.deadline - time.perf_counter())
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=remaining)
            ready_set = set(ready)
            for call in ticket.calls:
                size = call.end - call.begin
                error = None
                if call.ref not in ready_set:
                    # Not cancelled: cancelling an actor task that is still being submitted leaves a gap in the
                    # actor's task sequence, and its next calls stall for 30 s and fail. A late batch finishes on the
                    # actor and its result is ignored.
                    error = f"timed out after {ticket.deadline - ticket.submitted_at:g} s"
                else:
                    try:
                        letters = ray.get(call.ref)
                        if len(letters) != size:
                            error = f"returned {len(letters)} judgements for {size} requests"
                        else:
                            result.letters[call.begin : call.end] = letters
                            result.failures += sum(letter is None for letter in letters)  # requests it could not judge
                    except ray.exceptions.RayError as exc:  # actor died, task raised, object lost
                        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        # Dead for good (restarts used up or killed): replace it, unless an earlier collect did.
                        if (
                            isinstance(exc, ray.exceptions.ActorDiedError)
                            and self.replicas[call.replica] is call.actor
                            and call.replica not in self._broken
                        ):
                            self._replace(call.replica, type(exc).__name__)
                if error is not None:
                    result.failed_batches += 1
                    result.failures += size
                    result.errors.append(f"replica {call.replica}, requests {call.begin}..{call.end - 1}: {error}")
        result.latency_s = time.perf_counter() - ticket.submitted_at
        self.requests_total += ticket.num_requests
        self.failures += result.failures
        self.failed_batches += result.failed_batches
        self.latencies_s.append(result.latency_s)
        for line in result.errors:
            log.warning("judge batch failed (%s); its samples get no consistency judgement: %s", self.model_path, line)
        return result

    def judge(self, requests: Sequence[JudgeRequest], timeout_s: float | None = None) -> JudgeResult:
        return self.collect(self.submit(requests, timeout_s))

    def stats(self) -> dict[str, float]:
        latencies = sorted(self.latencies_s)
        return {
            "judge/requests": float(self.requests_total),
            "judge/failures": float(self.failures),
            "judge/failed_batches": float(self.failed_batches),
            "judge/latency_mean_s": sum(latencies) / len(latencies) if latencies else 0.0,
            "judge/latency_max_s": latencies[-1] if latencies else 0.0,
            "judge/replicas_replaced": float(self.replaced),
        }

    def shutdown(self) -> None:
        self.actors.shutdown()
