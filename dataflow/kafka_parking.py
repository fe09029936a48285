"""Parking idle consumers on a broker where an idle consumer is not free (the embedded broker).

On the embedded broker an empty fetch is held for the consumer's whole fetch wait, so a consumer
on a latency path must use a short wait (10 ms) and then sends ~100 fetches a second even when
nothing arrives: a hundred idle pipelines kept the broker at 1.4 cores. A paused partition is not
fetched at all, so a consumer that has had no record for a while is *parked*: its owner pauses
its assignment and hands the positions to the process's ``ParkingLot``. One watcher thread asks
the broker for the end offsets of every parked partition in one request (a few ms of broker time
for hundreds of partitions) and wakes a consumer as soon as one of its partitions has an end
offset past the parked position; its owner then resumes it before the next poll. A record that
arrives for a parked consumer therefore waits at most one watch interval more than it would
have; an active consumer is never parked.

Why the comparison is safe on a broker whose end offsets lag (the embedded broker reports the
first offset of the last written batch + 1): any record written at or after position ``p`` makes
the reported end offset at least ``p + 1``. A partition from which the consumer has read nothing
yet has no position; its last fetched high watermark is used instead, which is never ahead of the
true end.

Threads: ``Spot`` methods are called only by the consumer's owner (the thread that polls it), the
watcher only reads what ``park`` handed over and sets a flag, so no client call is made from two
threads. On a real Kafka cluster nothing is parked (long-poll fetches are cheap there).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from dataflow.kafka import KafkaSettings
from dataflow.processes import name_this_thread

log = logging.getLogger(__name__)

# The watcher asks at most this often, and less often as more partitions are parked, so that its
# cost stays a small fraction of a core (~15 us of broker time per partition asked).
MIN_WATCH_INTERVAL_S = 0.01
WATCH_S_PER_PARTITION = 0.0001
MAX_WATCH_INTERVAL_S = 0.05


class Spot:
    """One consumer's place in the lot; every method but ``woken`` is for the owner's thread."""

    def __init__(self, lot: "ParkingLot", consumer, park_after_s: float,
                 on_wake: Callable[[], None] | None) -> None:
        self._lot = lot
        self._consumer = consumer
        self._park_after_s = park_after_s
        self._on_wake = on_wake
        self._last_active = time.monotonic()
        self.parked = False
        self._woken = threading.Event()
        self.positions: list[tuple[str, int, int]] = []  # what the watcher compares, set by park

    @property
    def woken(self) -> bool:
        return self._woken.is_set()

    def active(self, records: int) -> None:
        """After a poll: ``records`` were returned. Parks the consumer once it has been idle long
        enough; resumes it first if the watcher woke it."""
        now = time.monotonic()
        if self.parked:
            if self._woken.is_set():
                self.unpark()
            return
        if records:
            self._last_active = now
        elif now - self._last_active >= self._park_after_s:
            self._park()

    def touch(self) -> None:
        """The owner expects records soon (e.g. it just assigned partitions): stay awake."""
        self._last_active = time.monotonic()
        if self.parked:
            self.unpark()

    def unpark(self) -> None:
        """Resume whatever is assigned now (a rebalance may have changed it while parked)."""
        self._lot._leave(self)
        self.parked = False
        self._woken.clear()
        self._last_active = time.monotonic()
        consumer = self._consumer
        try:
            assignment = consumer.assignment()
            if not assignment:
                return
            consumer.resume(assignment)
            # librdkafka's fetcher notices a resume only at its next periodic wake-up (up to 1 s
            # later); any request to it wakes it at once. A seek to where the partition already
            # is changes nothing else; a partition never read from has no position to seek to,
            # so then the end offsets are asked instead.
            positions = [tp for tp in consumer.position(assignment) if tp.offset >= 0]
            if positions:
                consumer.seek(positions[0])
            else:
                consumer.get_watermark_offsets(assignment[0], timeout=1, cached=False)
        except Exception as exc:  # noqa: BLE001 - e.g. the consumer is closing
            log.debug("resume failed: %s", exc)

    def _park(self) -> None:
        consumer = self._consumer
        try:
            assignment = consumer.assignment()
            if not assignment:
                return  # nothing is fetched without partitions: nothing to save
            positions = []
            for tp in consumer.position(assignment):
                offset = tp.offset
                if offset < 0:  # nothing read from it yet: the last fetched end offset
                    _, high = consumer.get_watermark_offsets(tp, cached=True)
                    if high is None or high < 0:
                        self._last_active = time.monotonic()  # not fetched yet: try later
                        return
                    offset = high
                positions.append((tp.topic, tp.partition, offset))
            consumer.pause(assignment)
        except Exception as exc:  # noqa: BLE001 - stay awake rather than risk a missed record
            log.debug("cannot park a consumer: %s", exc)
            self._last_active = time.monotonic()
            return
        self.positions = positions
        self.parked = True
        self._lot._enter(self)

    def _wake(self) -> None:
        """Watcher thread: new data for this consumer."""
        self._woken.set()
        if self._on_wake is not None:
            try:
                self._on_wake()
            except Exception:  # noqa: BLE001 - the owner may be shutting down
                log.debug("wake callback failed", exc_info=True)

    def close(self) -> None:
        """The consumer is going away: forget it."""
        self._lot._leave(self)
        self.parked = False


class ParkingLot:
    """The watcher of one cluster's parked partitions (one per process and cluster)."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._lock = threading.Condition()
        self._parked: set[Spot] = set()
        self._thread: threading.Thread | None = None
        self._client = None
        self.checks = 0  # watch requests sent (for tests and benchmarks)

    def spot(self, consumer, *, on_wake: Callable[[], None] | None = None,
             park_after_s: float | None = None) -> Spot:
        after = self._settings.broker_profile().park_after_s if park_after_s is None else park_after_s
        return Spot(self, consumer, after, on_wake)

    def _enter(self, spot: Spot) -> None:
        with self._lock:
            self._parked.add(spot)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, name="kafka-parking", daemon=True)
                self._thread.start()
            self._lock.notify_all()

    def _leave(self, spot: Spot) -> None:
        with self._lock:
            self._parked.discard(spot)

    @property
    def parked(self) -> int:
        with self._lock:
            return len(self._parked)

    def _watch(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        name_this_thread("kafka-parking")
        while True:
            with self._lock:
                if not self._parked:
                    # Nothing parked: let the client go soon, and the thread after a while.
                    if not self._lock.wait_for(lambda: bool(self._parked), timeout=2):
                        self._client = None
                        if not self._lock.wait_for(lambda: bool(self._parked), timeout=5):
                            self._thread = None
                            return
                spots = list(self._parked)
            wanted: dict[tuple[str, int], None] = {}
            for spot in spots:
                for topic, partition, _ in spot.positions:
                    wanted[(topic, partition)] = None
            started = time.monotonic()
            try:
                if self._client is None:
                    self._client = Consumer(self._settings.consumer("dataflow-parking-watcher"))
                ends = self._client.offsets_for_times(
                    [TopicPartition(t, p, -1) for t, p in wanted], timeout=5)
                self.checks += 1
                end = {(tp.topic, tp.partition): tp.offset for tp in ends if tp.error is None}
                failed = {(tp.topic, tp.partition) for tp in ends if tp.error is not None}
            except Exception as exc:  # noqa: BLE001 - wake everyone: a parked consumer must not go deaf
                log.warning("cannot read end offsets of parked partitions (%s): resuming their consumers", exc)
                end, failed = {}, set(wanted)
            for spot in spots:
                if any(end.get((t, p), -1) > offset or (t, p) in failed for t, p, offset in spot.positions):
                    self._leave(spot)
                    spot._wake()
            interval = min(MAX_WATCH_INTERVAL_S, max(MIN_WATCH_INTERVAL_S, WATCH_S_PER_PARTITION * len(wanted)))
            time.sleep(max(0.0, interval - (time.monotonic() - started)))


_lots: dict[tuple, ParkingLot] = {}
_lots_lock = threading.Lock()


def parking_lot(settings: KafkaSettings) -> ParkingLot | None:
    """The process's lot for this cluster, or None where idle consumers are not parked."""
    if not settings.broker_profile().park_idle_consumers:
        return None
    key = (settings.bootstrap_servers, settings.extra)
    with _lots_lock:
        lot = _lots.get(key)
        if lot is None:
            lot = _lots[key] = ParkingLot(settings)
        return lot
