"""Seldon Core 2 control-plane protocols: the Chainer and Scheduler gRPC APIs.

The ``.proto`` files in ``protos/`` are the wire contract; ``generated/`` holds the committed
stubs (``python -m chainer_api.regenerate``). Import messages from here so every module uses
the same classes.
"""
from chainer_api.generated import chainer_pb2, chainer_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

__all__ = ["chainer_pb2", "chainer_pb2_grpc", "scheduler_pb2", "scheduler_pb2_grpc"]
