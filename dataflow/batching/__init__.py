"""Request batching for Chainer steps feeding model inputs (spec 3.7); see ``batcher`` for semantics."""
from dataflow.batching.batcher import Batcher

__all__ = ["Batcher"]
