"""One-node weight transport: rank 0 writes each bucket once into a /dev/shm segment and every receiver copies it out in
parallel, with ready/ack/done keys in the group's TCPStore as the only messages.

Why: gloo's broadcast sends to the receivers one after another, so its time grows with their number; here the sender's
work is one memcpy whatever the number of receivers, and the receivers read the same pages at the same time.

The segment holds the whole broadcast when it fits (the default): a receiver then yields views straight into it, valid
until the next broadcast starts (the sender waits for every receiver's "done" before it returns, and writes again only
at the next broadcast, once every receiver has entered it: "arrived"). With a smaller segment (`segment_bytes`), it
is a ring: buckets are cut into pieces of at most the segment's size, the sender writes a piece once every receiver
has acknowledged the piece that used those bytes before, and receivers copy each piece into a buffer of their own.

All members must see the same /dev/shm (one node): at join, rank 0 writes a random token into a probe file there and
every receiver must read it back, so a member on another node fails at once, saying why. On one node the members also
see each other's processes: a member waiting on a peer that has exited fails within a second instead of at the timeout.
"""

from __future__ import annotations

import datetime
import errno
import logging
import os
import socket
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from weightsync.meta import ParamMeta
from weightsync.plan import BucketPlan
from weightsync.transport import WeightTransport, register_transport

log = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"
ALIGN = 64  # piece offsets are aligned so a piece can be viewed as any dtype
FILE_PREFIX = "embodied-r-weights-"
MIN_RING_BYTES = 1 << 20  # the smallest ring tried when /dev/shm cannot hold the whole broadcast
LIVENESS_CHECK_S = 1.0  # how often a waiting member checks that the peers it waits on still run


@dataclass(frozen=True)
class Piece:
    """A contiguous part of one bucket's bytes and where it sits in the segment."""

    index: int  # position in the broadcast's stream of pieces
    bucket: int
    start: int  # byte offset inside the bucket
    length: int
    offset: int  # byte offset inside the segment

    @property
    def end(self) -> int:
        return self.offset + self.length


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def bucket_nbytes(bucket: tuple[ParamMeta, ...]) -> int:
    return sum(m.nbytes for m in bucket)


def plan_pieces(bucket_sizes: list[int], segment_bytes: int) -> tuple[list[Piece], bool]:
    """Cuts the buckets into pieces of at most `segment_bytes`, laid out one after another in the segment and wrapping
    to its start when the next piece does not fit. Returns the pieces and whether any byte of the segment is used twice
    (a ring, so receivers must copy out and acknowledge). Both ends compute it from the same inputs."""
    if segment_bytes < ALIGN:
        raise ValueError(f"shm segment must hold at least {ALIGN} bytes, got {segment_bytes}")
    pieces: list[Piece] = []
    cursor, used = 0, 0
    for b, nbytes in enumerate(bucket_sizes):
        start = 0
        while True:
            length = min(nbytes - start, segment_bytes)
            if cursor + length > segment_bytes:
                cursor = 0
            pieces.append(Piece(len(pieces), b, start, length, cursor))
            cursor = _align(cursor + length)
            used += _align(length)
            start += length
            if start >= nbytes:
                break
    return pieces, used > segment_bytes


def _flat_bytes(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The tensor's elements in the wire dtype, on the host, as a flat byte view (no copy when already so)."""
    return tensor.detach().to(device="cpu", dtype=dtype).reshape(-1).contiguous().view(torch.uint8)


@register_transport("shm")
class ShmWeightGroup(WeightTransport):
    """One member's handle on a shared-memory weight group (rank 0 sends, every other rank receives)."""

    # After a receive: whether the tensors it yielded were views into a segment that holds the whole broadcast. Each
    # later broadcast of the same weights over this group then rewrites those very bytes, so a receiver may use the
    # views as its weights (no copy at all: every receiver on the node shares one copy, written once by rank 0),
    # provided it never reads them while a broadcast is in progress (the driver sends between generation batches).
    persistent_views = False

    def __init__(self, backend: str, store: dist.Store, rank: int, world_size: int, timeout: datetime.timedelta,
                 segment_bytes: int | None = None):
        self.backend = backend
        if not os.path.isdir(SHM_DIR):
            raise RuntimeError(f"weight backend 'shm' needs {SHM_DIR} (Linux shared memory); use 'gloo'")
        self.rank, self.world_size, self.timeout = rank, world_size, timeout
        self.device = torch.device("cpu")
        self.segment_bytes = segment_bytes  # None: the whole broadcast
        self._base_store = store  # held for the group's lifetime
        self._store = dist.PrefixStore("weightsync-shm", store)
        self._generation = 0
        self._segment: torch.Tensor | None = None
        self._segment_path: str | None = None
        self._path_to_unlink: str | None = None  # the sender's file, until every receiver has mapped it
        self._finalizer = None
        self._peer_pids: dict[int, int] = {}  # rank -> pid of the peers this rank waits on
        self._join()

    # ---- set-up ------------------------------------------------------------------------------------------------
    def _wait(self, keys: list[str], what: str) -> None:
        """Waits for `keys` within the group's timeout, in short slices between which it checks that the peers it
        waits on are still running (a receiver that dies mid-broadcast fails the sender at once, as gloo would)."""
        deadline = time.monotonic() + self.timeout.total_seconds()
        while True:
            left = deadline - time.monotonic()
            try:
                self._store.wait(keys, datetime.timedelta(seconds=max(min(LIVENESS_CHECK_S, left), 0.001)))
                return
            except dist.DistError as error:
                missing = [k for k in keys if not self._store.check([k])]
                if not missing:
                    return
                dead = [rank for rank, pid in self._peer_pids.items() if not _alive(pid)]
                if dead:
                    raise RuntimeError(
                        f"shm weight group (rank {self.rank}): rank(s) {dead} exited while this rank waited for {what}"
                    ) from error
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"shm weight group (rank {self.rank} of {self.world_size}): no {what} within "
                        f"{self.timeout.total_seconds():g} s (still missing: {', '.join(missing)})"
                    ) from error

    def _watch(self, rank: int) -> None:
        """Watches `rank`'s process from now on, if this process can see it (one node, one pid namespace)."""
        pid = int(self._store.get(f"pid/{rank}").decode())
        if _alive(pid):
            self._peer_pids[rank] = pid

    def _join(self) -> None:
        host = socket.gethostname()
        receivers = range(1, self.world_size)
        self._store.set(f"pid/{self.rank}", str(os.getpid()))
        if self.rank == 0:
            token = uuid.uuid4().hex
            probe = os.path.join(SHM_DIR, f"{FILE_PREFIX}probe-{token}")
            with open(probe, "w") as f:
                f.write(token)
            try:
                self._store.set("probe", f"{probe}\n{token}\n{host}")
                self._wait([f"joined/{r}" for r in receivers], "join from every receiver")
                problems = [self._store.get(f"joined/{r}").decode() for r in receivers]
                problems = [p for p in problems if p != "ok"]
                if problems:
                    raise RuntimeError("weight backend 'shm': " + "; ".join(problems))
            finally:
                os.unlink(probe)
            for r in receivers:
                self._watch(r)
            return
        self._wait(["probe"], "probe from rank 0")
        probe, token, sender_host = self._store.get("probe").decode().split("\n")
        if _read_probe(probe) != token:
            reason = (
                f"rank {self.rank} (host {host}) cannot see rank 0's shared memory {probe} (host {sender_host}): it "
                "runs on another node or in another /dev/shm; 'shm' needs every rollout worker on the learner rank 0's "
                "node, use weight_sync.backend=gloo (or auto, which picks gloo then)"
            )
            self._store.set(f"joined/{self.rank}", reason)
            raise RuntimeError(f"weight backend 'shm': {reason}")
        self._watch(0)
        self._store.set(f"joined/{self.rank}", "ok")

    # ---- the segment -------------------------------------------------------------------------------------------
    def _ensure_segment(self, nbytes: int) -> None:
        """Rank 0: a segment of exactly `nbytes`, reused while the size holds."""
        if self._segment is not None and self._segment.numel() == nbytes:
            return
        self._drop_segment()
        path = os.path.join(SHM_DIR, f"{FILE_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}")
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            # Reserved now, not on first write: a full /dev/shm then fails here instead of killing the process by SIGBUS.
            os.posix_fallocate(fd, 0, nbytes)
        except OSError:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        self._segment = torch.from_file(path, shared=True, size=nbytes, dtype=torch.uint8)
        self._segment_path = self._path_to_unlink = path
        # Unlinked once every receiver has mapped it, or here if the process exits first.
        self._finalizer = weakref.finalize(self, _unlink_quietly, path)
        log.info("shm weight segment %s: %.1f MB", path, nbytes / 1e6)

    def _map_segment(self, path: str, nbytes: int) -> None:
        """A receiver: maps the segment rank 0 announced (it must exist: from_file would create an empty one)."""
        if self._segment_path == path and self._segment is not None:
            return
        if not os.path.exists(path):
            raise RuntimeError(f"weight backend 'shm': rank {self.rank} cannot find rank 0's segment {path}")
        self._segment = torch.from_file(path, shared=True, size=nbytes, dtype=torch.uint8)
        self._segment_path = path

    def _drop_segment(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # unlinks the sender's file if still there
            self._finalizer = None
        self._segment, self._segment_path, self._path_to_unlink = None, None, None

    # ---- the broadcast -----------------------------------------------------------------------------------------
    def send_buckets(self, buckets: BucketPlan, tensors_per_bucket: Iterable[list[torch.Tensor]]) -> int:
        """Rank 0: writes every bucket into the segment, announcing each piece; returns once every receiver is done."""
        if self.rank != 0:
            raise RuntimeError(f"shm weight group: only rank 0 sends (this is rank {self.rank})")
        self._generation += 1
        g = self._generation
        sizes = [bucket_nbytes(b) for b in buckets]
        total = sum(_align(s) for s in sizes)
        segment_bytes = _align(min(self.segment_bytes or total, total)) or ALIGN
        while True:
            try:
                self._ensure_segment(segment_bytes)
                break
            except OSError as error:  # /dev/shm too small (containers often give 64 MB): a smaller ring
                if error.errno != errno.ENOSPC or segment_bytes <= MIN_RING_BYTES:
                    raise RuntimeError(f"weight backend 'shm': cannot reserve {segment_bytes} bytes in {SHM_DIR} "
                                       f"({error}); enlarge it (docker --shm-size) or use gloo") from error
                smaller = _align(max(segment_bytes // 2, MIN_RING_BYTES))
                log.warning("%s has no room for a %.1f MB weight segment: using a %.1f MB ring", SHM_DIR,
                            segment_bytes / 1e6, smaller / 1e6)
                segment_bytes = self.segment_bytes = smaller
        pieces, ring = plan_pieces(sizes, segment_bytes)
        assert self._segment is not None
        receivers = range(1, self.world_size)
        keys: list[str] = [f"{g}/segment"]
        self._store.set(f"{g}/segment", f"{self._segment_path}\n{segment_bytes}")
        # The handshake: a receiver may be using the last broadcast's views of this segment as its weights (a
        # transformers engine's parameters, `persistent_views`), so nothing is written until every receiver has entered
        # this broadcast's receive, i.e. stopped reading them; whoever calls send_buckets, whenever.
        arrived = [f"{g}/arrived/{r}" for r in receivers]
        self._wait(arrived, "every receiver's arrival in the broadcast")
        keys += arrived
        outstanding: list[Piece] = []  # written, in ring mode not yet acknowledged by every receiver
        by_bucket: dict[int, list[Piece]] = {}
        for piece in pieces:
            by_bucket.setdefault(piece.bucket, []).append(piece)
        sent = 0
        count = 0
        for b, tensors in enumerate(tensors_per_bucket):
            count += 1
            dtype = buckets[b][0].torch_dtype
            sources = [_flat_bytes(t, dtype) for t in tensors]
            for piece in by_bucket[b]:
                if ring:
                    overlapping = [q for q in outstanding if q.offset < piece.end and piece.offset < q.end]
                    if overlapping:
                        acks = [f"{g}/ack/{q.index}/{r}" for q in overlapping for r in receivers]
                        self._wait(acks, f"acknowledgement of piece(s) {[q.index for q in overlapping]}")
                        outstanding = [q for q in outstanding if q not in overlapping]
                    outstanding.append(piece)
                    keys += [f"{g}/ack/{piece.index}/{r}" for r in receivers]
                self._copy_in(sources, piece)
                self._store.set(f"{g}/ready/{piece.index}", "")
                keys.append(f"{g}/ready/{piece.index}")
            sent += sizes[b]
        if count != len(buckets):
            raise ValueError(f"shm weight group: got tensors for {count} of {len(buckets)} buckets")
        done = [f"{g}/done/{r}" for r in receivers]
        self._wait(done, "'done' from every receiver")
        if self._path_to_unlink is not None:  # every receiver has it mapped now: nothing can leak it any more
            _unlink_quietly(self._path_to_unlink)
            self._path_to_unlink = None
        for key in keys + done:
            self._store.delete_key(key)
        return sent

    def _copy_in(self, sources: list[torch.Tensor], piece: Piece) -> None:
        """Copies bytes [piece.start, piece.start + piece.length) of the bucket (its tensors back to back) into the segment."""
        assert self._segment is not None
        position = 0  # byte offset of the current source inside the bucket
        lo, hi = piece.start, piece.start + piece.length
        for src in sources:
            n = src.numel()
            a, b = max(lo, position), min(hi, position + n)
            if a < b:
                dst = piece.offset + (a - lo)
                self._segment[dst : dst + (b - a)].copy_(src[a - position : b - position])
            position += n
            if position >= hi:
                break

    def receive_buckets(self, buckets: BucketPlan) -> Iterator[tuple[tuple[ParamMeta, ...], torch.Tensor]]:
        """A receiver: yields (bucket, flat tensor in the bucket's dtype) as each bucket is announced; says "done" once
        the caller has asked past the last one. Views into the segment when it holds the whole broadcast (valid until
        the next broadcast), else buffers of this process's own."""
        if self.rank == 0:
            raise RuntimeError("shm weight group: rank 0 sends, it does not receive")
        self._generation += 1
        g = self._generation
        self._store.set(f"{g}/arrived/{self.rank}", "")  # from here on this process reads no view of the segment
        self._wait([f"{g}/segment"], f"segment of broadcast {g} from rank 0")
        path, segment_bytes = self._store.get(f"{g}/segment").decode().split("\n")
        self._map_segment(path, int(segment_bytes))
        assert self._segment is not None
        sizes = [bucket_nbytes(b) for b in buckets]
        pieces, ring = plan_pieces(sizes, int(segment_bytes))
        self.persistent_views = not ring
        by_bucket: dict[int, list[Piece]] = {}
        for piece in pieces:
            by_bucket.setdefault(piece.bucket, []).append(piece)
        for b, bucket in enumerate(buckets):
            dtype = bucket[0].torch_dtype
            if not ring:
                (piece,) = by_bucket[b]
                self._wait([f"{g}/ready/{piece.index}"], f"bucket {b} of broadcast {g}")
                yield bucket, self._segment[piece.offset : piece.end].view(dtype)
                continue
            own = torch.empty(sizes[b], dtype=torch.uint8)
            for piece in by_bucket[b]:
                self._wait([f"{g}/ready/{piece.index}"], f"piece {piece.index} of broadcast {g}")
                own[piece.start : piece.start + piece.length].copy_(self._segment[piece.offset : piece.end])
                self._store.set(f"{g}/ack/{piece.index}/{self.rank}", "")
            yield bucket, own.view(dtype)
        self._store.set(f"{g}/done/{self.rank}", "")

    def close(self) -> None:
        """Drops the mapping (rank 0 also removes its file if a receiver never mapped it)."""
        self._drop_segment()
        self._store = None
        self._base_store = None


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _read_probe(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
