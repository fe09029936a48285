"""Client settings that depend on the broker profile."""
from dataflow.kafka import CLUSTER_PROFILE, EMBEDDED_PROFILE, KafkaSettings


def test_embedded_broker_producers_keep_one_request_in_flight():
    conf = KafkaSettings(profile=EMBEDDED_PROFILE).producer()
    assert conf["max.in.flight.requests.per.connection"] == 1
    assert conf["linger.ms"] == 0  # batches come from the request in flight, not from a delay
    assert conf["enable.idempotence"] is True


def test_cluster_producers_keep_librdkafka_defaults():
    conf = KafkaSettings(profile=CLUSTER_PROFILE).producer()
    assert "max.in.flight.requests.per.connection" not in conf
    assert conf["linger.ms"] == 0


def test_overrides_win_over_the_profile():
    conf = KafkaSettings(profile=EMBEDDED_PROFILE).producer(**{"max.in.flight.requests.per.connection": 5})
    assert conf["max.in.flight.requests.per.connection"] == 5
