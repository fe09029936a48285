"""The state changelog of a pipeline version: a compacted topic that is the durable copy of every
partition's state, and the restore that rebuilds a partition's local database from it.

* One topic per stateful pipeline version, ``<group_id>-state-changelog``, created by the engine
  with ``cleanup.policy=compact`` and the partition count of the version's source topics:
  changelog partition p holds the state of input partition p.
* Record key ``<store name>\\x00<store key>`` (the local database's key), value the stored bytes,
  or a tombstone (``None``) for a delete. A checkpoint sends only the last value of each key
  written since the previous one.
* The local database records the changelog offset it is known to be complete up to (stored when
  a task is closed: the partition's end offset after the final checkpoint). Restore reads from
  there, so a replica that gets a partition back replays only what others wrote meanwhile. Any
  lower position is safe too: replaying a record already applied writes the same value again.
* Restore is finished once every partition's position has reached its end offset and then no
  record arrives for ``idle_s``: some brokers (the embedded one among them) report end offsets up
  to one produce batch too low, so the end offset is only a lower bound. A broker that does not
  compact (the embedded one) keeps every record: restore is then longer, never wrong.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from typing import cast

from confluent_kafka import Consumer, KafkaException, TopicPartition

from dataflow.kafka import KafkaSettings
from dataflow.state.partition import PartitionState

log = logging.getLogger(__name__)

RESTORE_IDLE_S = 0.5
RESTORE_TIMEOUT_S = 60.0
WATERMARK_TIMEOUT_S = 10.0
WATERMARK_ATTEMPTS = 3          # a slow broker answers late: ask again before failing the restore
APPLY_CHUNK = 2000              # restored records written to the database per batch

TOPIC_CONFIG = {"cleanup.policy": "compact"}


def changelog_topic(group_id: str) -> str:
    return f"{group_id}-state-changelog"


class RestoreError(RuntimeError):
    """The changelog could not be read back."""


def _watermarks(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
    for attempt in range(1, WATERMARK_ATTEMPTS + 1):
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                  timeout=WATERMARK_TIMEOUT_S, cached=False)
        except KafkaException as exc:
            if attempt == WATERMARK_ATTEMPTS:
                raise RestoreError(f"cannot read the end offset of {topic}[{partition}] "
                                   f"({attempt} attempts): {exc}") from exc
            log.warning("changelog %s[%d]: end offset not read (%s); retrying", topic, partition, exc)
    raise AssertionError("unreachable")


def end_position(consumer: Consumer, topic: str, partition: int) -> int | None:
    """The changelog partition's end offset (a lower bound on some brokers), None if unreadable."""
    try:
        return _watermarks(consumer, topic, partition)[1]
    except RestoreError as exc:
        log.warning("%s", exc)
        return None


def restore(settings: KafkaSettings, topic: str, partition_states: Iterable[PartitionState], *,
            read_committed: bool = False, idle_s: float = RESTORE_IDLE_S, timeout_s: float = RESTORE_TIMEOUT_S) -> int:
    """Bring each state up to the end of its changelog partition; returns records applied."""
    states = {s.partition: s for s in partition_states}
    if not states:
        return 0
    consumer = Consumer(settings.consumer(
        f"changelog-restore-{uuid.uuid4().hex[:12]}", offset_reset="earliest",
        **{"isolation.level": "read_committed" if read_committed else "read_uncommitted"}))
    applied = 0
    try:
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for p, state in sorted(states.items()):
            low, high = _watermarks(consumer, topic, p)
            position = state.changelog_position()
            if position > high or position < low:  # log recreated, or history deleted: start over
                if position:
                    log.warning("changelog %s[%d]: local state at %d outside the log [%d, %d]; "
                                "rebuilding it from the log", topic, p, position, low, high)
                state.wipe()
                position = low
            if position < high:
                ends[p] = high
                starts.append(TopicPartition(topic, p, position))
        if not starts:
            return 0
        consumer.assign(starts)
        pending: dict[int, list[tuple[bytes, bytes | None]]] = {p: [] for p in ends}
        next_offset: dict[int, int] = {}

        def write(p: int) -> None:
            if pending[p]:
                states[p].apply_restored(pending[p], next_offset[p])
                pending[p] = []

        deadline = time.monotonic() + timeout_s
        last_record = time.monotonic()
        while True:
            now = time.monotonic()
            if now > deadline:
                raise RestoreError(f"{topic}: partitions {sorted(ends)} not read to their end "
                                   f"within {timeout_s:g}s")
            if not ends and now - last_record >= idle_s:
                break
            for m in consumer.consume(500, 0.05):
                err = m.error()
                if err is not None:
                    if err.fatal():
                        raise RestoreError(f"{topic}: {err}")
                    continue
                p = cast(int, m.partition())  # a record without an error has its partition and offset
                if p not in pending:
                    continue
                pending[p].append((m.key() or b"", m.value()))
                next_offset[p] = cast(int, m.offset()) + 1
                applied += 1
                last_record = time.monotonic()
                if len(pending[p]) >= APPLY_CHUNK:
                    write(p)
            if ends:  # positions step over transaction markers, offsets of records do not
                for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                    if tp.offset >= ends[tp.partition]:
                        del ends[tp.partition]
        for p in pending:
            write(p)
        return applied
    finally:
        consumer.close()
