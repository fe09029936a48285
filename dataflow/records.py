"""The record a step sees: Kafka's (topic, partition, key, headers, value, timestamp), no client types."""
from __future__ import annotations

from dataclasses import dataclass, field


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

    def evolve(self, **changes) -> "Record":
        """A copy with some fields changed (``dataclasses.replace`` without its per-call cost:
        this runs several times per record on the hot path)."""
        if not changes.keys() <= _FIELDS:
            raise TypeError(f"Record has no field(s) {sorted(changes.keys() - _FIELDS)}")
        get = changes.get
        return Record(get("topic", self.topic), get("key", self.key), get("value", self.value),
                      get("headers", self.headers), get("timestamp", self.timestamp),
                      get("partition", self.partition))


_FIELDS = frozenset(Record.__dataclass_fields__)
