"""RocksDB-backed ``StateStore`` (via rocksdict): join buffers, batches and cycle counters that
survive a restart of the engine process."""
from __future__ import annotations

import hashlib
import os
import re
from typing import Iterator

from rocksdict import Options, Rdict

from dataflow.state.base import StateStore, StoreFactory

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class RocksStore(StateStore):
    """One RocksDB database per store at ``path`` (created if missing), raw bytes keys and values.
    ``items(prefix)`` seeks to the prefix and returns the matching entries in key order as a list,
    so callers may delete while looping over it."""

    def __init__(self, path: str, name: str = "rocks"):
        self.name = name
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._db = Rdict(path, options=Options(raw_mode=True))
        self._closed = False

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._db.put(key, value)

    def delete(self, key: bytes) -> None:
        self._db.delete(key)

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        for k, v in self._db.items(from_key=prefix):
            if not k.startswith(prefix):
                break
            out.append((k, v))
        return iter(out)

    def flush(self) -> None:
        if not self._closed:
            self._db.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()

    def __len__(self) -> int:
        return sum(1 for _ in self._db.keys())


def store_dir_name(name: str) -> str:
    """A filesystem-safe, collision-free directory name for a store name like ``join:step#2``."""
    safe = _UNSAFE.sub("_", name)
    if safe != name:
        safe += "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return safe


def rocks_store_factory(base_dir: str) -> StoreFactory:
    """A ``StoreFactory`` giving each named store its own RocksDB under ``base_dir`` (one directory
    per pipeline version, e.g. ``<state_dir>/<uid>``)."""

    def factory(name: str) -> RocksStore:
        return RocksStore(os.path.join(base_dir, store_dir_name(name)), name)

    return factory
