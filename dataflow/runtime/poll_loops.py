"""A few poll threads shared by every pipeline version of an engine process.

Why: a version needs its own consumer (its consumer group decides which replica runs which
partition and holds its offsets), but not its own thread. With a thread per version, a hundred
idle versions were a hundred threads each waking 20 times a second to find nothing. Here a small,
fixed number of threads each drive many versions: every cycle polls each of its consumers without
waiting and processes what came; when a whole cycle found nothing, the thread waits a little (on
the consumer of the version that had records last, when one has lately: the next record of a
request in progress, e.g. a model's answer, is then handled the moment it arrives). Drivers that are parked (see
``dataflow.kafka_parking``) are polled only now and then, to serve their rebalance callbacks.

A driver is added with ``PollLoops.add``; everything it does (subscribe, poll, rebalance
callbacks, checkpoint, close) then runs on its thread, so one driver's clients are only ever used
from one thread. Work that blocks (restoring a partition's state, a checkpoint's flush) holds up
the other drivers of that thread for that long, never those of other threads.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from dataflow.processes import name_this_thread
from dataflow.runtime import gc_tuning

log = logging.getLogger(__name__)

# Wait after an empty cycle: short while something was busy lately, longer once all is quiet
# (a real cluster's consumers are never parked, so a quiet cycle still polls every one of them).
BUSY_WAIT_S = 0.002
QUIET_WAIT_S = 0.02
QUIET_AFTER_S = 1.0
PARKED_POLL_INTERVAL_S = 0.25  # also the punctuation granularity of a parked stateful version
IDLE_THREAD_EXIT_S = 5.0


class Driver(Protocol):
    """One pipeline version's consume -> process -> produce -> checkpoint cycle."""

    name: str
    last_records_at: float   # monotonic time of the last poll that returned records

    def open(self, wake: threading.Event) -> None: ...   # wake: set it to get a cycle at once
    def cycle(self, timeout_s: float) -> int: ...   # records handled this cycle
    def parked(self) -> bool: ...
    def stop_requested(self) -> bool: ...
    def close(self, error: BaseException | None) -> None: ...


class PollThread:
    def __init__(self, pool: PollLoops, index: int) -> None:
        self.pool = pool
        self.index = index
        self.drivers: list[Driver] = []
        self.incoming: list[Driver] = []
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"poll-loop-{index}", daemon=True)
        self.thread.start()

    @property
    def load(self) -> int:
        return len(self.drivers) + len(self.incoming)

    def _take_incoming(self) -> None:
        with self.pool.lock:
            incoming, self.incoming = self.incoming, []
        for driver in incoming:
            try:
                driver.open(self.wake)
            except Exception as exc:
                self._close(driver, exc)
                continue
            self.drivers.append(driver)

    def _close(self, driver: Driver, error: BaseException | None) -> None:
        try:
            driver.close(error)
        except Exception:
            log.exception("closing %s failed", driver.name)

    def _run(self) -> None:
        name_this_thread(f"poll-loop-{self.index}")
        quiet_since = time.monotonic()
        parked_polled_at = 0.0
        while True:
            if self.incoming:
                self._take_incoming()
            if not self.drivers:
                if self._idle_exit():
                    return
                continue
            now = time.monotonic()
            poll_parked = now - parked_polled_at >= PARKED_POLL_INTERVAL_S
            if poll_parked:
                parked_polled_at = now
            handled = 0
            hot: list[Driver] = []
            for driver in list(self.drivers):
                if driver.stop_requested():
                    self.drivers.remove(driver)
                    self._close(driver, None)
                    continue
                if driver.parked() and not poll_parked:
                    continue
                try:
                    handled += driver.cycle(0)
                except Exception as exc:
                    self.drivers.remove(driver)
                    self._close(driver, exc)
                    continue
                if now - driver.last_records_at < QUIET_AFTER_S:
                    hot.append(driver)
            if handled:
                quiet_since = time.monotonic()
                continue
            quiet = time.monotonic() - quiet_since >= QUIET_AFTER_S
            # Busy lately: wait on the consumer of the version that had records last (its next
            # record, e.g. a model's answer to what it just sent, is then handled the moment it
            # arrives); the others wait no longer than they would on the wake event. With one
            # version only, for as long as the quiet wait.
            latest = max(hot, key=lambda d: d.last_records_at, default=None)
            if latest is not None and not self.wake.is_set() and not latest.parked():
                try:
                    latest.cycle(QUIET_WAIT_S if len(self.drivers) == 1 else BUSY_WAIT_S)
                except Exception as exc:
                    self.drivers.remove(latest)
                    self._close(latest, exc)
                continue
            self.wake.wait(QUIET_WAIT_S if quiet and not hot else BUSY_WAIT_S)
            self.wake.clear()

    def _idle_exit(self) -> bool:
        """No drivers: wait for one; after a while without any, let the thread go."""
        self.wake.wait(IDLE_THREAD_EXIT_S)
        self.wake.clear()
        with self.pool.lock:
            if self.drivers or self.incoming:
                return False
            if self.pool.threads.get(self.index) is self:
                del self.pool.threads[self.index]
            return True


class PollLoops:
    """The process's poll threads (at most ``size``, started on demand, gone when unused)."""

    def __init__(self, size: int = 2) -> None:
        gc_tuning.tune()   # every runner's records go through these threads
        self.size = max(1, size)
        self.lock = threading.Lock()
        self.threads: dict[int, PollThread] = {}

    def add(self, driver: Driver) -> PollThread:
        """Run ``driver`` on the least loaded thread; returns it (``wake()`` it to act at once)."""
        with self.lock:
            for i in range(self.size):
                if i not in self.threads:
                    self.threads[i] = PollThread(self, i)
                    break
            thread = min(self.threads.values(), key=lambda t: t.load)
            thread.incoming.append(driver)
        thread.wake.set()
        return thread


_default: PollLoops | None = None
_default_lock = threading.Lock()


def shared(size: int = 2) -> PollLoops:
    """The engine process's poll loops (the first caller's ``size`` wins)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PollLoops(size)
        return _default
