"""Ray placement groups, one per pool, so each pool's actors get their own bundles (whole or fractional GPUs)."""

from __future__ import annotations

from dataclasses import dataclass

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


@dataclass
class Pool:
    name: str
    group: PlacementGroup
    num_cpus: float
    num_gpus: float
    size: int

    def actor_options(self, index: int) -> dict:
        """`.options(**...)` for the actor that takes bundle `index` of this pool."""
        return {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                placement_group=self.group, placement_group_bundle_index=index
            ),
        }

    def release(self) -> None:
        remove_placement_group(self.group)


def reserve_pool(name: str, size: int, num_cpus: float, num_gpus: float, strategy: str = "PACK", timeout_s: float = 120.0) -> Pool:
    """Reserves `size` bundles; fails with the resources asked and available if the cluster cannot fit them."""
    bundle = {"CPU": num_cpus}
    if num_gpus:
        bundle["GPU"] = num_gpus
    group = placement_group([dict(bundle) for _ in range(size)], strategy=strategy, name=f"embodied-r-{name}")
    ready, _ = ray.wait([group.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(group)
        raise RuntimeError(
            f"the {name} pool needs {size} x {bundle} but the cluster has {ray.available_resources()} free; "
            f"lower {name} resources in the config or add nodes"
        )
    return Pool(name=name, group=group, num_cpus=num_cpus, num_gpus=num_gpus, size=size)
