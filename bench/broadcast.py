"""Weight broadcast from one sender to 1, 2 and 3 receiver Ray actors on one node, per transport (weightsync's gloo and
shm backends, and Ray's object store as a reference), against a memcpy of the same bytes measured in the same run.

Every process runs one torch thread (as a rollout worker with one CPU does). A receiver loads each bucket into weights
of its own (preallocated, like a rollout engine's parameters) and must end with the sender's digest; with
`shm-shared` it takes the segment's views as its weights instead (what a transformers rollout engine does over shm:
`bind_weights`), so rank 0's one write is the whole broadcast. A broadcast's time
runs from the sender's start to the end of the last receiver (or of the sender, if later); each figure is the median
of `--repeats` broadcasts after one warm-up, set against a memcpy of the same bytes timed just before it.

    .venv/bin/python -m bench.broadcast                 # ~100M fp32 parameters (400 MB)
    .venv/bin/python -m bench.broadcast --params 5e6    # a quick run
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import ray
import torch

from weightsync import BucketPlan, create_weight_group, metas_of, receive_weights, send_weights, weights_digest
from weightsync.rendezvous import host_store

TRANSPORTS = ("gloo", "shm", "shm-shared", "ray")  # shm-shared: receivers use the segment as their weights


def make_weights(num_params: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A policy-like list of fp32 matrices (an embedding, then 1024-wide layers) adding up to `num_params`."""
    gen = torch.Generator().manual_seed(seed)
    hidden = 1024
    weights = {"embed.weight": torch.randn(min(32_000, max(num_params // hidden // 4, 1)), hidden, generator=gen)}
    left, layer = num_params - weights["embed.weight"].numel(), 0
    while left > 0:
        rows = min(4 * hidden, max(left // hidden, 1))
        if left < hidden:
            weights[f"layers.{layer}.bias"] = torch.randn(left, generator=gen)
            break
        weights[f"layers.{layer}.weight"] = torch.randn(rows, hidden, generator=gen)
        left -= rows * hidden
        layer += 1
    return weights


def _one_thread() -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


@ray.remote(num_cpus=1)
class Sender:
    def __init__(self, num_params: int):
        _one_thread()
        self.weights = make_weights(num_params)
        self.metas = metas_of((n, t.shape, t.dtype) for n, t in self.weights.items())
        self.group = None
        self.store = None

    def metas_and_bytes(self):
        return self.metas, sum(m.nbytes for m in self.metas)

    def digest(self) -> str:
        return weights_digest(self.weights.items())

    def memcpy(self, repeats: int) -> dict:
        """Seconds to copy every weight once into preallocated memory, and into freshly allocated memory."""
        into = {n: torch.empty_like(t) for n, t in self.weights.items()}
        preallocated, fresh = [], []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            for name, tensor in self.weights.items():
                into[name].copy_(tensor)
            preallocated.append(time.perf_counter() - start)
            start = time.perf_counter()
            copies = [t.clone() for t in self.weights.values()]
            fresh.append(time.perf_counter() - start)
            del copies
        return {"preallocated": statistics.median(preallocated[1:]), "fresh": statistics.median(fresh[1:])}

    def host(self, world_size: int, timeout_s: float) -> tuple[str, int]:
        self.store, host, port = host_store(world_size, timeout_s)
        return host, port

    def join(self, backend: str, host: str, port: int, world_size: int, timeout_s: float) -> None:
        self.group = create_weight_group(backend, host, port, world_size, 0, timeout_s, store=self.store)

    def send(self, plan: BucketPlan) -> tuple[float, float]:
        start = time.time()
        send_weights(self.group, plan, lambda bucket: [self.weights[m.name] for m in bucket])
        return start, time.time()

    def put(self, plan: BucketPlan) -> tuple[float, float, list]:
        """Ray's object store: one object per bucket (flat, fp32)."""
        start = time.time()
        refs = [
            ray.put(torch.cat([self.weights[m.name].reshape(-1) for m in bucket]).numpy())
            for bucket in plan
        ]
        return start, time.time(), refs

    def leave(self) -> None:
        if self.group is not None:
            self.group.close()
        self.group = self.store = None


@ray.remote(num_cpus=1)
class Receiver:
    def __init__(self, metas):
        _one_thread()
        self.metas = metas
        self.model = {m.name: torch.zeros(m.shape, dtype=m.torch_dtype) for m in metas}  # touched: pages mapped
        self.group = None

    def reset(self) -> None:
        """Back to weights of its own, zeroed (a shm-shared run left them pointing into its segment)."""
        self.model = {m.name: torch.zeros(m.shape, dtype=m.torch_dtype) for m in self.metas}

    def join(self, backend: str, host: str, port: int, world_size: int, rank: int, timeout_s: float) -> None:
        self.group = create_weight_group(backend, host, port, world_size, rank, timeout_s)

    def receive(self, plan: BucketPlan, bind: bool = False) -> float:
        for bucket in receive_weights(self.group, plan):
            for name, tensor in bucket:
                if bind and self.group.persistent_views:  # what a transformers engine's bind_weights does
                    if self.model[name].data_ptr() != tensor.data_ptr():
                        self.model[name] = tensor
                else:
                    self.model[name].copy_(tensor)  # what a rollout engine's load_weights does
        return time.time()

    def get(self, holder: list, plan: BucketPlan) -> float:
        for bucket, ref in zip(plan, holder[0], strict=True):
            flat, offset = torch.from_numpy(ray.get(ref)), 0  # a read-only view of the object store's copy
            for meta in bucket:
                self.model[meta.name].copy_(flat[offset : offset + meta.numel].view(meta.shape))
                offset += meta.numel
            del flat
        return time.time()

    def digest(self) -> str:
        return weights_digest(self.model.items())

    def leave(self) -> None:
        if self.group is not None:
            self.group.close()
        self.group = None


def broadcast_once(transport: str, sender, receivers: list, plan: BucketPlan) -> float:
    if transport == "ray":
        start, _, refs = ray.get(sender.put.remote(plan))
        ends = ray.get([r.get.remote([refs], plan) for r in receivers])
        del refs
        return max(ends) - start
    send = sender.send.remote(plan)
    ends = ray.get([r.receive.remote(plan, bind=transport == "shm-shared") for r in receivers])
    start, sender_end = ray.get(send)
    return max(max(ends), sender_end) - start


def measure(transport: str, sender, receivers: list, plan: BucketPlan, repeats: int, expected: str, timeout_s: float) -> list[float]:
    ray.get([r.reset.remote() for r in receivers])
    if transport != "ray":
        world = len(receivers) + 1
        host, port = ray.get(sender.host.remote(world, timeout_s))
        backend = "shm" if transport == "shm-shared" else transport
        joins = [sender.join.remote(backend, host, port, world, timeout_s)]
        joins += [r.join.remote(backend, host, port, world, rank, timeout_s) for rank, r in enumerate(receivers, 1)]
        ray.get(joins)
    try:
        times = [broadcast_once(transport, sender, receivers, plan) for _ in range(repeats + 1)][1:]
        digests = ray.get([r.digest.remote() for r in receivers])
        if any(d != expected for d in digests):
            raise AssertionError(f"{transport}: {sum(d != expected for d in digests)} of {len(receivers)} receivers "
                                 "do not hold the sender's weights")
    finally:
        ray.get([a.leave.remote() for a in [sender, *receivers]])
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=float, default=100e6, help="fp32 parameters to broadcast (default 1e8)")
    parser.add_argument("--bucket-mb", type=int, default=64, help="bucket size (weight_sync.bucket_mb's default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--receivers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--transports", nargs="+", default=list(TRANSPORTS), choices=TRANSPORTS)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    args = parser.parse_args(argv)
    bucket_bytes = args.bucket_mb << 20

    ray.init(num_cpus=1 + max(args.receivers), include_dashboard=False, log_to_driver=False)
    try:
        sender = Sender.remote(int(args.params))
        metas, nbytes = ray.get(sender.metas_and_bytes.remote())
        plan = BucketPlan.of(metas, bucket_bytes)
        receivers = [Receiver.remote(metas) for _ in range(max(args.receivers))]
        expected = ray.get(sender.digest.remote())
        memcpy = ray.get(sender.memcpy.remote(args.repeats))
        gb = nbytes / 1e9
        print(f"{len(metas)} tensors, {sum(m.numel for m in metas) / 1e6:.1f}M fp32 parameters = {nbytes / 1e6:.0f} MB, "
              f"{args.bucket_mb} MB buckets ({len(plan)}), one torch thread per process")
        print(f"memcpy of the same bytes: {memcpy['preallocated']:.3f} s = {gb / memcpy['preallocated']:.2f} GB/s into "
              f"preallocated memory (the baseline below); {memcpy['fresh']:.3f} s = {gb / memcpy['fresh']:.2f} GB/s "
              "into fresh memory")
        print("each row's % is against a memcpy (preallocated) measured just before it, so a shared machine's load "
              "falls on both")
        print(f"{'transport':<10} {'receivers':>9} {'seconds':>8} {'GB/s':>6} {'memcpy s':>9} {'% memcpy':>9} {'vs 1':>6}"
              "   all runs (s)")
        for transport in args.transports:
            first = None
            for count in args.receivers:
                baseline = ray.get(sender.memcpy.remote(args.repeats))["preallocated"]
                times = measure(transport, sender, receivers[:count], plan, args.repeats, expected, args.timeout_s)
                seconds = statistics.median(times)
                first = first or seconds
                print(f"{transport:<10} {count:>9} {seconds:>8.3f} {gb / seconds:>6.2f} {baseline:>9.3f} "
                      f"{100 * baseline / seconds:>8.0f}% {seconds / first:>5.2f}x   "
                      + " ".join(f"{t:.3f}" for t in times), flush=True)
        print("every receiver ended with the sender's weights (sha256 digest) after every transport")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
