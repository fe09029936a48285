"""Key-value state stores behind joins, batching and cycle counters."""
from dataflow.state.base import StateStore, StoreFactory
from dataflow.state.memory import MemoryStore
from dataflow.state.rocks import RocksStore, rocks_store_factory

__all__ = ["StateStore", "StoreFactory", "MemoryStore", "RocksStore", "rocks_store_factory"]
