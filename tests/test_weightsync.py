"""The weight group and bucketed broadcast: real gloo groups in separate processes, exact bytes on arrival."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest
import torch

from weightsync import BucketPlan, ParamMeta, create_weight_group, metas_of, receive_weights, send_weights, weights_digest
from weightsync.group import free_port


def _named_weights(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(50, 16, generator=gen),
        "layer.0.bias": torch.randn(16, generator=gen),
        "layer.0.weight": torch.randn(16, 16, generator=gen),
        "norm.weight": torch.randn(16, generator=gen).to(torch.bfloat16),
        "scale": torch.randn((), generator=gen),
    }


def _receiver(port: int, rank: int, world: int, metas: list[ParamMeta], queue) -> None:
    group = create_weight_group("gloo", "127.0.0.1", port, world, rank, timeout_s=30)
    received = {}
    for bucket in receive_weights(group, BucketPlan.of(metas, 1024)):
        received.update({name: t.clone() for name, t in bucket})
    queue.put((rank, weights_digest(received.items())))


def test_plan_buckets_respects_size_and_dtype():
    metas = [ParamMeta("a", (100,), "float32"), ParamMeta("b", (100,), "float32"), ParamMeta("c", (10,), "bfloat16"), ParamMeta("d", (1000,), "float32")]
    buckets = BucketPlan.of(metas, bucket_bytes=600)
    assert [[m.name for m in b] for b in buckets] == [["a"], ["b"], ["c"], ["d"]]
    buckets = BucketPlan.of(metas, bucket_bytes=800)
    assert [[m.name for m in b] for b in buckets] == [["a", "b"], ["c"], ["d"]]
    assert all(len({m.dtype for m in b}) == 1 for b in buckets)


def test_broadcast_reaches_every_worker_bit_exact():
    weights = _named_weights(0)
    metas = metas_of((n, t.shape, t.dtype) for n, t in weights.items())
    port, world = free_port(), 3
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_receiver, args=(port, r, world, metas, queue)) for r in (1, 2)]
    for p in procs:
        p.start()
    group = create_weight_group("gloo", "127.0.0.1", port, world, 0, timeout_s=30)
    sent = send_weights(group, BucketPlan.of(metas, 1024), lambda bucket: [weights[m.name] for m in bucket])
    results = dict(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert sent == sum(m.nbytes for m in metas)
    expected = weights_digest(weights.items())
    assert results == {1: expected, 2: expected}


def test_digest_sees_a_one_ulp_change():
    weights = _named_weights(1)
    before = weights_digest(weights.items())
    weights["layer.0.weight"][3, 4] = torch.nextafter(weights["layer.0.weight"][3, 4], torch.tensor(10.0))
    assert weights_digest(weights.items()) != before


def test_shape_mismatch_is_refused():
    port = free_port()
    group = create_weight_group("gloo", "127.0.0.1", port, 1, 0, timeout_s=5)
    metas = [ParamMeta("w", (4,), "float32")]
    with pytest.raises(ValueError, match="w: shape"):
        send_weights(group, BucketPlan.of(metas, 1024), lambda bucket: [torch.zeros(5)])


def _silent_member(port: int, joined) -> None:
    """Joins the group as rank 1, then never takes part in a broadcast (as a hung worker would)."""
    group = create_weight_group("gloo", "127.0.0.1", port, 2, 1, timeout_s=30)
    joined.set()
    time.sleep(60)
    group.close()


def test_a_gloo_broadcast_that_a_member_never_joins_fails_within_the_timeout():
    port = free_port()
    ctx = mp.get_context("spawn")
    joined = ctx.Event()
    member = ctx.Process(target=_silent_member, args=(port, joined), daemon=True)
    member.start()
    try:
        # The store waits as long as the member takes to start (a loaded machine); the group's own timeout is 2 s.
        import datetime

        import torch.distributed as dist

        store = dist.TCPStore("127.0.0.1", port, 2, is_master=True, timeout=datetime.timedelta(seconds=120),
                              wait_for_workers=True)
        group = create_weight_group("gloo", "127.0.0.1", port, 2, 0, timeout_s=2, store=store)
        assert joined.wait(120)
        started = time.monotonic()
        with pytest.raises((TimeoutError, RuntimeError), match="(?i)timed out|within"):
            group.broadcast(torch.zeros(4))
        assert time.monotonic() - started < 20
    finally:
        member.kill()
        member.join(timeout=10)
