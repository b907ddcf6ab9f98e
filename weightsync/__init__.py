"""Weight transport from learner rank 0 to the rollout workers: a stand-alone group (gloo, NCCL, or shared memory on one node) and a bucketed broadcast."""

from weightsync.buckets import plan_buckets, receive_weights, send_weights
from weightsync.digest import weights_digest
from weightsync.group import BACKENDS, WeightGroup, create_weight_group
from weightsync.shm import ShmWeightGroup
from weightsync.meta import ParamMeta, metas_of

__all__ = [
    "BACKENDS",
    "ShmWeightGroup",
    "ParamMeta",
    "WeightGroup",
    "create_weight_group",
    "metas_of",
    "plan_buckets",
    "receive_weights",
    "send_weights",
    "weights_digest",
]
