"""The record a step sees: Kafka's (topic, partition, key, headers, value, timestamp), no client types."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dataflow.headers import normalise


@dataclass(slots=True)
class Record:
    """One Kafka record.

    ``key`` is the UTF-8 string key (never changed by the dataflow: the gateway correlates answers
    by it); ``value`` the raw bytes (protobuf or, on the error topic, UTF-8 text); ``timestamp`` in epoch milliseconds.
    ``partition`` is where it was read from; sinks compute their own (see ``dataflow.kafka``).
    """

    topic: str
    key: str | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int = 0
    partition: int = 0

    def evolve(self, **changes: Any) -> Record:
        """A copy with some fields changed (``dataclasses.replace`` without its per-call cost:
        this runs several times per record on the hot path)."""
        if not changes.keys() <= _FIELDS:
            raise TypeError(f"Record has no field(s) {sorted(changes.keys() - _FIELDS)}")
        get = changes.get
        return Record(get("topic", self.topic), get("key", self.key), get("value", self.value),
                      get("headers", self.headers), get("timestamp", self.timestamp),
                      get("partition", self.partition))


_FIELDS = frozenset(Record.__dataclass_fields__)


def record_from_kafka(topic: str, partition: int, key: bytes | None, value: bytes | None, headers: Any,
                      timestamp_ms: int) -> Record:
    """A consumed message as a Record: the key decoded as UTF-8 (undecodable bytes replaced, so a
    foreign key still routes), headers in the one shape steps see."""
    return Record(topic, key.decode("utf-8", "replace") if key is not None else None, value,
                  normalise(headers), timestamp_ms, partition)


def record_from_message(m: Any) -> Record:
    """A confluent-kafka ``Message`` as a Record."""
    return record_from_kafka(m.topic(), m.partition(), m.key(), m.value(), m.headers(), m.timestamp()[1])


def record_from_event(message: Any) -> Record:
    """A Faust / aiokafka consumer message (attributes; timestamp in float seconds) as a Record."""
    timestamp = message.timestamp
    return record_from_kafka(message.topic, message.partition, message.key, message.value, message.headers,
                             round(timestamp * 1000) if timestamp else 0)
