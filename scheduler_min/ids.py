"""Version uids in the xid shape the reference uses (20 chars of lowercase base32hex).

Layout of the 12 raw bytes: 4-byte big-endian seconds, 3-byte machine id, 2-byte process id,
3-byte counter. Ids sort roughly by creation time and never repeat within a process.
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import os
import random
import socket
import threading
import time

_MACHINE = hashlib.md5(socket.gethostname().encode()).digest()[:3]
_COUNTER = itertools.count(random.randrange(1 << 24))
_LOCK = threading.Lock()

XID_ALPHABET = "0123456789abcdefghijklmnopqrstuv"
XID_LENGTH = 20


def new_uid(now: float | None = None) -> str:
    """A fresh 20-character xid-like id, e.g. ``d4gq1fs8f1i8g9e0t5p0``."""
    seconds = int(time.time() if now is None else now) & 0xFFFFFFFF
    with _LOCK:
        count = next(_COUNTER) & 0xFFFFFF
    raw = (seconds.to_bytes(4, "big") + _MACHINE + (os.getpid() & 0xFFFF).to_bytes(2, "big")
           + count.to_bytes(3, "big"))
    return base64.b32hexencode(raw).decode().lower().rstrip("=")


def is_uid(text: str) -> bool:
    return len(text) == XID_LENGTH and all(c in XID_ALPHABET for c in text)
