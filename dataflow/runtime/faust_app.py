"""Build the Faust ``App`` of one pipeline version, with the settings this project needs.

One app = one consumer group = one pipeline version, as the reference engine runs one Kafka
Streams application per version: app id is the version's group id,
consumption starts at ``latest``, offsets are committed at-least-once (or, optionally, in Kafka
transactions). Settings that depart from Faust's defaults, and why (the embedded broker's behaviours are
described in docs/embedded-broker.md):

* session timeout 6 s, heartbeat 0.5 s, rebalance timeout 6 s: group joins on a broker that waits
  half the session timeout take ~3 s instead of ~30 s (slow group joins);
* consumer fetch wait ``KafkaSettings.fetch_wait_max_ms`` (~10 ms): Faust hard-codes 1500 ms for
  its aiokafka consumer, which adds ~1.3 s per hop on a broker that does not release a waiting
  fetch when data arrives (held fetches); patched in ``use_fetch_wait`` (process-global: workers run
  one app per process);
* producer linger 5 ms and 1 MB batches: fewer, larger produce requests (the broker spends CPU per request);
* web server off, but on its own port: Faust binds it anyway;
* no leader topic (unused), ``stream_wait_empty`` off (stop quickly; at-least-once replays).

Security settings come from ``KafkaSettings.extra`` (standard librdkafka keys) so a real cluster
needs no code change: ``security.protocol``, ``sasl.mechanism(s)``, ``sasl.username``,
``sasl.password``, ``ssl.ca.location``, ``ssl.certificate.location``, ``ssl.key.location``.
"""
from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from dataflow.kafka import KafkaSettings
from dataflow.runtime.faust_eos import enable_init_producer_id_v3

if TYPE_CHECKING:  # only named in annotations
    from aiokafka import AIOKafkaConsumer
    from faust.auth import Credentials
    from faust.transport.drivers.aiokafka import Transport

_fetch_wait_ms: int | None = None
# Records per getmany and bytes per partition fetch: larger fetches mean fewer sequential
# fetch round trips per record (benchmarks/FAUST_PROFILE.md). Overridable for experiments.
MAX_POLL_RECORDS = int(os.environ.get("DATAFLOW_FAUST_MAX_POLL_RECORDS", "1000"))
FETCH_BYTES = int(os.environ.get("DATAFLOW_FAUST_FETCH_BYTES", str(4 * 1_048_576)))


def use_fetch_wait(ms: int) -> None:
    """Make every Faust worker consumer created in this process use ``fetch_max_wait_ms=ms``."""
    global _fetch_wait_ms
    first_time = _fetch_wait_ms is None
    _fetch_wait_ms = int(ms)
    if not first_time:
        return
    original = AIOKafkaConsumerThread._create_worker_consumer

    def create_worker_consumer(self: AIOKafkaConsumerThread, transport: Transport) -> AIOKafkaConsumer:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = _fetch_wait_ms  # read when the consumer starts its fetcher
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]  # patching faust


def _ssl_context(extra: dict[str, str]) -> ssl.SSLContext | None:
    ca = extra.get("ssl.ca.location")
    cert = extra.get("ssl.certificate.location")
    key = extra.get("ssl.key.location")
    if not (ca or cert):
        return ssl.create_default_context() if "SSL" in extra.get("security.protocol", "").upper() else None
    context = ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert, keyfile=key, password=extra.get("ssl.key.password"))
    return context


def broker_credentials(settings: KafkaSettings) -> Credentials | None:
    """Faust credentials for the security settings in ``settings.extra`` (None = plaintext)."""
    extra = dict(settings.extra)
    protocol = extra.get("security.protocol", "PLAINTEXT").upper()
    context = _ssl_context(extra)
    if protocol.startswith("SASL"):
        mechanism = extra.get("sasl.mechanism") or extra.get("sasl.mechanisms") or "PLAIN"
        creds = faust.SASLCredentials(username=extra.get("sasl.username"),
                                      password=extra.get("sasl.password"),
                                      mechanism=mechanism,
                                      ssl_context=context if protocol == "SASL_SSL" else None)
        return creds
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return None


def build_app(*, group_id: str, settings: KafkaSettings, partitions: int, datadir: Path,
              web_port: int, exactly_once: bool, commit_interval_ms: int,
              replication_factor: int = 1, max_message_bytes: int = 1_000_000) -> faust.App:
    """A Faust app for one pipeline version; its agent and timer are added by the caller."""
    use_fetch_wait(settings.fetch_wait_max_ms)
    if exactly_once:
        enable_init_producer_id_v3()
    brokers = ";".join(f"kafka://{hp.strip()}" for hp in settings.bootstrap_servers.split(",") if hp.strip())
    session_s = settings.session_timeout_ms / 1000.0
    return faust.App(
        group_id,
        broker=brokers,
        broker_credentials=broker_credentials(settings),
        store="memory://",  # no Faust tables: state is in partition tasks (faust_tasks)
        datadir=str(datadir),
        topic_partitions=partitions,
        topic_replication_factor=replication_factor,
        topic_disable_leader=True,
        consumer_auto_offset_reset="latest",
        processing_guarantee="exactly_once" if exactly_once else "at_least_once",
        broker_session_timeout=session_s,
        broker_heartbeat_interval=min(0.5, session_s / 3),
        broker_rebalance_timeout=session_s,
        broker_commit_interval=commit_interval_ms / 1000.0,
        broker_max_poll_records=MAX_POLL_RECORDS,
        # Per-partition fetch size; a larger single record is still returned (fetch v3+).
        consumer_max_fetch_size=FETCH_BYTES,
        producer_linger=0.005,
        producer_max_batch_size=1_048_576,
        producer_max_request_size=max(1_048_576, min(max_message_bytes, 64 * 1_048_576)),
        producer_acks=-1,
        stream_wait_empty=False,
        stream_buffer_maxsize=4096,
        web_enabled=False,
        web_host="127.0.0.1",
        web_port=web_port,
        table_standby_replicas=0,
    )
