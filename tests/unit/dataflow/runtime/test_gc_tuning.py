"""A process running pipelines collects its young generation less often, never more often."""
from __future__ import annotations

import gc

import pytest

from dataflow.runtime import gc_tuning


@pytest.fixture(autouse=True)
def restore_thresholds():
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_raises_the_young_threshold_and_keeps_the_others():
    gc.set_threshold(700, 11, 12)
    gc_tuning.tune()
    gc_tuning.tune()
    assert gc.get_threshold() == (gc_tuning.YOUNG_THRESHOLD, 11, 12)


def test_keeps_a_higher_threshold_and_a_disabled_collector():
    gc.set_threshold(50_000, 10, 10)
    gc_tuning.tune()
    assert gc.get_threshold() == (50_000, 10, 10)
    gc.set_threshold(0, 10, 10)
    gc_tuning.tune()
    assert gc.get_threshold() == (0, 10, 10)
