"""The state store interface. Step code sees only this; runtimes choose the backend
(in-memory for tests; in the runtimes, one RocksDB per pipeline version and partition,
``dataflow.state.partition``)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator


class StateStore(ABC):
    """A byte-keyed, byte-valued store. Iteration is in key order for ``items``."""

    name: str = "store"

    @abstractmethod
    def get(self, key: bytes) -> bytes | None: ...

    @abstractmethod
    def put(self, key: bytes, value: bytes) -> None: ...

    @abstractmethod
    def delete(self, key: bytes) -> None: ...

    @abstractmethod
    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Entries whose key starts with ``prefix``, in key order. Safe to delete while iterating
        over a materialised list (implementations may return one)."""

    def write(self, changes: dict[bytes, bytes | None]) -> None:
        """Puts (bytes) and deletes (None) of many keys, in the dict's order: what ``put`` and
        ``delete`` would do one by one (backends may do it with fewer calls)."""
        for key, value in changes.items():
            if value is None:
                self.delete(key)
            else:
                self.put(key, value)

    def flush(self) -> None:  # noqa: B027  # optional hook: a no-op default, not abstract
        """Make writes durable (no-op for memory)."""

    def close(self) -> None:  # noqa: B027  # optional hook: a no-op default, not abstract
        """Release resources."""


# A factory gives each named store of a pipeline its backend: ``factory("join:stepname")``.
StoreFactory = Callable[[str], StateStore]
