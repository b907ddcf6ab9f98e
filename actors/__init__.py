"""The actor runtime under every pool: placement groups, groups of Ray actors that start, answer, die and are replaced."""

from actors.group import ActorGroup, ActorGroupError, PlacementLost
from actors.placement import Pool, replica_bundles, reserve_pool

__all__ = ["ActorGroup", "ActorGroupError", "PlacementLost", "Pool", "replica_bundles", "reserve_pool"]
