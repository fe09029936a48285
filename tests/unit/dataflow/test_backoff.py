"""Retry backoff shared by the engine's and the gateways' control-plane clients."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dataflow.backoff import doubling_delays, jittered_delay


def test_doubling_delays_double_up_to_the_cap():
    delays = doubling_delays(0.2, 5.0)
    assert [next(delays) for _ in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


@given(st.integers(0, 40))
def test_jittered_delay_stays_between_base_and_the_grown_cap(attempt):
    delay = jittered_delay(attempt, 0.1, 3.2)
    assert 0.1 <= delay <= min(3.2, 0.1 * 2 ** attempt)
