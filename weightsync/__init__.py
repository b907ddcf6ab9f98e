"""Weight transport from learner rank 0 to the rollout workers: one interface (weightsync/transport.py) over a stand-alone
process group (gloo, NCCL) or shared memory on one node, and a bucketed send and receive along one BucketPlan."""

from weightsync.buckets import receive_weights, send_weights
from weightsync.digest import weights_digest
from weightsync.group import WeightGroup
from weightsync.meta import ParamMeta, metas_of
from weightsync.plan import BucketPlan
from weightsync.shm import ShmWeightGroup
from weightsync.transport import TRANSPORTS, WeightTransport, create_weight_group, register_transport

__all__ = [
    "TRANSPORTS",
    "BucketPlan",
    "ParamMeta",
    "ShmWeightGroup",
    "WeightGroup",
    "WeightTransport",
    "create_weight_group",
    "metas_of",
    "receive_weights",
    "register_transport",
    "send_weights",
    "weights_digest",
]
