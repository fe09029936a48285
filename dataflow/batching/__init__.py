"""Request batching for Chainer steps feeding model inputs; see ``batcher`` for semantics."""
from dataflow.batching.batcher import Batcher

__all__ = ["Batcher"]
