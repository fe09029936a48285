"""Key-value state stores behind joins, batching and cycle counters."""
from dataflow.state.base import StateStore, StoreFactory
from dataflow.state.memory import MemoryStore

__all__ = ["StateStore", "StoreFactory", "MemoryStore"]
