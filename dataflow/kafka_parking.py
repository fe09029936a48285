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
import weakref
from collections.abc import Callable, Iterable
from typing import cast

from confluent_kafka import Consumer, TopicPartition

from dataflow.headers import PIPELINE
from dataflow.kafka import KafkaSettings
from dataflow.processes import name_this_thread

log = logging.getLogger(__name__)

# The watcher asks at most this often, and less often as more partitions are parked, so that its
# cost stays a small fraction of a core (~15 us of broker time per partition asked).
MIN_WATCH_INTERVAL_S = 0.01
WATCH_S_PER_PARTITION = 0.0001
MAX_WATCH_INTERVAL_S = 0.05
# Once nothing has been woken for a while, the watcher asks less often: the first record after a
# quiet spell waits up to this long more, and an idle stack costs the broker a fifth as much.
QUIET_AFTER_S = 5.0
QUIET_WATCH_INTERVAL_S = 0.1
# A consumer woken for records its owner then finds are not for it (a model's output topic is read
# by every pipeline using the model, each keeping only its own records) parks again as soon as it
# has read them, instead of fetching for ``park_after_s`` more: with a hundred such pipelines that
# was ten thousand empty fetches per request. Until the first records after a wake arrive it stays
# awake, for at most this long: a resumed consumer's first fetch can take a while on a busy broker,
# and one that parked again before it came back was woken again at once, so a loaded machine could
# spin in wake/park cycles with records waiting (measured: under 1 request/s with 50 records lag).
WAKE_GRACE_S = 2.0
# A parked consumer whose owner said which records it wants (``interest``) is not woken for the
# others: the watcher reads the new records of such partitions once, for all parked consumers, and
# moves the parked positions of those that want none of them past them. Their committed offsets
# then lag behind; so that a long-idle version never has a large backlog to filter, it is woken
# to catch up once it has skipped records for this long.
CATCH_UP_AFTER_S = 30.0
READ_TIMEOUT_S = 0.5


class Spot:
    """One consumer's place in the lot; every method but ``woken`` is for the owner's thread."""

    def __init__(self, lot: ParkingLot, consumer: Consumer, park_after_s: float,
                 on_wake: Callable[[], None] | None,
                 interest: dict[str, frozenset[bytes]] | None = None) -> None:
        self._lot = lot
        # topic -> the ``pipeline`` header values a record must carry to matter to the owner; a
        # topic not listed (or no dict) means every record matters.
        self.interest = interest
        self.skipping_since: float | None = None   # watcher: first time records were skipped
        self._consumer = consumer
        self._park_after_s = park_after_s
        self._on_wake = on_wake
        self._last_active = time.monotonic()
        self._woke_at: float | None = None   # set by a watcher wake until the records are read
        self.parked = False
        self._woken = threading.Event()
        self.positions: list[tuple[str, int, int]] = []  # what the watcher compares, set by park

    @property
    def woken(self) -> bool:
        return self._woken.is_set()

    def active(self, records: int, useful: int | None = None) -> None:
        """After a poll: ``records`` were returned, ``useful`` of them (default: all) mattered to
        the owner. Parks the consumer once nothing useful came for ``park_after_s`` and the poll
        came back empty; resumes it first if the watcher woke it."""
        now = time.monotonic()
        if self.parked:
            if self._woken.is_set():
                self.unpark()
            return
        if records if useful is None else useful:
            self._last_active = now
        if records:
            self._woke_at = None
            return
        if self._woke_at is not None and now - self._woke_at < WAKE_GRACE_S:
            return  # woken, but the records it was woken for are not fetched yet
        if now - self._last_active >= self._park_after_s:
            self._park()

    def touch(self) -> None:
        """The owner expects records soon (e.g. it just assigned partitions): stay awake."""
        if self.parked:
            self.unpark()
        self._last_active = time.monotonic()

    def unpark(self) -> None:
        """Resume whatever is assigned now (a rebalance may have changed it while parked)."""
        self._lot._leave(self)
        self.parked = False
        self._woken.clear()
        self._woke_at = time.monotonic()
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
        except Exception as exc:
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
        except Exception as exc:
            log.debug("cannot park a consumer: %s", exc)
            self._last_active = time.monotonic()
            return
        self.positions = positions
        self.skipping_since = None
        self.parked = True
        self._lot._enter(self)

    def _wake(self) -> None:
        """Watcher thread: new data for this consumer."""
        self._woken.set()
        if self._on_wake is not None:
            try:
                self._on_wake()
            except Exception:
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
        self._client: Consumer | None = None
        self._reader: Consumer | None = None
        self._woke_at = 0.0
        self._spots: weakref.WeakSet[Spot] = weakref.WeakSet()
        self._reported_at = 0.0
        self.checks = 0  # watch requests sent (for tests and benchmarks)

    def spot(self, consumer: Consumer, *, on_wake: Callable[[], None] | None = None,
             park_after_s: float | None = None,
             interest: dict[str, frozenset[bytes]] | None = None) -> Spot:
        after = self._settings.broker_profile().park_after_s if park_after_s is None else park_after_s
        spot = Spot(self, consumer, after, on_wake, interest)
        with self._lock:
            self._spots.add(spot)
        return spot

    def counts(self) -> tuple[int, int]:
        """(consumers with a spot, of which parked): an awake consumer costs the embedded broker
        ~5% of a core in fetches, so this is what its idle load follows."""
        with self._lock:
            return len(self._spots), len(self._parked)

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
        name_this_thread("kafka-parking")
        while True:
            with self._lock:
                if not self._parked:
                    # Nothing parked: let the client go soon, and the thread after a while.
                    if not self._lock.wait_for(lambda: bool(self._parked), timeout=2):
                        self._client = self._reader = None
                        if not self._lock.wait_for(lambda: bool(self._parked), timeout=5):
                            self._thread = None
                            return
                spots = list(self._parked)
            started = time.monotonic()
            wanted = {(t, p) for spot in spots for t, p, _ in spot.positions}
            end, failed = self._end_offsets(wanted)
            woke = self._settle(spots, end, failed, started)
            if started - self._reported_at >= 30.0:
                self._reported_at = started
                total, parked = self.counts()
                log.info("parking: %d of %d consumers parked, %d partitions watched", parked, total, len(wanted))
            if woke:
                self._woke_at = started
            interval = min(MAX_WATCH_INTERVAL_S, max(MIN_WATCH_INTERVAL_S, WATCH_S_PER_PARTITION * len(wanted)))
            if started - self._woke_at >= QUIET_AFTER_S:
                interval = QUIET_WATCH_INTERVAL_S
            time.sleep(max(0.0, interval - (time.monotonic() - started)))

    def _end_offsets(self, wanted: set[tuple[str, int]]) -> tuple[dict[tuple[str, int], int], set[tuple[str, int]]]:
        try:
            if self._client is None:
                self._client = self._new_client()
            ends = self._client.offsets_for_times([TopicPartition(t, p, -1) for t, p in wanted], timeout=5)
            self.checks += 1
        except Exception as exc:
            log.warning("cannot read end offsets of parked partitions (%s): resuming their consumers", exc)
            return {}, set(wanted)
        return ({(tp.topic, tp.partition): tp.offset for tp in ends if tp.error is None},
                {(tp.topic, tp.partition) for tp in ends if tp.error is not None})

    def _new_client(self) -> Consumer:
        return Consumer(self._settings.consumer("dataflow-parking-watcher"))

    def _settle(self, spots: list[Spot], end: dict[tuple[str, int], int], failed: set[tuple[str, int]],
                now: float) -> int:
        """Wake the spots with new records they want; move the others past what they do not.
        Returns how many were woken."""
        woken = 0
        to_read: dict[tuple[str, int], int] = {}   # partition -> first offset some spot must see
        filtered: list[tuple[Spot, list[tuple[str, int, int]]]] = []
        watchers: dict[tuple[str, int], int] = {}
        for spot in spots:
            for t, p, _ in spot.positions:
                watchers[(t, p)] = watchers.get((t, p), 0) + 1
        for spot in spots:
            new = [(t, p, offset) for t, p, offset in spot.positions
                   if end.get((t, p), -1) > offset or (t, p) in failed]
            interest = spot.interest
            catch_up = spot.skipping_since is not None and now - spot.skipping_since >= CATCH_UP_AFTER_S
            # Reading a partition that only this spot watches (a pipeline's own inputs topic)
            # would cost as much as waking it, and later: wake it.
            if catch_up or (new and (interest is None or any(
                    (t, p) in failed or t not in interest or watchers[(t, p)] == 1 for t, p, _ in new))):
                self._leave(spot)
                spot._wake()
                woken += 1
            elif new:
                filtered.append((spot, new))
                for t, p, offset in new:
                    to_read[(t, p)] = min(offset, to_read.get((t, p), offset))
        if not filtered:
            return woken
        seen = self._read_pipelines(to_read, end)
        for spot, new in filtered:
            interest = spot.interest or {}
            moved: dict[tuple[str, int], int] = {}
            wanted = False
            for t, p, offset in new:
                records = seen.get((t, p), [])
                if any(o >= offset and names & interest[t] for o, names in records):
                    wanted = True
                    break
                last = max((o for o, _ in records if o >= offset), default=None)
                if last is not None:
                    moved[(t, p)] = last + 1
            if wanted:
                self._leave(spot)
                spot._wake()
                woken += 1
            elif moved:
                spot.positions = [(t, p, moved.get((t, p), o)) for t, p, o in spot.positions]
                if spot.skipping_since is None:
                    spot.skipping_since = now
        return woken

    def _read_pipelines(self, start: dict[tuple[str, int], int], end: dict[tuple[str, int], int]
                        ) -> dict[tuple[str, int], list[tuple[int, frozenset[bytes]]]]:
        """The ``pipeline`` header values of the records from ``start`` to at least ``end`` of each
        partition (whatever arrives within ``READ_TIMEOUT_S``), read once for every parked spot."""
        seen: dict[tuple[str, int], list[tuple[int, frozenset[bytes]]]] = {k: [] for k in start}
        try:
            if self._reader is None:
                self._reader = self._new_client()
            reader = self._reader
            reader.assign([TopicPartition(t, p, o) for (t, p), o in start.items()])
            waiting = {k for k in start if end.get(k, 0) > start[k]}
            deadline = time.monotonic() + READ_TIMEOUT_S
            while waiting and time.monotonic() < deadline:
                for m in reader.consume(1000, timeout=0.02):
                    if m.error() is not None:
                        continue
                    # A record without an error has all three, and its headers as a list of pairs;
                    # the stub says Optional and allows a dict.
                    key = cast(tuple[str, int], (m.topic(), m.partition()))
                    offset = cast(int, m.offset())
                    headers = cast(Iterable[tuple[str, bytes | None]], m.headers() or ())
                    names = frozenset(v if isinstance(v, bytes) else str(v).encode()
                                      for k, v in headers if k == PIPELINE and v is not None)
                    seen[key].append((offset, names))
                    if offset + 1 >= end.get(key, 0):
                        waiting.discard(key)
            reader.unassign()
        except Exception as exc:
            log.debug("reading parked partitions failed: %s", exc)
            self._reader = None
        return seen


_lots: dict[tuple[str, tuple[tuple[str, str], ...]], ParkingLot] = {}
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
