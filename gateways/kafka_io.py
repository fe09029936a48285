"""Kafka plumbing shared by the gateways: a producer usable from asyncio, and one consumer per
consumer group over a changing set of topics (the reference's multi-topic consumer per bucket).

confluent-kafka is used (not aiokafka) for its throughput and idempotent producer; its blocking
calls run on threads owned by these classes and hand results to the asyncio loop. Nothing here
needs the loop's default executor: a caller that must wait for a client to finish (shut down,
flushed) awaits ``wait_closed()``, a future the client's own thread resolves as it exits, so
waits cannot pile up in a shared pool and starve unrelated work.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from dataflow.kafka import GroupJoin, KafkaSettings, poll_batch
from dataflow.kafka_parking import parking_lot
from dataflow.kafka_produce import produce_async

log = logging.getLogger(__name__)


class ProduceError(RuntimeError):
    """A record could not be delivered; ``code`` is the ``KafkaError`` code when there is one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class _ExitSignal:
    """Callbacks run once by a worker thread as it exits (or at once if it already has)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False
        self._callbacks: list[Callable[[], object]] = []

    def add(self, callback: Callable[[], object]) -> None:
        with self._lock:
            if not self._done:
                self._callbacks.append(callback)
                return
        callback()

    def fire(self) -> None:
        with self._lock:
            self._done, callbacks, self._callbacks = True, self._callbacks, []
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.debug("exit callback failed", exc_info=True)

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def settle() -> None:
            if not fut.done():
                fut.set_result(None)

        self.add(lambda: loop.call_soon_threadsafe(settle))
        await fut


class AsyncProducer:
    """A confluent-kafka producer with a poll thread; ``await produce(...)`` resolves on delivery.

    On close the poll thread flushes what is still queued and exits; ``close()`` joins it,
    ``await aclose()`` waits for it without occupying any other thread.

    ``errors_only``: librdkafka reports failed deliveries only, so a delivered record costs no
    Python call on the poll thread; such a producer queues records with ``send`` (``produce``,
    which waits for the delivery report, is refused).
    """

    def __init__(self, settings: KafkaSettings, *, flush_timeout_s: float = 10.0, errors_only: bool = False,
                 **overrides) -> None:
        self.errors_only = errors_only
        if errors_only:
            overrides = {"delivery.report.only.error": True, **overrides}
        self._producer = Producer(settings.producer(**overrides))
        self._flush_timeout_s = flush_timeout_s
        self._stop = threading.Event()
        self._exited = _ExitSignal()
        self._thread = threading.Thread(target=self._poll_loop, name="gateway-producer-poll", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._producer.poll(0.05)
            self._producer.flush(self._flush_timeout_s)
        finally:
            self._exited.fire()

    async def produce_cb(self, topic: str, value: bytes | None, *, key: str | None, partition: int | None,
                         headers: list[tuple[str, bytes]] | None, on_delivery: Callable) -> None:
        """Queue a message with a plain delivery callback ``on_delivery(err, msg)`` (run on the
        poll thread); returns once queued."""
        kwargs: dict[str, Any] = {"key": key, "value": value, "headers": headers or None, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        await produce_async(self._producer, topic, **kwargs)

    async def send(self, topic: str, value: bytes | None, *, key: str | None, partition: int | None,
                   headers: list[tuple[str, bytes]] | None, on_error: Callable[[ProduceError], None]) -> None:
        """Queue a record without waiting for its delivery; returns once queued. A record refused
        before queueing raises ``ProduceError``; one that fails later is passed to ``on_error`` on
        the poll thread (a delivered one calls nothing on an ``errors_only`` producer)."""
        def delivered(err, _msg) -> None:
            if err is not None:
                on_error(ProduceError(f"produce to {topic} failed: {err}", err.code()))

        await self._queue(topic, value, key, partition, headers, delivered)

    async def produce(self, topic: str, value: bytes | None, *, key: str | None = None,
                      partition: int | None = None, headers: list[tuple[str, bytes]] | None = None) -> None:
        """Queue a record and wait for its delivery (``ProduceError`` if it failed)."""
        if self.errors_only:
            raise RuntimeError("an errors_only producer reports no delivery to wait for: use send()")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def done(err, msg):
            def settle():
                if fut.done():
                    return
                if err is not None:
                    fut.set_exception(ProduceError(f"produce to {topic} failed: {err}", err.code()))
                else:
                    fut.set_result(None)
            loop.call_soon_threadsafe(settle)

        await self._queue(topic, value, key, partition, headers, done)
        await fut

    async def _queue(self, topic: str, value: bytes | None, key: str | None, partition: int | None,
                     headers: list[tuple[str, bytes]] | None, on_delivery: Callable[[Any, Any], None]) -> None:
        """``produce_cb``, with a record refused before queueing (e.g. MSG_SIZE_TOO_LARGE) raised
        as ``ProduceError``."""
        try:
            await self.produce_cb(topic, value, key=key, partition=partition, headers=headers,
                                  on_delivery=on_delivery)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            code = err.code() if isinstance(err, KafkaError) else None
            raise ProduceError(f"produce to {topic} failed: {err}", code) from None

    def flush(self, timeout_s: float = 10.0) -> int:
        return self._producer.flush(timeout_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._flush_timeout_s + 5)

    async def aclose(self) -> None:
        self._stop.set()
        await self._exited.wait()


# ``read_on_demand`` consumers: how long a poll waits while some partitions are fetched, how long
# the thread waits for an ``expect`` while none is, how long a partition stays paused before it is
# checked for records others wrote meanwhile (read then, so a later request does not first read a
# backlog), and how long such a catch-up read may take.
ON_DEMAND_POLL_S = 0.01
ON_DEMAND_IDLE_WAIT_S = 0.1
CATCH_UP_AFTER_S = 30.0
CATCH_UP_READ_S = 5.0


class _OnDemand:
    """Which topics are expected and which partitions are fetched, for a ``read_on_demand``
    consumer. Guarded by the consumer's lock; the client calls are the consumer thread's."""

    def __init__(self) -> None:
        self.expected: dict[str, int] = {}     # topic -> expect() calls not yet stopped
        self.fetching: set[tuple[str, int]] = set()   # partitions resumed by us
        self.settled: set[tuple[str, int]] = set()    # partitions whose pause state we set
        self.paused_at: dict[tuple[str, int], float] = {}
        # partition -> (offset to read up to, give up after): a catch-up read under way
        self.catching_up: dict[tuple[str, int], tuple[int, float]] = {}

    def expect(self, topic: str) -> None:
        self.expected[topic] = self.expected.get(topic, 0) + 1

    def stop_expecting(self, topic: str) -> None:
        left = self.expected.get(topic, 0) - 1
        if left > 0:
            self.expected[topic] = left
        else:
            self.expected.pop(topic, None)

    def assigned(self, partitions: Iterable[tuple[str, int]]) -> None:
        for key in partitions:  # a new assignment is fetched until we say otherwise
            self.settled.discard(key)
            self.fetching.discard(key)

    def revoked(self, partitions: Iterable[tuple[str, int]]) -> None:
        for key in partitions:
            self.settled.discard(key)
            self.fetching.discard(key)
            self.paused_at.pop(key, None)
            self.catching_up.pop(key, None)

    def forget_states(self) -> None:
        self.settled.clear()
        self.fetching.clear()

    def changes(self, assigned: dict[str, set[int]], positions: dict[tuple[str, int], int]
                ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """(partitions to resume, partitions to pause) for what is expected or being caught up
        now (``positions``: the next offset this consumer reads of each); recorded as done."""
        now = time.monotonic()
        for key, (end, give_up) in list(self.catching_up.items()):
            if positions.get(key, -1) >= end or now >= give_up:
                del self.catching_up[key]
        resume, pause = [], []
        for topic, partitions in assigned.items():
            for p in partitions:
                key = (topic, p)
                wanted = topic in self.expected or key in self.catching_up
                if key in self.settled and (key in self.fetching) == wanted:
                    continue
                self.settled.add(key)
                if wanted:
                    resume.append(key)
                    self.fetching.add(key)
                    self.paused_at.pop(key, None)
                else:
                    pause.append(key)
                    self.fetching.discard(key)
                    self.paused_at.setdefault(key, now)
        # partitions no longer assigned (topic removed) are forgotten
        current = {(t, p) for t, ps in assigned.items() for p in ps}
        self.fetching &= current
        self.settled &= current
        for key in [k for k in self.paused_at if k not in current]:
            del self.paused_at[key]
        for key in [k for k in self.catching_up if k not in current]:
            del self.catching_up[key]
        return resume, pause

    def catch_up_due(self) -> list[tuple[str, int]]:
        """Partitions paused for ``CATCH_UP_AFTER_S``: to be checked for records written since."""
        cutoff = time.monotonic() - CATCH_UP_AFTER_S
        return [key for key, since in self.paused_at.items() if since <= cutoff]

    def catch_up(self, ends: dict[tuple[str, int], int], positions: dict[tuple[str, int], int]) -> None:
        """Read the partitions of ``ends`` that have records past this consumer's position; check
        the others again after ``CATCH_UP_AFTER_S``."""
        now = time.monotonic()
        for key, end in ends.items():
            if key not in self.paused_at:
                continue   # resumed or gone meanwhile
            if end > positions.get(key, end):
                self.catching_up[key] = (end, now + CATCH_UP_READ_S)
            else:
                self.paused_at[key] = now


class TopicSetConsumer:
    """One consumer in one group, subscribed to a set of topics that may change at run time.

    Records are handed, in batches, to ``on_records(list[Message])`` on the consumer thread.
    ``start_at_end``: newly assigned partitions start at the high watermark read *in the assign
    callback* (so nothing produced after ``partitions(topic)`` lists a partition can be missed),
    and a partition re-assigned after a rebalance resumes where this consumer left it.

    Each instance is one librdkafka client (a handful of native threads) plus one Python thread,
    so owners should keep as few as the group layout allows and ``stop()`` one as soon as its
    topic set is empty: the thread then leaves the group, destroys the client and exits.
    What is remembered per topic (assignment, positions) is dropped when the topic is removed.

    ``commit_interval_s``: offsets queued by ``commit()`` are sent at most this often (and always
    before a revoke and at close); 0 sends them after every poll.

    ``cooperative``: use the incremental (cooperative-sticky) rebalance protocol, so adding or
    removing a topic moves only that topic's partitions and the others keep flowing. An owner that
    keeps many topics on one consumer wants this: with the eager protocol every topic change stops
    every topic of the group for the length of the rebalance.

    ``read_on_demand`` (with ``start_at_end``): the owner only wants records it is waiting for
    (answers to its own requests) and says so with ``expect(topic)`` / ``stop_expecting(topic)``.
    On a broker where fetching is not free (the embedded broker, see ``dataflow.kafka_parking``)
    a topic's partitions are then fetched only while something is expected on them and paused
    otherwise: a gateway serving a hundred pipelines fetches one or two partitions per request,
    not a hundred. A paused partition keeps its position, so a record that arrives before its
    partition is resumed is still read. Elsewhere (long-poll fetches) every partition is fetched.
    """

    def __init__(self, settings: KafkaSettings, group_id: str, on_records: Callable[[list[Message]], None], *,
                 offset_reset: str = "latest", start_at_end: bool = False,
                 on_revoke: Callable[[list[TopicPartition]], None] | None = None,
                 on_assign: Callable[[list[TopicPartition]], None] | None = None,
                 batch_size: int = 500, name: str = "gateway-consumer", cooperative: bool = False,
                 commit_interval_s: float = 0.0, read_on_demand: bool = False) -> None:
        if read_on_demand and not start_at_end:
            raise ValueError("read_on_demand needs start_at_end (positions are kept per partition)")
        self.group_id = group_id
        overrides = {"partition.assignment.strategy": "cooperative-sticky"} if cooperative else {}
        self._consumer = Consumer(settings.consumer(group_id, offset_reset=offset_reset, **overrides))
        self._cooperative = cooperative
        self._on_records = on_records
        self._on_revoke = on_revoke
        self._on_assign = on_assign
        self._start_at_end = start_at_end
        self._batch_size = batch_size
        self._lock = threading.Condition()
        self._topics: set[str] = set()
        self._subscribed: frozenset[str] = frozenset()
        # Subscription changes wait for a join under way, so at most one is ever pending and
        # the consumer never leaves mid-join (see ``GroupJoin``).
        self._join = GroupJoin(settings.session_timeout_ms)
        self._assigned: dict[str, set[int]] = {}
        self._positions: dict[tuple[str, int], int] = {}
        self._commits: list[TopicPartition] = []
        self._commit_interval_s = commit_interval_s
        self._committed_at = 0.0
        self._stop = threading.Event()
        self._exited = _ExitSignal()
        # On the embedded broker an idle consumer is parked (dataflow.kafka_parking); ``expect()``
        # and the parking watcher wake it through this event.
        self._wake = threading.Event()
        self._expecting = False
        lot = parking_lot(settings)
        self._on_demand = _OnDemand() if read_on_demand and lot is not None else None
        self._spot = lot.spot(self._consumer, on_wake=self._wake.set) \
            if lot is not None and self._on_demand is None else None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def expect(self, topic: str) -> None:
        """A record is due soon on ``topic`` (e.g. the answer to a request about to be sent): do
        not stay parked, and (``read_on_demand``) fetch the topic until ``stop_expecting(topic)``
        has been called as often as this."""
        if self._on_demand is not None:
            with self._lock:
                self._on_demand.expect(topic)
            self._wake.set()
        elif self._spot is not None:
            self._expecting = True
            if self._spot.parked:
                self._wake.set()

    def stop_expecting(self, topic: str) -> None:
        """What ``expect(topic)`` announced has arrived or is no longer awaited."""
        if self._on_demand is not None:
            with self._lock:
                self._on_demand.stop_expecting(topic)

    # ---- topic set --------------------------------------------------------------------------
    def add_topic(self, topic: str) -> None:
        with self._lock:
            self._topics.add(topic)

    def remove_topic(self, topic: str) -> None:
        with self._lock:
            self._topics.discard(topic)

    @property
    def topics(self) -> set[str]:
        with self._lock:
            return set(self._topics)

    def fetched_partitions(self) -> set[tuple[str, int]] | None:
        """(``read_on_demand`` on the embedded broker) the partitions fetched now, the others
        being paused; None when every assigned partition is fetched."""
        if self._on_demand is None:
            return None
        with self._lock:
            return set(self._on_demand.fetching)

    def partitions(self, topic: str) -> list[int]:
        """Partitions of ``topic`` assigned to (and positioned by) this consumer right now."""
        with self._lock:
            return sorted(self._assigned.get(topic, ()))

    def wait_partitions(self, topic: str, timeout_s: float) -> list[int]:
        """Block the calling thread until ``topic`` has partitions here (for synchronous callers;
        asyncio code should wait on its own ``on_assign`` signal instead)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not self._assigned.get(topic):
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._lock.wait(left)
            return sorted(self._assigned[topic])

    def commit(self, offsets: Iterable[TopicPartition]) -> None:
        """Queue offsets (next offset to read) for an asynchronous commit on the consumer thread."""
        with self._lock:
            self._commits.extend(offsets)

    # ---- thread -------------------------------------------------------------------------------
    def _assign_cb(self, consumer, partitions: list[TopicPartition]) -> None:
        self._join.assigned()
        if self._start_at_end:
            for tp in partitions:
                known = self._positions.get((tp.topic, tp.partition))
                if known is not None:
                    tp.offset = known
                    continue
                try:
                    _, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                    tp.offset = high
                except Exception as exc:
                    log.warning("cannot read end offset of %s[%d]: %s", tp.topic, tp.partition, exc)
                    tp.offset = OFFSET_INVALID
                self._positions[(tp.topic, tp.partition)] = tp.offset
            if self._cooperative:
                consumer.incremental_assign(partitions)
            else:
                consumer.assign(partitions)
        if self._spot is not None:  # resume a parked assignment
            self._spot.touch()
        with self._lock:
            for tp in partitions:
                self._assigned.setdefault(tp.topic, set()).add(tp.partition)
            if self._on_demand is not None:
                self._on_demand.assigned((tp.topic, tp.partition) for tp in partitions)
            self._lock.notify_all()
        log.info("group %s assigned %s", self.group_id, [(tp.topic, tp.partition) for tp in partitions])
        if self._on_assign:
            try:
                self._on_assign(partitions)
            except Exception:
                log.debug("on_assign hook failed", exc_info=True)

    def _revoke_cb(self, consumer, partitions: list[TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                self._assigned.get(tp.topic, set()).discard(tp.partition)
            if self._on_demand is not None:
                self._on_demand.revoked((tp.topic, tp.partition) for tp in partitions)
        self._flush_commits(sync=True)
        if self._on_revoke:
            try:
                self._on_revoke(partitions)
            except Exception:
                log.debug("on_revoke hook failed", exc_info=True)
        if self._start_at_end:
            if self._cooperative:
                consumer.incremental_unassign(partitions)
            else:
                consumer.unassign()

    def _flush_commits(self, sync: bool = False) -> None:
        if not sync and self._commit_interval_s:
            now = time.monotonic()
            if now - self._committed_at < self._commit_interval_s:
                return
            self._committed_at = now
        with self._lock:
            commits, self._commits = self._commits, []
        if not commits:
            return
        latest: dict[tuple[str, int], int] = {}
        for tp in commits:
            latest[(tp.topic, tp.partition)] = max(tp.offset, latest.get((tp.topic, tp.partition), -1))
        try:
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in latest.items()],
                                  asynchronous=not sync)  # type: ignore[call-overload]  # the stub takes literals only
        except Exception as exc:
            log.debug("commit failed: %s", exc)

    def _existing(self, topics) -> frozenset[str]:
        try:
            md = self._consumer.list_topics(timeout=2)
        except Exception as exc:
            log.debug("list_topics failed: %s", exc)
            return frozenset()
        return frozenset(t for t in topics if t in md.topics and md.topics[t].error is None)

    def _forget(self, topics) -> None:
        """Drop what is remembered about topics no longer subscribed (consumer thread)."""
        if not topics:
            return
        for key in [k for k in self._positions if k[0] in topics]:
            del self._positions[key]
        with self._lock:
            for t in topics:
                self._assigned.pop(t, None)

    def _run(self) -> None:
        try:
            checked_at, existing = 0.0, frozenset[str]()
            while not self._stop.is_set():
                with self._lock:
                    requested = frozenset(self._topics)
                # Subscribe only to topics that exist: librdkafka notices a topic created after
                # subscribing only at its next metadata refresh (minutes by default).
                if requested - existing and time.monotonic() - checked_at > 1.0:
                    checked_at = time.monotonic()
                    existing = self._existing(requested) | (existing & requested)
                wanted = requested & existing
                if wanted != self._subscribed and not self._join.pending:
                    self._forget(self._subscribed - wanted)
                    if wanted:
                        self._join.started()
                        self._consumer.subscribe(sorted(wanted), on_assign=self._assign_cb,
                                                 on_revoke=self._revoke_cb, on_lost=self._revoke_cb)
                    else:
                        self._join.finish(self._consumer)
                        self._consumer.unsubscribe()
                        with self._lock:
                            self._assigned.clear()
                    self._subscribed = wanted
                if not self._subscribed:
                    time.sleep(0.05)
                    continue
                msgs = self._poll()
                good = []
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("consumer %s: %s", self.group_id, err)
                        continue
                    good.append(m)
                    if self._start_at_end:
                        # a record without an error has all three; confluent_kafka's stub says Optional
                        self._positions[(m.topic(), m.partition())] = m.offset() + 1  # type: ignore[index, operator]
                if good:
                    try:
                        self._on_records(good)
                    except Exception:
                        log.exception("record handler failed in group %s", self.group_id)
                self._flush_commits()
        finally:
            self._join.finish(self._consumer)
            self._flush_commits(sync=True)
            if self._spot is not None:
                self._spot.close()
            try:
                self._consumer.close()
            except Exception:
                pass
            with self._lock:
                self._assigned.clear()
            self._positions.clear()
            self._exited.fire()

    def _poll(self) -> list[Message]:
        if self._on_demand is not None:
            return self._poll_on_demand()
        spot = self._spot
        if spot is None:
            return poll_batch(self._consumer, self._batch_size, 0.1)
        if spot.parked:
            if not (spot.woken or self._expecting):
                self._wake.wait(0.1)  # a paused consumer returns nothing: wait for a wake-up
            self._wake.clear()
            if spot.woken or self._expecting:
                self._expecting = False
                spot.unpark()
            else:  # still parked: serve rebalance callbacks only
                msgs = poll_batch(self._consumer, self._batch_size, 0)
                spot.active(len(msgs))
                return msgs
        elif self._expecting:  # an answer is due: do not park before it arrives
            self._expecting = False
            spot.touch()
        msgs = poll_batch(self._consumer, self._batch_size, 0.1)
        spot.active(len(msgs))
        return msgs

    def _poll_on_demand(self) -> list[Message]:
        """Fetch only the partitions of expected topics; with none, wait for ``expect``."""
        demand = self._on_demand
        assert demand is not None
        self._apply_demand(demand)
        if not demand.fetching:
            self._wake.wait(ON_DEMAND_IDLE_WAIT_S)
            self._wake.clear()
            self._apply_demand(demand)
            if not demand.fetching:  # nothing expected: serve rebalance callbacks only
                return poll_batch(self._consumer, self._batch_size, 0)
        # Short waits while fetching: a topic expected meanwhile is resumed within this long,
        # well before its answer can be back (a pipeline or model round trip).
        return poll_batch(self._consumer, self._batch_size, ON_DEMAND_POLL_S)

    def _apply_demand(self, demand: _OnDemand) -> None:
        """Pause and resume partitions as expected topics come and go (consumer thread)."""
        with self._lock:
            resume, pause = demand.changes(self._assigned, self._positions)
            due = demand.catch_up_due()
        consumer = self._consumer
        try:
            if pause:
                consumer.pause([TopicPartition(t, p) for t, p in pause])
            if resume:
                consumer.resume([TopicPartition(t, p) for t, p in resume])
                # librdkafka's fetcher notices a resume only at its next periodic wake-up (up to
                # 1 s later); any request to it wakes it at once. (A seek would too, but the
                # first fetch after seeking a partition never read from took ~0.5 s here.)
                t, p = resume[0]
                consumer.get_watermark_offsets(TopicPartition(t, p), timeout=1, cached=False)
        except Exception as exc:
            log.debug("consumer %s: pause/resume failed: %s", self.group_id, exc)
            with self._lock:
                demand.forget_states()  # set them all again next time
        if due:
            self._catch_up(demand, due)

    def _catch_up(self, demand: _OnDemand, partitions: list[tuple[str, int]]) -> None:
        """Read what others wrote to long-paused partitions (nobody's answer here), so a request
        after a long quiet spell does not first read all of it. Paused partitions keep their
        position, so this only moves the reading of those records earlier."""
        try:
            ends = self._consumer.offsets_for_times([TopicPartition(t, p, -1) for t, p in partitions], timeout=5)
        except Exception as exc:
            log.debug("consumer %s: cannot read end offsets: %s", self.group_id, exc)
            ends = []
        with self._lock:
            demand.catch_up({(tp.topic, tp.partition): tp.offset if tp.error is None else -1 for tp in ends}
                            if ends else {key: -1 for key in partitions}, self._positions)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Ask the thread to leave the group, destroy the client and exit; returns at once."""
        self._stop.set()

    def on_exit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the consumer thread once it has exited (at once if it already has)."""
        self._exited.add(callback)

    async def wait_closed(self) -> None:
        """Wait (on the running loop, no worker thread) until the thread has exited."""
        await self._exited.wait()

    def close(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout_s)
