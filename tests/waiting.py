"""Waiting in tests for a condition that can be observed, instead of sleeping a guessed time.

A sleep long enough on an idle machine is too short on a loaded one and wastes time on a fast
one; these helpers return as soon as the condition holds and fail with a message saying what
never happened."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_INTERVAL_S = 0.02


def _timed_out(timeout: float, what: str, detail: Callable[[], str] | None) -> AssertionError:
    message = f"timed out after {timeout:g}s waiting for {what}"
    if detail is not None:
        message += f"\n{detail()}"
    return AssertionError(message)


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition", *,
               detail: Callable[[], str] | None = None, interval: float = POLL_INTERVAL_S) -> T:
    """Call ``predicate`` until it returns something true and return that; fail after ``timeout``
    seconds with ``what`` (and ``detail()``, e.g. a log tail) in the message. ``interval`` is for
    predicates that are costly to call (a new Kafka client, a CLI run)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what, detail)
        time.sleep(interval)  # the one accepted sleep: between two checks of a condition nothing signals


async def wait_until_async(predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition", *,
                           detail: Callable[[], str] | None = None, interval: float = POLL_INTERVAL_S) -> T:
    """``wait_until`` for code on an event loop: the loop keeps running between two checks."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what, detail)
        await asyncio.sleep(interval)  # the one accepted sleep: between two checks, as above
