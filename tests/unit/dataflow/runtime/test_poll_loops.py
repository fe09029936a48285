"""Poll threads drive many drivers; a failing or stopped driver is closed alone."""
from __future__ import annotations

import threading
import time

from dataflow.runtime import poll_loops
from dataflow.runtime.poll_loops import PollLoops
from tests.waiting import wait_until


class FakeDriver:
    def __init__(self, name: str, fail_after: int | None = None) -> None:
        self.name = name
        self.last_records_at = 0.0
        self.cycles = 0
        self.fail_after = fail_after
        self.stop = threading.Event()
        self.closed = threading.Event()
        self.error: BaseException | None = None
        self.threads: set[str] = set()

    def open(self, wake) -> None:
        self.threads.add(threading.current_thread().name)

    def cycle(self, timeout_s: float) -> int:
        self.threads.add(threading.current_thread().name)
        self.cycles += 1
        if self.fail_after is not None and self.cycles > self.fail_after:
            raise RuntimeError("boom")
        return 0

    def parked(self) -> bool:
        return False

    def stop_requested(self) -> bool:
        return self.stop.is_set()

    def close(self, error) -> None:
        self.error = error
        self.closed.set()


def test_many_drivers_share_a_few_threads():
    pool = PollLoops(size=2)
    drivers = [FakeDriver(f"d{i}") for i in range(50)]
    before = threading.active_count()
    for d in drivers:
        pool.add(d)
    wait_until(lambda: all(d.cycles >= 3 for d in drivers))
    assert threading.active_count() <= before + 2
    assert len({name for d in drivers for name in d.threads}) == 2
    for d in drivers:
        d.stop.set()
    wait_until(lambda: all(d.closed.is_set() for d in drivers))
    assert all(d.error is None for d in drivers)


def test_a_failing_driver_is_closed_with_its_error_and_the_others_go_on():
    pool = PollLoops(size=1)
    bad, good = FakeDriver("bad", fail_after=2), FakeDriver("good")
    pool.add(bad)
    pool.add(good)
    wait_until(bad.closed.is_set)
    assert isinstance(bad.error, RuntimeError)
    seen = good.cycles
    wait_until(lambda: good.cycles > seen + 5)
    good.stop.set()
    wait_until(good.closed.is_set)


def test_threads_go_when_no_driver_is_left(monkeypatch):
    monkeypatch.setattr(poll_loops, "IDLE_THREAD_EXIT_S", 0.05)
    pool = PollLoops(size=2)
    d = FakeDriver("d")
    pool.add(d)
    wait_until(lambda: d.cycles > 0)
    d.stop.set()
    wait_until(lambda: not pool.threads)


class BusyDriver(FakeDriver):
    """Had records ``ago`` seconds before each cycle; records how long each cycle may wait."""

    def __init__(self, name: str, ago: float) -> None:
        super().__init__(name)
        self.ago = ago
        self.last_records_at = time.monotonic() - ago
        self.timeouts: list[float] = []

    def cycle(self, timeout_s: float) -> int:
        self.timeouts.append(timeout_s)
        self.last_records_at = time.monotonic() - self.ago
        return super().cycle(timeout_s)


def test_the_thread_waits_on_the_consumer_of_the_version_busy_last():
    """With nothing to do the thread blocks in the poll of the version that had records last
    (its next record is handled on arrival), never in a quieter one's."""
    pool = PollLoops(size=1)
    earlier, latest = BusyDriver("earlier", 0.5), BusyDriver("latest", 0.0)
    idle = FakeDriver("idle")
    for d in (earlier, latest, idle):
        pool.add(d)
    wait_until(lambda: sum(t > 0 for t in latest.timeouts) >= 3, what="waits on the latest consumer")
    assert all(t == 0 for t in earlier.timeouts)
    for d in (earlier, latest, idle):
        d.stop.set()
    wait_until(lambda: all(d.closed.is_set() for d in (earlier, latest, idle)))
