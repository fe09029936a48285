"""Key-value state behind joins, batching and cycle counters: the ``StateStore`` steps see, an
in-memory store for tests, and the partition-scoped state runtimes keep (``partition``)."""
from dataflow.state.base import StateStore, StoreFactory
from dataflow.state.memory import MemoryStore
from dataflow.state.partition import PartitionState, memory_partition_state, rocks_partition_state

__all__ = [
           "MemoryStore",
           "PartitionState",
           "StateStore",
           "StoreFactory",
           "memory_partition_state",
           "rocks_partition_state",
]
