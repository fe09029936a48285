"""Settings under the reference's names, so our processes drop into a Seldon Core 2 deployment.

The reference dataflow engine reads ``SELDON_``-prefixed environment variables (its property
names upper-cased, dots to underscores: ``kafka.bootstrap.servers`` ->
``SELDON_KAFKA_BOOTSTRAP_SERVERS``); the Go gateways read Kafka security from ``KAFKA_*``
variables. A Helm chart or manifest written for the reference therefore configures ours without
edits. Our own ``DATAFLOW_*`` names stay and win over the reference's: they are only ever set on
purpose for this project, while ``SELDON_*`` may be inherited from a chart written for the other
engine. Command-line flags win over both.

Everything here is pure (an ``environ`` mapping in, values out) except reading the password and
certificate files the variables point at, which is what the reference does too.

Kubernetes secrets: the reference can fetch certificates and the SASL password from a named
Kubernetes secret through the API (``SELDON_KAFKA_TLS_*_SECRET``, ``SELDON_KAFKA_SASL_SECRET``,
``KAFKA_CLIENT_*_SECRET_NAME``). We do not talk to the Kubernetes API: mount the secret as a
volume and point the path variables at the files.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PLAINTEXT, SSL, SASL_SSL = "PLAINTEXT", "SSL", "SASL_SSL"
SECURITY_PROTOCOLS = (PLAINTEXT, SSL, SASL_SSL)  # the reference supports no SASL_PLAINTEXT
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
DEFAULT_SASL_USERNAME = "seldon"


class SeldonEnvError(ValueError):
    """A reference-style setting is invalid; the message names the variable."""


def _get(environ: Mapping[str, str], name: str) -> str | None:
    """The variable's value, or None when unset or blank (charts set unused ones to ``''``)."""
    value = environ.get(name)
    return None if value is None or value.strip() == "" else value


def _int(name: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            return int(value.strip())
        except ValueError:
            raise SeldonEnvError(f"{name} must be an integer, got {value!r}") from None
    return parse


# ------------------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class EnvSetting:
    """One engine setting: our variable, the reference's, the flag they default, and the default."""

    key: str              # attribute of the parsed engine arguments
    flag: str
    ours: str | None      # DATAFLOW_* name (None: flag only)
    reference: str | None  # SELDON_* name (None: the reference has none)
    default: Any
    kind: str = "str"     # str | int | bool


ENGINE_SETTINGS: tuple[EnvSetting, ...] = (
    EnvSetting("scheduler", "--scheduler", "DATAFLOW_SCHEDULER", None, "127.0.0.1:9008"),
    EnvSetting("kafka", "--kafka", "DATAFLOW_KAFKA_BOOTSTRAP", "SELDON_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    EnvSetting("kafka_config", "--kafka-config", "DATAFLOW_KAFKA_CONFIG", None, None),
    EnvSetting("name", "--name", "DATAFLOW_REPLICA_NAME", "SELDON_DATAFLOW_REPLICA_ID", None),
    EnvSetting("runtime", "--runtime", "DATAFLOW_RUNTIME", None, "kafka"),
    EnvSetting("partitions", "--partitions", "DATAFLOW_PARTITIONS", "SELDON_KAFKA_PARTITIONS_DEFAULT", 1, "int"),
    EnvSetting("replication_factor", "--replication-factor", "DATAFLOW_REPLICATION_FACTOR",
               "SELDON_KAFKA_REPLICATION_FACTOR", 1, "int"),
    EnvSetting("state_dir", "--state-dir", "DATAFLOW_STATE_DIR", None, "/tmp/dataflow-engine/state"),
    EnvSetting("join_window_ms", "--join-window-ms", "DATAFLOW_JOIN_WINDOW_MS", "SELDON_KAFKA_JOIN_WINDOW_MILLIS",
               60000, "int"),
    EnvSetting("max_message_bytes", "--max-message-bytes", "DATAFLOW_MAX_MESSAGE_BYTES",
               "SELDON_KAFKA_MAX_MESSAGE_SIZE_BYTES", 1_000_000_000, "int"),
    EnvSetting("namespace", "--namespace", "DATAFLOW_NAMESPACE", "SELDON_POD_NAMESPACE", ""),
    EnvSetting("topic_prefix", "--topic-prefix", "DATAFLOW_TOPIC_PREFIX", None, "seldon"),
    EnvSetting("consumer_prefix", "--consumer-prefix", "DATAFLOW_CONSUMER_PREFIX", "SELDON_KAFKA_CONSUMER_PREFIX", ""),
    EnvSetting("ctlops_threads", "--ctlops-threads", "DATAFLOW_CTLOPS_THREADS", "SELDON_PIPELINE_CTLOPS_THREADS",
               8, "int"),
    EnvSetting("exactly_once", "--exactly-once", "DATAFLOW_EXACTLY_ONCE", None, False, "bool"),
    EnvSetting("health_port", "--health-port", "DATAFLOW_HEALTH_PORT", "SELDON_HEALTH_SERVER_PORT", None, "int"),
    EnvSetting("schema_registry_config", "--schema-registry-config", "DATAFLOW_SCHEMA_REGISTRY_CONFIG_PATH",
               "SELDON_KAFKA_SCHEMA_REGISTRY_CONFIG_PATH", None),
)

# The reference splits the scheduler endpoint in two; either one alone keeps the other's default.
UPSTREAM_HOST_ENV, UPSTREAM_PORT_ENV = "SELDON_UPSTREAM_HOST", "SELDON_UPSTREAM_PORT"
UPSTREAM_DEFAULT_HOST, UPSTREAM_DEFAULT_PORT = "127.0.0.1", 9008  # reference host 0.0.0.0: this host


def _convert(setting: EnvSetting, name: str, value: str) -> Any:
    if setting.kind == "int":
        return _int(name)(value)
    if setting.kind == "bool":
        return value.strip() not in ("0", "false", "False")
    return value


def engine_defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    """Each engine setting's value when its flag is not given: ours > the reference's > default."""
    out: dict[str, Any] = {}
    for s in ENGINE_SETTINGS:
        value = s.default
        for name in (s.ours, s.reference):
            raw = _get(environ, name) if name else None
            if name and raw is not None:
                value = _convert(s, name, raw)
                break
        out[s.key] = value
    if _get(environ, "DATAFLOW_SCHEDULER") is None:
        host, port = _get(environ, UPSTREAM_HOST_ENV), _get(environ, UPSTREAM_PORT_ENV)
        if host is not None or port is not None:
            port_no = _int(UPSTREAM_PORT_ENV)(port) if port is not None else UPSTREAM_DEFAULT_PORT
            out["scheduler"] = f"{host or UPSTREAM_DEFAULT_HOST}:{port_no}"
    return out


def _read_secret_file(path: str, variable: str) -> str:
    """A password file's text. One trailing newline is dropped: files written with ``echo`` end in
    one, and a password never legitimately does (the reference keeps it, and then fails to log in)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise SeldonEnvError(f"{variable}: cannot read {path}: {exc.strerror or exc}") from None
    return text[:-1] if text.endswith("\n") else text


def _endpoint_algorithm(value: str | None, unset: str) -> str:
    """librdkafka wants ``https`` or ``none``; the JVM reference treats an empty value as off."""
    if value is None:
        return unset
    value = value.strip().lower()
    return "none" if value in ("", "none") else value


def _protocol(environ: Mapping[str, str], name: str) -> str:
    protocol = (_get(environ, name) or PLAINTEXT).strip().upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise SeldonEnvError(f"{name} must be one of {', '.join(SECURITY_PROTOCOLS)}, got {protocol!r}")
    return protocol


def _mechanism(environ: Mapping[str, str], name: str) -> str:
    mechanism = (_get(environ, name) or "PLAIN").strip().upper()
    if mechanism not in SASL_MECHANISMS:
        raise SeldonEnvError(f"{name} must be one of {', '.join(SASL_MECHANISMS)}, got {mechanism!r}")
    return mechanism


def _sasl(conf: dict[str, str], mechanism: str, username: str | None, password_path: str | None,
          password_var: str) -> None:
    conf["sasl.mechanism"] = mechanism
    if mechanism == "OAUTHBEARER":
        # The reference reads client id/secret/token URL from a Kubernetes secret; give them as
        # sasl.oauthbearer.* in the --kafka-config file instead.
        conf["sasl.oauthbearer.method"] = "oidc"
        return
    conf["sasl.username"] = username or DEFAULT_SASL_USERNAME
    if password_path is None:
        raise SeldonEnvError(f"SASL mechanism {mechanism} needs a password file: set {password_var}")
    conf["sasl.password"] = _read_secret_file(password_path, password_var)


def engine_kafka_security(environ: Mapping[str, str]) -> dict[str, str]:
    """librdkafka settings from the reference engine's ``SELDON_KAFKA_SECURITY_PROTOCOL``,
    ``SELDON_KAFKA_TLS_*`` and ``SELDON_KAFKA_SASL_*``, with the reference's meaning:

    * ``SSL``: trust the broker CA (``..._TLS_BROKER_CA_PATH``); present a client certificate
      (``..._TLS_CLIENT_KEY_PATH`` / ``..._CERT_PATH``) when a client secret is named (the
      reference's rule) or both files exist (the secret already mounted there);
    * ``SASL_SSL``: broker CA as above, ``..._SASL_MECHANISM`` (default PLAIN), user
      ``..._SASL_USERNAME`` (default ``seldon``), password read from the file
      ``..._SASL_PASSWORD_PATH`` names (the reference reads that field of the secret
      ``..._SASL_SECRET``: a mounted secret is one file per field);
    * endpoint identification from ``..._TLS_ENDPOINT_IDENTIFICATION_ALGORITHM``, empty = none.
    """
    protocol = _protocol(environ, "SELDON_KAFKA_SECURITY_PROTOCOL")
    if protocol == PLAINTEXT:
        return {}
    conf = {"security.protocol": protocol}
    broker_ca = _get(environ, "SELDON_KAFKA_TLS_BROKER_CA_PATH")
    if broker_ca:
        conf["ssl.ca.location"] = broker_ca
    conf["ssl.endpoint.identification.algorithm"] = _endpoint_algorithm(
        _get(environ, "SELDON_KAFKA_TLS_ENDPOINT_IDENTIFICATION_ALGORITHM"), "none")
    if protocol == SSL:
        key = _get(environ, "SELDON_KAFKA_TLS_CLIENT_KEY_PATH")
        cert = _get(environ, "SELDON_KAFKA_TLS_CLIENT_CERT_PATH")
        named = _get(environ, "SELDON_KAFKA_TLS_CLIENT_SECRET") is not None
        if key and cert and (named or (os.path.exists(key) and os.path.exists(cert))):
            conf["ssl.key.location"] = key
            conf["ssl.certificate.location"] = cert
        return conf
    password_path = _get(environ, "SELDON_KAFKA_SASL_PASSWORD_PATH")
    _sasl(conf, _mechanism(environ, "SELDON_KAFKA_SASL_MECHANISM"), _get(environ, "SELDON_KAFKA_SASL_USERNAME"),
          password_path, "SELDON_KAFKA_SASL_PASSWORD_PATH")
    return conf


# ----------------------------------------------------------------------------------- gateways


def gateway_kafka_security(environ: Mapping[str, str]) -> dict[str, str]:
    """librdkafka settings from the Go gateways' ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_MECHANISM``,
    ``KAFKA_CLIENT_TLS_{KEY,CRT,CA}_LOCATION``, ``KAFKA_BROKER_TLS_CA_LOCATION``,
    ``KAFKA_CLIENT_SASL_USERNAME`` / ``KAFKA_CLIENT_SASL_PASSWORD_LOCATION`` and
    ``KAFKA_CLIENT_TLS_ENDPOINT_IDENTIFICATION_ALGORITHM`` (unset = https, empty = none), as those
    gateways build them: mTLS when the client files are given, else one-sided TLS trusting the
    broker CA (or, without one, the client CA)."""
    protocol = _protocol(environ, "KAFKA_SECURITY_PROTOCOL")
    if protocol == PLAINTEXT:
        return {}
    conf = {"security.protocol": protocol}
    broker_ca = _get(environ, "KAFKA_BROKER_TLS_CA_LOCATION")
    conf["ssl.endpoint.identification.algorithm"] = _endpoint_algorithm(
        environ.get("KAFKA_CLIENT_TLS_ENDPOINT_IDENTIFICATION_ALGORITHM"), "https")
    if protocol == SSL:
        key, cert = _get(environ, "KAFKA_CLIENT_TLS_KEY_LOCATION"), _get(environ, "KAFKA_CLIENT_TLS_CRT_LOCATION")
        client_ca = _get(environ, "KAFKA_CLIENT_TLS_CA_LOCATION")
        ca = broker_ca or client_ca
        if ca:
            conf["ssl.ca.location"] = ca
        if key and cert:
            conf["ssl.key.location"] = key
            conf["ssl.certificate.location"] = cert
        return conf
    if broker_ca:
        conf["ssl.ca.location"] = broker_ca
    _sasl(conf, _mechanism(environ, "KAFKA_SASL_MECHANISM"), _get(environ, "KAFKA_CLIENT_SASL_USERNAME"),
          _get(environ, "KAFKA_CLIENT_SASL_PASSWORD_LOCATION"), "KAFKA_CLIENT_SASL_PASSWORD_LOCATION")
    return conf


KUBERNETES_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def kubernetes_namespace(path: str | None = None) -> str | None:
    """The pod's namespace from its service-account mount, as the Go gateways read it; None off-cluster."""
    try:
        with open(path or KUBERNETES_NAMESPACE_FILE) as f:
            return f.read().strip() or None
    except OSError:
        return None


# ------------------------------------------------------------------------- kafka.json (Go side)

REFERENCE_CONFIG_SECTIONS = ("consumer", "producer", "streams", "topics")


@dataclass(frozen=True)
class KafkaConfigFile:
    """What a Kafka JSON config file gives: ``extra`` librdkafka settings for every client, and
    from the reference's layout also the bootstrap servers and the two prefixes."""

    extra: dict[str, str]
    bootstrap: str | None = None
    topic_prefix: str | None = None
    consumer_group_prefix: str | None = None


def parse_kafka_config(data: Any, path: str = "<kafka config>") -> KafkaConfigFile:
    """Our flat file (librdkafka keys at the top level) or the reference's ``kafka.json``
    (``bootstrap.servers``, ``consumer``/``producer``/``streams``/``topics`` maps, ``topicPrefix``,
    ``consumerGroupIdPrefix``), told apart by the section maps.

    From the reference's layout only the settings ``consumer`` and ``producer`` share (same key,
    same value) apply to every client: those are the connection and security settings, while
    one-sided tuning (offset reset, linger) would fight this project's latency defaults."""
    if not isinstance(data, dict):
        raise SeldonEnvError(f"Kafka config {path} must hold a JSON object")
    if not any(isinstance(data.get(k), dict) for k in REFERENCE_CONFIG_SECTIONS):
        return KafkaConfigFile(extra={str(k): str(v) for k, v in data.items()})
    consumer: dict[Any, Any] = data["consumer"] if isinstance(data.get("consumer"), dict) else {}
    producer: dict[Any, Any] = data["producer"] if isinstance(data.get("producer"), dict) else {}
    shared = {str(k): str(v) for k, v in consumer.items()
              if k in producer and str(producer[k]) == str(v) and k != "bootstrap.servers"}
    return KafkaConfigFile(extra=shared, bootstrap=str(data.get("bootstrap.servers") or "") or None,
                           topic_prefix=str(data.get("topicPrefix") or "") or None,
                           consumer_group_prefix=str(data.get("consumerGroupIdPrefix") or "") or None)


def load_kafka_config(path: str) -> KafkaConfigFile:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise SeldonEnvError(f"cannot read Kafka config {path}: {exc}") from exc
    return parse_kafka_config(data, path)
