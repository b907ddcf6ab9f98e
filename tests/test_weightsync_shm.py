"""The shared-memory weight transport: exact bytes in separate receiver processes, several broadcasts in a row, a
segment smaller or larger than a bucket, no file left in /dev/shm, and clear errors on a timeout or another node."""

from __future__ import annotations

import datetime
import glob
import multiprocessing as mp
import os
import time

import pytest
import torch
import torch.distributed as dist

from weightsync import BucketPlan, ParamMeta, create_weight_group, metas_of, receive_weights, send_weights, weights_digest
from weightsync.group import free_port
from weightsync.shm import ALIGN, FILE_PREFIX, SHM_DIR, plan_pieces

BUCKET_BYTES = 4096


def _weights(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(100, 16, generator=gen),  # 6400 bytes: a bucket of its own, larger than BUCKET_BYTES
        "layer.0.bias": torch.randn(16, generator=gen),
        "layer.0.weight": torch.randn(16, 16, generator=gen),
        "norm.weight": torch.randn(17, generator=gen).to(torch.bfloat16),  # odd byte count: offsets must realign
        "scale": torch.randn((), generator=gen),
        "head.weight": torch.randn(30, 16, generator=gen),
    }


def _metas() -> list[ParamMeta]:
    return metas_of((n, t.shape, t.dtype) for n, t in _weights(0).items())


def _segment_files() -> set[str]:
    return set(glob.glob(os.path.join(SHM_DIR, FILE_PREFIX + "*")))


def _receiver(port: int, rank: int, world: int, rounds: int, queue, linger_s: float = 0.0) -> None:
    try:
        group = create_weight_group("shm", "127.0.0.1", port, world, rank, timeout_s=60)
        metas = _metas()
        model = {m.name: torch.zeros(m.shape, dtype=m.torch_dtype) for m in metas}  # what a rollout engine holds
        for _ in range(rounds):
            for bucket in receive_weights(group, BucketPlan.of(metas, BUCKET_BYTES)):
                for name, tensor in bucket:
                    model[name].copy_(tensor)
            queue.put((rank, weights_digest(model.items())))
        time.sleep(linger_s)
        group.close()
    except Exception as error:  # reported to the test, which would otherwise only see a timeout
        queue.put((rank, f"error: {error!r}"))


def _start_receivers(target, port: int, world: int, rounds: int):
    """Receiver processes of ranks 1 .. world - 1 running `target`, and the queue they report on."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(port, rank, world, rounds, queue)) for rank in range(1, world)]
    for proc in procs:
        proc.start()
    return procs, queue


def _join_receivers(procs) -> None:
    """Waits for the receiver processes; one still running after 30 s is killed."""
    for proc in procs:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()


def test_plan_pieces_cuts_buckets_and_wraps_the_ring():
    # Whole broadcast: one piece per bucket, aligned offsets, nothing reused.
    pieces, ring = plan_pieces([100, 6400, 30], segment_bytes=128 + 6400 + 64)
    assert not ring
    assert [(p.bucket, p.start, p.length, p.offset) for p in pieces] == [(0, 0, 100, 0), (1, 0, 6400, 128), (2, 0, 30, 6528)]
    assert all(p.offset % ALIGN == 0 for p in pieces)
    # A segment smaller than a bucket: the bucket goes in pieces of at most the segment, wrapping to its start.
    pieces, ring = plan_pieces([100, 2500], segment_bytes=1024)
    assert ring
    assert [(p.bucket, p.start, p.length, p.offset) for p in pieces] == [
        (0, 0, 100, 0), (1, 0, 1024, 0), (1, 1024, 1024, 0), (1, 2048, 452, 0)]
    pieces, _ = plan_pieces([300, 300, 300, 300], segment_bytes=1024)
    assert [p.offset for p in pieces] == [0, 320, 640, 0]
    assert all(p.end <= 1024 for p in pieces)


def test_broadcasts_reach_two_processes_bit_exact_whatever_the_segment_size():
    """Several broadcasts in a row to two receiver processes, each with new values; the sender's segment holds the
    whole broadcast, then less than one bucket (a ring), then more than a bucket, then the whole broadcast again
    (the receivers learn the size from the sender at each broadcast)."""
    metas = _metas()
    assert any(sum(m.nbytes for m in b) > 1024 for b in BucketPlan.of(metas, BUCKET_BYTES))  # 1024 splits a bucket
    segment_sizes = [None, 1024, 1 << 20, None]
    port, world = free_port(), 3
    procs, queue = _start_receivers(_receiver, port, world, len(segment_sizes))
    before = _segment_files()
    try:
        group = create_weight_group("shm", "127.0.0.1", port, world, 0, timeout_s=60)
        for round_index, segment_bytes in enumerate(segment_sizes):
            group.segment_bytes = segment_bytes
            weights = _weights(round_index)  # new values every round: a stale segment would show
            sent = send_weights(group, BucketPlan.of(metas, BUCKET_BYTES), lambda bucket: [weights[m.name] for m in bucket])
            assert sent == sum(m.nbytes for m in metas)
            results = dict(queue.get(timeout=60) for _ in procs)
            expected = weights_digest(weights.items())
            assert results == {1: expected, 2: expected}, f"round {round_index} (segment {segment_bytes}): {results}"
            # Every receiver has mapped the segment: its name is already gone from /dev/shm.
            assert _segment_files() - before == set()
        group.close()
    finally:
        _join_receivers(procs)
    assert all(p.exitcode == 0 for p in procs)
    assert _segment_files() - before == set()


def test_sender_times_out_clearly_when_a_receiver_never_reads():
    port = free_port()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_receiver, args=(port, 1, 2, 0, queue, 4.0))  # joins, then receives nothing
    proc.start()
    before = _segment_files()
    group = create_weight_group("shm", "127.0.0.1", port, 2, 0, timeout_s=60)
    group.timeout = datetime.timedelta(seconds=2)  # only the broadcast's wait is short (the join waits for the spawn)
    weights = _weights(0)
    with pytest.raises(TimeoutError, match=r"every receiver's arrival in the broadcast within 2 s .*arrived/1"):
        send_weights(group, BucketPlan.of(_metas(), BUCKET_BYTES), lambda bucket: [weights[m.name] for m in bucket])
    group.close()
    proc.join(timeout=30)
    assert _segment_files() - before == set()  # the receiver never mapped it: close removed it


def test_sender_fails_at_once_when_a_receiver_exits():
    port = free_port()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()  # held: the child unpickles it after start()
    proc = ctx.Process(target=_receiver, args=(port, 1, 2, 0, queue))  # joins, then exits
    proc.start()
    group = create_weight_group("shm", "127.0.0.1", port, 2, 0, timeout_s=60)
    proc.join(timeout=30)
    weights = _weights(0)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"rank\(s\) \[1\] exited while this rank waited for every receiver's arrival"):
        send_weights(group, BucketPlan.of(_metas(), BUCKET_BYTES), lambda bucket: [weights[m.name] for m in bucket])
    assert time.monotonic() - started < 10  # not the 60 s timeout
    group.close()


def test_join_times_out_naming_the_missing_rank():
    with pytest.raises(TimeoutError, match=r"join from every receiver within 1 s .*joined/2"):
        store_port = free_port()
        store = dist.TCPStore("127.0.0.1", store_port, 3, is_master=True, timeout=datetime.timedelta(seconds=5),
                              wait_for_workers=False)
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_receiver, args=(store_port, 1, 3, 0, queue))
        proc.start()
        try:
            create_weight_group("shm", "127.0.0.1", store_port, 3, 0, timeout_s=1, store=store)
        finally:
            proc.join(timeout=30)


def test_a_receiver_that_cannot_see_the_segment_says_it_is_on_another_node(monkeypatch):
    """A member whose /dev/shm is not rank 0's (another node) is refused at join, on both ends, saying why."""
    import threading

    import weightsync.shm as shm

    port = free_port()
    store = dist.TCPStore("127.0.0.1", port, 2, is_master=True, timeout=datetime.timedelta(seconds=10), wait_for_workers=False)
    errors: dict[str, Exception] = {}

    def sender() -> None:
        try:
            create_weight_group("shm", "127.0.0.1", port, 2, 0, timeout_s=10, store=store)
        except Exception as error:
            errors["sender"] = error

    thread = threading.Thread(target=sender)
    thread.start()
    monkeypatch.setattr(shm, "_read_probe", lambda path: None)  # as a process on another node finds /dev/shm
    with pytest.raises(RuntimeError, match="another node.*weight_sync.backend=gloo"):
        create_weight_group("shm", "127.0.0.1", port, 2, 1, timeout_s=10)
    thread.join(timeout=20)
    assert "cannot see rank 0's shared memory" in str(errors["sender"])


def test_the_driver_resolves_the_transport_once_from_the_config_and_the_placement():
    from cluster.config import WEIGHT_BACKENDS, load_config
    from cluster.weight_sync import gpu_pools, resolve_backend
    from weightsync import TRANSPORTS

    assert resolve_backend("auto", False, "n0", ["n0", "n0"]) == "shm"
    assert resolve_backend("auto", False, "n0", ["n0", "n1"]) == "gloo"
    assert resolve_backend("auto", True, "n0", ["n0", "n1"]) == "nccl"  # both pools on GPUs
    assert resolve_backend("gloo", False, "n0", ["n0"]) == "gloo"
    with pytest.raises(RuntimeError, match=r"worker\(s\) \[1\] run on \['n1'\].*weight_sync.backend=auto"):
        resolve_backend("shm", False, "n0", ["n0", "n1"])
    assert not gpu_pools(load_config(None, []))
    assert gpu_pools(load_config(None, ["rollout.num_gpus_per_replica=1", "learner.num_gpus_per_replica=1"]))
    # The config's choices are the registered transports and "auto"; "auto" itself never reaches a transport.
    assert set(WEIGHT_BACKENDS) == {"auto", *TRANSPORTS}
    with pytest.raises(ValueError, match="resolve 'auto'"):
        create_weight_group("auto", "127.0.0.1", free_port(), 1, 0, timeout_s=5)


def test_a_full_dev_shm_gives_a_smaller_ring_not_a_crash(monkeypatch):
    """posix_fallocate refusing the whole broadcast (ENOSPC, as in a container's 64 MB /dev/shm) halves the segment."""
    import errno

    import weightsync.shm as shm

    real = os.posix_fallocate
    asked: list[int] = []

    def fallocate(fd: int, offset: int, length: int) -> None:
        asked.append(length)
        if length > (1 << 20):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, offset, length)

    monkeypatch.setattr(shm.os, "posix_fallocate", fallocate)
    group = create_weight_group("shm", "127.0.0.1", free_port(), 1, 0, timeout_s=10)  # no receivers: nothing to wait on
    metas = [ParamMeta("big", (1 << 20,), "float32")]  # 4 MiB
    before = _segment_files()
    send_weights(group, BucketPlan.of(metas, 8 << 20), lambda bucket: [torch.ones(1 << 20)])
    assert asked == [4 << 20, 2 << 20, 1 << 20] and group.segment_bytes == 1 << 20
    group.close()
    assert _segment_files() - before == set()


def _binding_receiver(port: int, rank: int, world: int, rounds: int, queue) -> None:
    """Takes the views as its weights when the transport says they persist (a transformers engine's bind_weights)."""
    try:
        group = create_weight_group("shm", "127.0.0.1", port, world, rank, timeout_s=60)
        metas = _metas()
        model = {m.name: torch.zeros(m.shape, dtype=m.torch_dtype) for m in metas}
        for _ in range(rounds):
            rebound = 0
            for bucket in receive_weights(group, BucketPlan.of(metas, BUCKET_BYTES)):
                for name, tensor in bucket:
                    if not group.persistent_views:
                        model[name].copy_(tensor)
                    elif model[name].data_ptr() != tensor.data_ptr():
                        model[name], rebound = tensor, rebound + 1
            queue.put((rank, weights_digest(model.items()), group.persistent_views, rebound))
        group.close()
    except Exception as error:
        queue.put((rank, f"error: {error!r}", None, None))


def test_receivers_may_use_the_segment_as_their_weights():
    """With a segment holding the whole broadcast, a receiver that takes the views as its weights binds them once;
    every later broadcast reaches it with no copy on its side (rank 0's write is the whole broadcast). A ring segment
    says its views do not persist, and the receiver copies again."""
    metas = _metas()
    segment_sizes = [None, None, 1024, None]
    port, world = free_port(), 3
    procs, queue = _start_receivers(_binding_receiver, port, world, len(segment_sizes))
    try:
        group = create_weight_group("shm", "127.0.0.1", port, world, 0, timeout_s=60)
        seen = []
        for round_index, segment_bytes in enumerate(segment_sizes):
            group.segment_bytes = segment_bytes
            weights = _weights(round_index + 10)
            send_weights(group, BucketPlan.of(metas, BUCKET_BYTES), lambda bucket: [weights[m.name] for m in bucket])
            results = {rank: rest for rank, *rest in (queue.get(timeout=60) for _ in procs)}
            expected = weights_digest(weights.items())
            assert all(digest == expected for digest, _, _ in results.values()), (round_index, results)
            seen.append({rank: (persistent, rebound) for rank, (_, persistent, rebound) in results.items()})
        group.close()
    finally:
        _join_receivers(procs)
    everything = len(metas)
    assert seen[0] == {1: (True, everything), 2: (True, everything)}  # bound on the first broadcast
    assert seen[1] == {1: (True, 0), 2: (True, 0)}  # the same bytes rewritten: nothing to do on the receivers
    assert seen[2] == {1: (False, 0), 2: (False, 0)}  # a ring: copied
    assert seen[3] == {1: (True, everything), 2: (True, everything)}  # a new whole segment: bound again
