"""Retry backoff: how long to wait before trying again something that failed (a stream to
reconnect, a message to resend). Both control-plane clients, the engine's and the gateways',
take their delays from here."""
from __future__ import annotations

import random
from collections.abc import Iterator


def doubling_delays(minimum: float, maximum: float) -> Iterator[float]:
    """``minimum``, twice that, four times ... capped at ``maximum`` (binary exponential, as the
    reference reconnects). Start a new iterator to start again from ``minimum``."""
    delay = minimum
    while True:
        yield delay
        delay = min(delay * 2, maximum)


def jittered_delay(attempt: int, base: float, cap: float) -> float:
    """Before retry ``attempt`` (0 first): full jitter, uniform in ``[0, min(cap, base * 2**attempt)]``
    and never below ``base``, so clients retrying together spread out."""
    return max(base, random.uniform(0, min(cap, base * (2 ** attempt))))
