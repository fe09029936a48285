"""Consistent hashing of pipeline version uids onto dataflow engines, like the reference scheduler.

Each engine owns ``VNODES`` points on a 32-bit ring; a key maps to the first distinct engines met
walking clockwise from its hash. Adding or removing one engine moves only the keys it gains or
loses, so most pipelines stay where they run.
"""
from __future__ import annotations

import bisect
import hashlib

VNODES = 64


def _point(text: str) -> int:
    return int.from_bytes(hashlib.md5(text.encode()).digest()[:4], "big")


class HashRing:
    def __init__(self, replicas: int = 1) -> None:
        self.replicas = max(1, replicas)
        self._points: list[tuple[int, str]] = []
        self._servers: set[str] = set()

    @property
    def servers(self) -> set[str]:
        return set(self._servers)

    def add(self, server: str) -> None:
        if server in self._servers:
            return
        self._servers.add(server)
        for i in range(VNODES):
            bisect.insort(self._points, (_point(f"{server}#{i}"), server))

    def remove(self, server: str) -> None:
        if server not in self._servers:
            return
        self._servers.discard(server)
        self._points = [p for p in self._points if p[1] != server]

    def servers_for(self, key: str) -> list[str]:
        """``min(#servers, replicas)`` distinct servers for ``key`` (empty with no servers)."""
        want = min(len(self._servers), self.replicas)
        if want == 0:
            return []
        start = bisect.bisect(self._points, (_point(key), ""))
        out: list[str] = []
        n = len(self._points)
        for i in range(n):
            server = self._points[(start + i) % n][1]
            if server not in out:
                out.append(server)
                if len(out) == want:
                    break
        return out
