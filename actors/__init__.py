"""The actor runtime under every pool: placement groups, groups of Ray actors that start, answer, die and are replaced."""

from actors.group import ActorGroup, ActorGroupError
from actors.placement import Pool, replica_bundles, reserve_pool

__all__ = ["ActorGroup", "ActorGroupError", "Pool", "replica_bundles", "reserve_pool"]
