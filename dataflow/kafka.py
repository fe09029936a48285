"""Kafka wire contracts in one place: topic names, partitioning, group ids, client settings, admin.

Topic names, partitioning and group ids are the reference's (README, Wire compatibility), so our
engine and gateways interoperate with the reference's on one cluster. Everything else in the
project imports these instead of formatting names or computing partitions itself.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # not in its stub's exports

from dataflow.seldon_env import SeldonEnvError, load_kafka_config

log = logging.getLogger(__name__)

SEPARATOR = "."
DEFAULT_PREFIX = "seldon"
DEFAULT_NAMESPACE = "default"
INPUTS = "inputs"
OUTPUTS = "outputs"
ERRORS = "errors"
_PREFIX_RE = re.compile(r"^[A-Za-z0-9._-]+$")
# Kafka refuses longer topic names (its Topic.MAX_NAME_LENGTH): a pipeline or model whose topics
# would be longer can never run, so it is refused when loaded rather than failing in the engine.
MAX_TOPIC_NAME_LENGTH = 249


class KafkaSetupError(RuntimeError):
    """A topic could not be created / described / deleted, or a setting is invalid."""


@dataclass(frozen=True, slots=True)
class TopicNamer:
    """Builds the reference's topic names: ``{prefix}.{ns}.(model|pipeline).{name}.(inputs|outputs)``."""

    prefix: str = DEFAULT_PREFIX
    namespace: str = DEFAULT_NAMESPACE

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise KafkaSetupError(
                f"The kafka prefix {self.prefix} is invalid; it must match {_PREFIX_RE.pattern}"
            )
        if not self.namespace:
            object.__setattr__(self, "namespace", DEFAULT_NAMESPACE)

    def _base(self) -> str:
        return f"{self.prefix}{SEPARATOR}{self.namespace}"

    def model_inputs(self, model: str) -> str:
        return f"{self._base()}.model.{model}.{INPUTS}"

    def model_outputs(self, model: str) -> str:
        return f"{self._base()}.model.{model}.{OUTPUTS}"

    def pipeline_inputs(self, pipeline: str) -> str:
        return f"{self._base()}.pipeline.{pipeline}.{INPUTS}"

    def pipeline_outputs(self, pipeline: str) -> str:
        return f"{self._base()}.pipeline.{pipeline}.{OUTPUTS}"

    def errors(self) -> str:
        return f"{self._base()}.{ERRORS}.{ERRORS}"

    def model_topic(self, ref: str) -> str:
        """``{prefix}.{ns}.model.{ref}`` for ``ref`` = ``m.inputs|outputs[.T]``."""
        return f"{self._base()}.model.{ref}"

    def pipeline_topic(self, ref: str) -> str:
        return f"{self._base()}.pipeline.{ref}"

    def longest_topic(self, kind: str, name: str) -> str:
        """The longest topic named after pipeline (``kind="pipeline"``) or model (``"model"``) ``name``:
        its outputs topic (tensor names are not part of topic names)."""
        return self.pipeline_outputs(name) if kind == "pipeline" else self.model_outputs(name)

    def name_too_long(self, kind: str, name: str) -> str | None:
        """Why a pipeline/model ``name`` cannot be used with this prefix and namespace, or None.

        ``kind`` is "pipeline" or "model" (a pipeline step is named after its model's topics)."""
        topic = self.longest_topic(kind, name)
        if len(topic) <= MAX_TOPIC_NAME_LENGTH:
            return None
        room = MAX_TOPIC_NAME_LENGTH - len(self.longest_topic(kind, ""))
        shape = f"{self._base()}.{'pipeline' if kind == 'pipeline' else 'model'}.<name>.{OUTPUTS}"
        return (f"its topic {shape} would be {len(topic)} characters, "
                f"over Kafka's limit of {MAX_TOPIC_NAME_LENGTH}; with topic prefix {self.prefix!r} and "
                f"namespace {self.namespace!r} a {kind} name may have at most {room} characters")


def topic_suffix(topic: str) -> str:
    """Last dot-part of a topic name (``inputs``, ``outputs``, ``errors``...)."""
    return topic.rsplit(SEPARATOR, 1)[-1]


def partition_for_key(key: str | bytes | None, num_partitions: int) -> int:
    """Sink partition, as the reference computes it: the integer before the first ``.`` of the key, clamped; else 0."""
    if num_partitions <= 1 or key is None:
        return 0
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    head = key.split(SEPARATOR, 1)[0]
    try:
        p = int(head)
    except ValueError:
        return 0
    return min(max(p, 0), num_partitions - 1)


def hash_if_long(uid: str) -> str:
    """The uid itself if at most 16 chars, else its MD5 digest read as a positive integer in
    lowercase hex, as the reference engine prints it (Java ``BigInteger(1, digest).toString(16)``):
    leading zeros are dropped, so about one uid in 16 hashes to fewer than 32 characters. Group
    ids (and the changelog topics named after them) must match byte for byte, or a version moved
    between engines would start over at ``latest``."""
    if len(uid) <= 16:
        return uid
    return format(int.from_bytes(hashlib.md5(uid.encode()).digest(), "big"), "x")


def _prefixed(name: str, consumer_prefix: str = "", namespace: str = "") -> str:
    parts = [p for p in (consumer_prefix, namespace) if p]
    return "-".join(parts + [name])


def dataflow_group_id(uid: str, consumer_prefix: str = "", namespace: str = "") -> str:
    """Consumer group of one pipeline version: ``[prefix-][ns-]seldon-dataflow-<hashIfLong(uid)>``."""
    return _prefixed(f"seldon-dataflow-{hash_if_long(uid)}", consumer_prefix, namespace)


def fnv32a(text: str) -> int:
    h = 0x811C9DC5
    for b in text.encode():
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def pipelinegateway_group_id(name: str, consumer_prefix: str = "", namespace: str = "", buckets: int = 100) -> str:
    return _prefixed(f"seldon-pipelinegateway-{fnv32a(name) % buckets}", consumer_prefix, namespace)


def modelgateway_group_id(model: str, consumer_prefix: str = "", namespace: str = "", buckets: int = 100) -> str:
    return _prefixed(f"seldon-modelgateway-{fnv32a(model) % buckets}", consumer_prefix, namespace)


# --------------------------------------------------------------------------------------------
# Client settings
# --------------------------------------------------------------------------------------------

BOOTSTRAP_ENV = "DATAFLOW_KAFKA_BOOTSTRAP"
CONFIG_ENV = "DATAFLOW_KAFKA_CONFIG"  # JSON file of extra librdkafka settings (security, SASL, TLS)


# The embedded broker is started with this cluster id, so any client can tell it is talking to it
# (one metadata request) and use the settings that broker needs; every other cluster gets what a
# Kafka operator expects, librdkafka's defaults.
EMBEDDED_CLUSTER_ID = "dataflow-embedded"


@dataclass(frozen=True)
class BrokerProfile:
    """Client timings that depend on the broker, not on the pipeline.

    ``cluster`` (any real Kafka): long-poll fetches return as soon as data arrives, so librdkafka's
    500 ms fetch wait costs no latency and ~2 idle requests/s per consumer; 45 s session timeout.

    ``embedded``: the embedded broker holds an empty fetch for the whole wait even when data
    arrives, so a latency path needs a short wait (10 ms). That makes every idle consumer send
    ~100 fetches/s, so consumers that have been idle for ``park_after_s`` are parked (their
    partitions paused; ``dataflow.kafka_parking`` watches the end offsets of all parked
    partitions with one request and resumes a consumer when its partitions get data). Its group
    joins take half the session timeout, hence 6 s. Its CPU goes per request far more than per
    record (a 1-record produce request ~0.07 ms, a 20-record one ~0.15 ms), so producers keep one
    request in flight (``producer_max_in_flight``): records produced while it is out go together
    in the next one, a batch that grows with the load and costs a lone record nothing (a linger
    would delay every hop of every request). With librdkafka's 5 in flight, the broker spent 3.2 ms
    of CPU per request through a 2-step pipeline under 32 concurrent requests; with 1, 1.7 ms.
    """

    name: str
    fetch_wait_max_ms: int
    session_timeout_ms: int
    park_idle_consumers: bool
    park_after_s: float = 1.0
    producer_max_in_flight: int | None = None  # None: librdkafka's default (5)


CLUSTER_PROFILE = BrokerProfile("cluster", fetch_wait_max_ms=500, session_timeout_ms=45000,
                                park_idle_consumers=False)
EMBEDDED_PROFILE = BrokerProfile("embedded", fetch_wait_max_ms=10, session_timeout_ms=6000,
                                 park_idle_consumers=True, producer_max_in_flight=1)
# each value: (profile, retry after)
_profiles: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[BrokerProfile, float | None]] = {}


def detect_profile(settings: KafkaSettings, timeout_s: float = 3.0) -> BrokerProfile:
    """The profile of the cluster ``settings`` point at (asked once per process and cluster).

    If the cluster cannot be reached the answer is not remembered and the ``cluster`` profile is
    used for this client (a client made before the broker is up gets Kafka's defaults)."""
    key = (settings.bootstrap_servers, settings.extra)
    known = _profiles.get(key)
    if known is not None and (known[1] is None or time.monotonic() < known[1]):
        return known[0]

    try:
        cluster_id = AdminClient(settings.common()).list_topics(timeout=timeout_s).cluster_id
    except Exception as exc:
        log.debug("cannot read the cluster id of %s: %s", settings.bootstrap_servers, exc)
        # Asked again later, but not by every client made meanwhile (each would wait timeout_s).
        _profiles[key] = (CLUSTER_PROFILE, time.monotonic() + 10.0)
        return CLUSTER_PROFILE
    profile = EMBEDDED_PROFILE if cluster_id == EMBEDDED_CLUSTER_ID else CLUSTER_PROFILE
    _profiles[key] = (profile, None)
    return profile


@dataclass(frozen=True)
class KafkaSettings:
    """Connection settings shared by every client. ``extra`` holds standard librdkafka keys
    (``security.protocol``, ``sasl.*``, ``ssl.*``...) so a real cluster needs no code change.

    ``profile`` None means: ask the cluster (``detect_profile``); tests and benchmarks may pin
    one. ``session_timeout_ms`` / ``fetch_wait_max_ms`` override the profile's values."""

    bootstrap_servers: str = "127.0.0.1:9092"
    extra: tuple[tuple[str, str], ...] = ()
    session_timeout_ms_override: int | None = None
    fetch_wait_max_ms_override: int | None = None
    profile: BrokerProfile | None = None

    def broker_profile(self) -> BrokerProfile:
        return self.profile or detect_profile(self)

    @property
    def session_timeout_ms(self) -> int:
        return self.session_timeout_ms_override or self.broker_profile().session_timeout_ms

    @property
    def fetch_wait_max_ms(self) -> int:
        if self.fetch_wait_max_ms_override is not None:
            return self.fetch_wait_max_ms_override
        return self.broker_profile().fetch_wait_max_ms

    @classmethod
    def from_env(cls, bootstrap: str | None = None, config_path: str | None = None,
                 security: Mapping[str, str] | None = None) -> KafkaSettings:
        """Bootstrap: ``bootstrap`` > env > the config file's (reference layout) > 127.0.0.1:9092.
        ``security`` (settings derived from reference-style env vars) is overridden by the file."""
        extra: dict[str, str] = dict(security or {})
        file_bootstrap = None
        path = config_path or os.environ.get(CONFIG_ENV)
        if path:
            try:
                cfg = load_kafka_config(path)
            except SeldonEnvError as exc:
                raise KafkaSetupError(str(exc)) from exc
            extra.update(cfg.extra)
            file_bootstrap = cfg.bootstrap
        bootstrap = bootstrap or os.environ.get(BOOTSTRAP_ENV) or file_bootstrap or "127.0.0.1:9092"
        return cls(bootstrap_servers=bootstrap, extra=tuple(sorted(extra.items())))

    def common(self) -> dict[str, str | int | float | bool]:
        conf: dict[str, str | int | float | bool] = {"bootstrap.servers": self.bootstrap_servers}
        conf.update(dict(self.extra))
        return conf

    def consumer(self, group_id: str, *, offset_reset: str = "latest", **overrides: Any) -> dict[str, Any]:
        conf = self.common()
        conf.update(
            {
                "group.id": group_id,
                "auto.offset.reset": offset_reset,
                "enable.auto.commit": False,
                "session.timeout.ms": self.session_timeout_ms,
                "heartbeat.interval.ms": min(3000, self.session_timeout_ms // 3),
                "fetch.wait.max.ms": self.fetch_wait_max_ms,
                "fetch.queue.backoff.ms": 10,
                "enable.partition.eof": False,
            }
        )
        conf.update(overrides)
        return conf

    def producer(self, **overrides: Any) -> dict[str, Any]:
        """``linger.ms=0``, as the reference's Kafka config: every hop of a pipeline is a produce,
        and a sequential request through a 2-step pipeline makes six of them, so a 5 ms linger
        was ~20 ms of its latency (51 -> 29 ms p50, measured). Under load batches still form
        while earlier produce requests are in flight (on the embedded broker only one is: see
        ``BrokerProfile``)."""
        conf = self.common()
        conf.update({"linger.ms": 0, "acks": "all", "enable.idempotence": True,
                     "batch.num.messages": 10000, "queue.buffering.max.kbytes": 1048576})
        in_flight = self.broker_profile().producer_max_in_flight
        if in_flight is not None:
            conf["max.in.flight.requests.per.connection"] = in_flight
        conf.update(overrides)
        return conf


def poll_batch(consumer: Consumer, max_records: int, timeout_s: float) -> list[Message]:
    """Up to ``max_records`` records from a confluent-kafka consumer, returning as soon as any are
    available: first whatever is already fetched (no wait); if nothing, block up to ``timeout_s``
    for the first record only, then take what is buffered behind it.

    ``Consumer.consume(n, timeout)`` waits for the whole timeout unless ``n`` records arrive, which
    would add up to ``timeout`` of latency to every lone record on a latency path.
    """
    msgs = consumer.consume(max_records, 0)
    if msgs:
        return msgs
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]


# --------------------------------------------------------------------------------------------
# Admin
# --------------------------------------------------------------------------------------------


def ensure_topics(
    settings: KafkaSettings,
    topics: Iterable[str],
    num_partitions: int = 1,
    replication_factor: int = 1,
    *,
    require_equal: bool = True,
    timeout_s: float = 60.0,
    topic_config: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Create missing topics with ``num_partitions`` and wait until all exist.

    Returns each topic's partition count. With ``require_equal`` (a pipeline's topics must share
    one partition count) raises ``KafkaSetupError`` naming the odd topics out.
    """
    wanted = sorted(set(topics))
    if not wanted:
        return {}
    admin = AdminClient(settings.common())
    existing = describe_partitions(admin, wanted, timeout_s=5)
    missing = [t for t in wanted if t not in existing]
    if missing:
        new = [NewTopic(t, num_partitions=num_partitions, replication_factor=replication_factor,
                        config=dict(topic_config or {})) for t in missing]
        for topic, fut in admin.create_topics(new, operation_timeout=timeout_s).items():
            try:
                fut.result()
            except KafkaException as exc:
                err = exc.args[0]
                if getattr(err, "name", lambda: "")() != "TOPIC_ALREADY_EXISTS":
                    raise KafkaSetupError(f"cannot create topic {topic}: {err}") from exc
    deadline = time.monotonic() + timeout_s
    while True:
        counts = describe_partitions(admin, wanted, timeout_s=5)
        if all(t in counts for t in wanted):
            break
        if time.monotonic() > deadline:
            absent = [t for t in wanted if t not in counts]
            raise KafkaSetupError(f"topics not visible after {timeout_s}s: {absent}")
        time.sleep(0.2)
    if require_equal and len(set(counts.values())) > 1:
        detail = ", ".join(f"{t}={n}" for t, n in sorted(counts.items()))
        raise KafkaSetupError(f"topics of one pipeline must have equal partition counts: {detail}")
    return counts


def describe_partitions(admin: AdminClient, topics: Iterable[str], timeout_s: float = 5.0) -> dict[str, int]:
    """Partition count of each existing topic among ``topics`` (absent ones are left out)."""
    md = admin.list_topics(timeout=timeout_s)
    out: dict[str, int] = {}
    for t in topics:
        tm = md.topics.get(t)
        if tm is not None and tm.error is None and tm.partitions:
            out[t] = len(tm.partitions)
    return out


def delete_topics(settings: KafkaSettings, topics: Iterable[str], timeout_s: float = 30.0) -> None:
    names = sorted(set(topics))
    if not names:
        return
    admin = AdminClient(settings.common())
    for topic, fut in admin.delete_topics(names, operation_timeout=timeout_s).items():
        try:
            fut.result()
        except KafkaException as exc:
            err = exc.args[0]
            if getattr(err, "name", lambda: "")() != "UNKNOWN_TOPIC_OR_PART":
                raise KafkaSetupError(f"cannot delete topic {topic}: {err}") from exc


class GroupJoin:
    """Whether a consumer's group join is under way, so that it is never left mid-join.

    A member that leaves its group while its JoinGroup is in flight can leave the embedded
    broker's group with the departed member as leader: the next consumer of the same group id
    (another replica, the same pipeline loaded again) then waits for an assignment that nobody
    computes, for ever. The owner calls ``started()`` when it subscribes or a rebalance revokes
    its partitions, ``assigned()`` in its assign callback, and ``finish(consumer)`` before it
    unsubscribes or closes. A join that outlives the session timeout is given up on.
    """

    def __init__(self, session_timeout_ms: int) -> None:
        self._limit_s = session_timeout_ms / 1000
        self._since: float | None = None

    def started(self) -> None:
        self._since = time.monotonic()

    def assigned(self) -> None:
        self._since = None

    @property
    def pending(self) -> bool:
        if self._since is not None and time.monotonic() - self._since > self._limit_s:
            self._since = None
        return self._since is not None

    def finish(self, consumer: Consumer) -> None:
        """Serve the consumer's callbacks until the join completes. The records polled meanwhile
        are dropped: the caller is giving them up, and nothing after its last commit is committed,
        so whoever reads those partitions next reads them again."""
        try:
            while self.pending:
                consumer.poll(0.1)
        except Exception as exc:
            log.debug("waiting for a group join failed: %s", exc)
        self._since = None
