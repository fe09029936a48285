"""Seldon Core 2 control-plane protocols: the Chainer and Scheduler gRPC APIs.

The ``.proto`` files in ``protos/`` are the wire contract; ``generated/`` holds the committed
stubs (``python -m chainer_api.regenerate``). Import messages from here so every module uses
the same classes.
"""
from chainer_api.generated import chainer_pb2, chainer_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

PipelineUpdateMessage = chainer_pb2.PipelineUpdateMessage
PipelineStepUpdate = chainer_pb2.PipelineStepUpdate
PipelineTopic = chainer_pb2.PipelineTopic
PipelineTensorMapping = chainer_pb2.PipelineTensorMapping
Batch = chainer_pb2.Batch
PipelineUpdateStatusMessage = chainer_pb2.PipelineUpdateStatusMessage
PipelineSubscriptionRequest = chainer_pb2.PipelineSubscriptionRequest

# Operations as plain ints, named as in the proto (join types: dataflow.joins.JoinType).
OP_UNKNOWN = PipelineUpdateMessage.Unknown
OP_CREATE = PipelineUpdateMessage.Create
OP_DELETE = PipelineUpdateMessage.Delete
OP_REBALANCE = PipelineUpdateMessage.Rebalance
OP_READY = PipelineUpdateMessage.Ready

__all__ = [
    "chainer_pb2", "chainer_pb2_grpc", "scheduler_pb2", "scheduler_pb2_grpc",
    "PipelineUpdateMessage", "PipelineStepUpdate", "PipelineTopic", "PipelineTensorMapping",
    "Batch", "PipelineUpdateStatusMessage", "PipelineSubscriptionRequest",
    "OP_UNKNOWN", "OP_CREATE", "OP_DELETE", "OP_REBALANCE", "OP_READY",
]
