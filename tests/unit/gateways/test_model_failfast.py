"""The model gateway's fail-fast rules: circuit breaker states, metadata gRPC refuses, deadlines,
one client per model server."""
from __future__ import annotations

import asyncio

import pytest

from dataflow import headers as H
from gateways.model_gateway import deadline_left
from gateways.oip_client import CircuitBreaker, ClientPool, invalid_metadata


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_only():
    clock = Clock()
    b = CircuitBreaker(failures=3, open_s=1.0, max_open_s=4.0, clock=clock)
    b.failure("refused")
    b.failure("refused")
    b.success()  # not consecutive any more
    b.failure("refused")
    b.failure("refused")
    assert b.allow() and not b.is_open
    b.failure("refused")
    assert b.is_open and not b.allow() and b.last_error == "refused"


def test_open_breaker_lets_one_probe_through_after_the_cool_down_and_backs_off():
    clock = Clock()
    b = CircuitBreaker(failures=1, open_s=1.0, max_open_s=3.0, clock=clock)
    b.failure("refused")
    clock.now += 0.99
    assert not b.allow()
    clock.now += 0.02
    assert b.allow()          # the probe
    assert not b.allow()      # everyone else still fails fast while it runs
    b.failure("refused")      # probe failed: open twice as long
    clock.now += 1.5
    assert not b.allow()
    clock.now += 0.6
    assert b.allow()
    b.failure("refused")
    assert b.open_s == 3.0    # capped
    clock.now += 3.01
    assert b.allow()
    b.success()
    assert not b.is_open and b.allow() and b.allow() and b.open_s == 1.0


def test_a_probe_that_tells_nothing_lets_the_next_caller_probe():
    clock = Clock()
    b = CircuitBreaker(failures=1, open_s=1.0, clock=clock)
    b.failure("refused")
    clock.now += 1.1
    assert b.allow()
    b.release_probe()         # e.g. the probe timed out
    assert b.allow()


@pytest.mark.parametrize("headers,error", [
    ([("x-a", "plain ascii ~!")], None),
    ([("x-bin-bin", "\x00\xff")], None),   # binary metadata may hold anything
    ([("x-name", "Zo\u00eb")], 'header key "x-name" contains value with non-printable ASCII characters'),
    ([("x-a", "tab\there")], 'header key "x-a" contains value with non-printable ASCII characters'),
    ([("x-A", "v")], 'header key "x-A" contains illegal characters not in [0-9a-z-_.]'),
    ([("x-\u00e9", "v")], 'header key "x-\u00e9" contains illegal characters not in [0-9a-z-_.]'),
])
def test_metadata_grpc_would_refuse_is_named(headers, error):
    assert invalid_metadata(headers) == error


def test_deadline_header():
    assert deadline_left([], 10.0) is None
    assert deadline_left([(H.DEADLINE, b"12500")], 10.0) == pytest.approx(2.5)
    assert deadline_left([(H.DEADLINE, b"9000")], 10.0) == pytest.approx(-1.0)
    assert deadline_left([(H.DEADLINE, b"soon")], 10.0) is None


def test_models_at_one_endpoint_share_a_client_closed_with_its_last_user():
    async def run():
        pool = ClientPool()
        a = pool.acquire("grpc://127.0.0.1:1")
        assert pool.acquire("127.0.0.1:1") is a
        other = pool.acquire("http://127.0.0.1:1")
        assert other is not a and len(pool) == 2
        await pool.release("127.0.0.1:1")
        assert len(pool) == 2
        await pool.release("grpc://127.0.0.1:1")
        await pool.release("http://127.0.0.1:1")
        assert len(pool) == 0
        assert pool.acquire("grpc://127.0.0.1:1") is not a  # a fresh one after the last release

    asyncio.run(run())
