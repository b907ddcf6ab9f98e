"""Ray placement groups, one per pool: each replica of a pool gets its bundles (whole or fractional GPUs, several for
tensor parallelism), reserved before any actor starts so a pool that cannot fit fails at once with what it asked."""

from __future__ import annotations

from dataclasses import dataclass, field

import ray
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


def free_resources() -> dict[str, float]:
    """What the cluster has free in the units bundles ask for: CPUs, GPUs and custom resources (Ray's memory figures and
    its node and placement-group bookkeeping entries left out, so a message stays readable)."""
    return {
        name: amount for name, amount in sorted(ray.available_resources().items())
        if name not in ("memory", "object_store_memory") and not name.startswith("node:") and "_group_" not in name
    }


def replica_bundles(num_cpus: float, num_gpus: float, tensor_parallel_size: int = 1, resources: dict | None = None) -> list[dict]:
    """The bundles one replica needs: one bundle with its CPUs and GPUs, or, tensor parallel over tp > 1 GPUs, one
    one-GPU bundle per shard, the first of which also holds the CPUs of the actor that drives the engine (the engine's
    own Ray workers take the GPUs). `resources` (custom Ray resources, e.g. a node label) go into the first bundle."""
    if tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
    first: dict = {"CPU": float(num_cpus)}
    if tensor_parallel_size == 1:
        if num_gpus:
            first["GPU"] = float(num_gpus)
        first.update(resources or {})
        return [first]
    first["GPU"] = 1.0
    first.update(resources or {})
    return [first] + [{"GPU": 1.0} for _ in range(tensor_parallel_size - 1)]


@dataclass
class Pool:
    """A reserved placement group: `size` replicas of `bundles_per_replica` consecutive bundles each. `timeout_s`: how
    long its bundles may go unplaced, at the reservation and after a node holding some of them died (Ray places them
    again on a live node that has their resources, e.g. a replacement node that joins meanwhile)."""

    name: str
    group: PlacementGroup
    num_cpus: float
    num_gpus: float
    size: int
    bundles_per_replica: int = 1
    bundles: list[dict] = field(default_factory=list)
    timeout_s: float = 120.0

    def first_bundle(self, index: int) -> int:
        return index * self.bundles_per_replica

    def bundle_indices(self, index: int) -> list[int]:
        """Every bundle of replica `index` (one, or one per tensor-parallel shard)."""
        first = self.first_bundle(index)
        return list(range(first, first + self.bundles_per_replica))

    def actor_options(self, index: int) -> dict:
        """`.options(**...)` for the actor that drives replica `index`: its resources and its first bundle. A tensor-
        parallel replica's actor takes no GPU itself; its child tasks (the engine's GPU workers) land in its bundles."""
        tensor_parallel = self.bundles_per_replica > 1
        return {
            "num_cpus": self.num_cpus,
            "num_gpus": 0 if tensor_parallel else self.num_gpus,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                placement_group=self.group,
                placement_group_bundle_index=self.first_bundle(index),
                placement_group_capture_child_tasks=tensor_parallel,
            ),
        }

    def unplaced_bundles(self) -> list[int]:
        """The bundles no live node holds now: those of a node that died, until Ray has placed them again."""
        table = placement_group_table(self.group)
        if table.get("state") == "CREATED":
            return []
        alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
        placed_on = table.get("bundles_to_node_id", {})
        return [index for index in range(len(self.bundles)) if placed_on.get(index) not in alive]

    def release(self) -> None:
        remove_placement_group(self.group)


def reserve_pool(
    name: str,
    size: int,
    num_cpus: float,
    num_gpus: float,
    strategy: str = "PACK",
    timeout_s: float = 120.0,
    tensor_parallel_size: int = 1,
    resources: dict | None = None,
) -> Pool:
    """Reserves `size` replicas' bundles (`replica_bundles`); fails with what was asked and what is free if the
    cluster cannot fit them within `timeout_s`."""
    if size < 1:
        raise ValueError(f"the {name} pool needs at least one replica, got {size}")
    per_replica = replica_bundles(num_cpus, num_gpus, tensor_parallel_size, resources)
    bundles = [dict(bundle) for _ in range(size) for bundle in per_replica]
    group = placement_group(bundles, strategy=strategy, name=f"embodied-r-{name}")
    ready, _ = ray.wait([group.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(group)
        raise RuntimeError(
            f"the {name} pool needs {size} x {per_replica} but the cluster has {free_resources()} free; "
            f"lower {name} resources in the config or add nodes"
        )
    return Pool(name=name, group=group, num_cpus=num_cpus, num_gpus=num_gpus, size=size,
                bundles_per_replica=len(per_replica), bundles=bundles, timeout_s=timeout_s)
