"""In-memory ``StateStore`` for tests and the in-memory driver."""
from __future__ import annotations

from collections.abc import Iterator

from dataflow.state.base import StateStore


class MemoryStore(StateStore):
    def __init__(self, name: str = "memory"):
        self.name = name
        self._data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._data[key] = value

    def delete(self, key: bytes) -> None:
        self._data.pop(key, None)

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        return iter(sorted((k, v) for k, v in self._data.items() if k.startswith(prefix)))

    def __len__(self) -> int:
        return len(self._data)
