"""Record construction from consumed messages: the same Record whichever client read it."""
from __future__ import annotations

from types import SimpleNamespace

from dataflow.records import Record, record_from_event, record_from_message


class ConfluentMessage:
    """The accessor-method shape of confluent_kafka.Message."""

    def __init__(self, topic, partition, key, value, headers, timestamp_ms):
        self._fields = topic, partition, key, value, headers, timestamp_ms

    def topic(self): return self._fields[0]
    def partition(self): return self._fields[1]
    def key(self): return self._fields[2]
    def value(self): return self._fields[3]
    def headers(self): return self._fields[4]
    def timestamp(self): return (1, self._fields[5])


def test_both_clients_give_the_same_record():
    expected = Record("t", "0.p.r\ufffd", b"v", [("pipeline", b"p"), ("x", b"")], 1500, 3)
    confluent = ConfluentMessage("t", 3, b"0.p.r\xff", b"v", [("pipeline", b"p"), ("x", None)], 1500)
    faust = SimpleNamespace(topic="t", partition=3, key=b"0.p.r\xff", value=b"v",
                            headers={b"pipeline": "p", "x": None}, timestamp=1.5)
    assert record_from_message(confluent) == expected
    assert record_from_event(faust) == expected


def test_missing_key_headers_and_timestamp():
    faust = SimpleNamespace(topic="t", partition=0, key=None, value=None, headers=None, timestamp=None)
    assert record_from_event(faust) == Record("t", None, None, [], 0, 0)
