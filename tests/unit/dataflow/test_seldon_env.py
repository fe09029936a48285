"""Reference-style settings (``SELDON_*`` for the engine, ``KAFKA_*`` for the gateways) mapped to
ours and to librdkafka keys; precedence flag > DATAFLOW_* > SELDON_* > default."""
from __future__ import annotations

import json

import pytest

from dataflow.engine.config import EngineConfig
from dataflow.kafka import KafkaSettings
from dataflow.seldon_env import (
    ENGINE_SETTINGS,
    SeldonEnvError,
    engine_defaults,
    engine_kafka_security,
    gateway_kafka_security,
    kubernetes_namespace,
    parse_kafka_config,
)
from dataflow_cli import CliError, build_parser
from dataflow_cli.engine import build_config


def engine(argv: list[str], environ: dict[str, str]) -> EngineConfig:
    return build_config(build_parser().parse_args(["engine", *argv]), environ)


def test_defaults_without_any_variable_match_the_engine_config():
    d, cfg = engine_defaults({}), EngineConfig()
    assert d["scheduler"] == cfg.scheduler and d["kafka"] == cfg.kafka.bootstrap_servers
    assert (d["partitions"], d["replication_factor"], d["join_window_ms"], d["max_message_bytes"]) == (
        cfg.partitions, cfg.replication_factor, cfg.join_window_ms, cfg.max_message_bytes)
    assert (d["namespace"], d["consumer_prefix"], d["ctlops_threads"], d["health_port"], d["runtime"]) == (
        cfg.namespace, cfg.consumer_prefix, cfg.ctlops_parallelism, cfg.health_port, cfg.runtime)


def test_reference_names_alone_configure_the_engine():
    cfg = engine([], {
        "SELDON_UPSTREAM_HOST": "seldon-scheduler", "SELDON_UPSTREAM_PORT": "9008",
        "SELDON_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "SELDON_POD_NAMESPACE": "prod",
        "SELDON_KAFKA_CONSUMER_PREFIX": "acme", "SELDON_DATAFLOW_REPLICA_ID": "df-0",
        "SELDON_KAFKA_PARTITIONS_DEFAULT": "4", "SELDON_KAFKA_REPLICATION_FACTOR": "3",
        "SELDON_KAFKA_JOIN_WINDOW_MILLIS": "5000", "SELDON_KAFKA_MAX_MESSAGE_SIZE_BYTES": "2000",
        "SELDON_PIPELINE_CTLOPS_THREADS": "2", "SELDON_HEALTH_SERVER_PORT": "8000",
    })
    assert (cfg.scheduler, cfg.kafka.bootstrap_servers, cfg.namespace, cfg.consumer_prefix, cfg.replica_name) == (
        "seldon-scheduler:9008", "kafka:9092", "prod", "acme", "df-0")
    assert (cfg.partitions, cfg.replication_factor, cfg.join_window_ms, cfg.max_message_bytes) == (4, 3, 5000, 2000)
    assert (cfg.ctlops_parallelism, cfg.health_port) == (2, 8000)
    rc = cfg.runtime_config()
    assert (rc.namespace, rc.consumer_prefix, rc.replica_id) == ("prod", "acme", "df-0")


def test_upstream_host_or_port_alone_keeps_the_other_default():
    assert engine_defaults({"SELDON_UPSTREAM_HOST": "sched"})["scheduler"] == "sched:9008"
    assert engine_defaults({"SELDON_UPSTREAM_PORT": "9100"})["scheduler"] == "127.0.0.1:9100"


@pytest.mark.parametrize("setting", [s for s in ENGINE_SETTINGS if s.ours and s.reference], ids=lambda s: s.key)
def test_ours_beat_the_reference_and_the_flag_beats_both(setting):
    value = {"int": ("7", "9", "11"), "str": ("ours", "theirs", "flag")}[setting.kind]
    environ = {setting.ours: value[0], setting.reference: value[1]}
    conv = int if setting.kind == "int" else str
    assert engine_defaults(environ)[setting.key] == conv(value[0])
    assert engine_defaults({setting.reference: value[1]})[setting.key] == conv(value[1])
    args = build_parser().parse_args(["engine", setting.flag, value[2]])
    from dataflow_cli.engine import resolve_settings
    assert resolve_settings(args, environ)[setting.key] == conv(value[2])


def test_our_scheduler_variable_beats_upstream_host_and_port():
    environ = {"DATAFLOW_SCHEDULER": "a:1", "SELDON_UPSTREAM_HOST": "b", "SELDON_UPSTREAM_PORT": "2"}
    assert engine_defaults(environ)["scheduler"] == "a:1"
    assert engine([], environ).scheduler == "a:1"
    assert engine(["--scheduler", "c:3"], environ).scheduler == "c:3"


def test_blank_reference_values_count_as_unset():
    """Charts set unused variables to ''; that must not blank out a default."""
    d = engine_defaults({"SELDON_KAFKA_BOOTSTRAP_SERVERS": "", "SELDON_DATAFLOW_REPLICA_ID": " "})
    assert d["kafka"] == "127.0.0.1:9092" and d["name"] is None


def test_a_malformed_number_is_a_cli_error_naming_the_variable():
    with pytest.raises(CliError, match="SELDON_KAFKA_PARTITIONS_DEFAULT"):
        engine([], {"SELDON_KAFKA_PARTITIONS_DEFAULT": "four"})
    with pytest.raises(CliError, match="SELDON_UPSTREAM_PORT"):
        engine([], {"SELDON_UPSTREAM_PORT": "x"})


# ---------------------------------------------------------------------------- engine security


def test_plaintext_adds_nothing_even_with_the_charts_sasl_and_tls_values():
    assert engine_kafka_security({"SELDON_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                                  "SELDON_KAFKA_SASL_PASSWORD_PATH": "password",
                                  "SELDON_KAFKA_TLS_CLIENT_KEY_PATH": "/tmp/certs/kafka/client/tls.key"}) == {}


def test_sasl_ssl_reads_the_password_file_and_trusts_the_broker_ca(tmp_path):
    pw = tmp_path / "password"
    pw.write_text("s3cret\n")
    conf = engine_kafka_security({
        "SELDON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SELDON_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SELDON_KAFKA_SASL_USERNAME": "alice", "SELDON_KAFKA_SASL_PASSWORD_PATH": str(pw),
        "SELDON_KAFKA_TLS_BROKER_CA_PATH": "/certs/broker/ca.crt",
        "SELDON_KAFKA_TLS_ENDPOINT_IDENTIFICATION_ALGORITHM": "",
    })
    assert conf == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "alice",
                    "sasl.password": "s3cret", "ssl.ca.location": "/certs/broker/ca.crt",
                    "ssl.endpoint.identification.algorithm": "none"}


def test_sasl_defaults_user_seldon_and_mechanism_plain(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("x")
    conf = engine_kafka_security({"SELDON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                                  "SELDON_KAFKA_SASL_PASSWORD_PATH": str(pw)})
    assert (conf["sasl.mechanism"], conf["sasl.username"], conf["sasl.password"]) == ("PLAIN", "seldon", "x")


def test_sasl_password_file_missing_names_the_variable(tmp_path):
    with pytest.raises(SeldonEnvError, match="SELDON_KAFKA_SASL_PASSWORD_PATH"):
        engine_kafka_security({"SELDON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                               "SELDON_KAFKA_SASL_PASSWORD_PATH": str(tmp_path / "nope")})


def test_ssl_presents_client_certificates_when_a_client_secret_is_named_or_the_files_exist(tmp_path):
    base = {"SELDON_KAFKA_SECURITY_PROTOCOL": "SSL", "SELDON_KAFKA_TLS_BROKER_CA_PATH": "/b/ca.crt",
            "SELDON_KAFKA_TLS_CLIENT_KEY_PATH": str(tmp_path / "tls.key"),
            "SELDON_KAFKA_TLS_CLIENT_CERT_PATH": str(tmp_path / "tls.crt"),
            "SELDON_KAFKA_TLS_ENDPOINT_IDENTIFICATION_ALGORITHM": "HTTPS"}
    one_sided = engine_kafka_security(base)
    assert one_sided == {"security.protocol": "SSL", "ssl.ca.location": "/b/ca.crt",
                         "ssl.endpoint.identification.algorithm": "https"}
    named = engine_kafka_security({**base, "SELDON_KAFKA_TLS_CLIENT_SECRET": "client-tls"})
    assert named["ssl.key.location"].endswith("tls.key") and named["ssl.certificate.location"].endswith("tls.crt")
    (tmp_path / "tls.key").write_text("k")
    (tmp_path / "tls.crt").write_text("c")
    assert "ssl.key.location" in engine_kafka_security(base)


def test_unsupported_protocol_or_mechanism_is_an_error():
    with pytest.raises(SeldonEnvError, match="SELDON_KAFKA_SECURITY_PROTOCOL"):
        engine_kafka_security({"SELDON_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})
    with pytest.raises(SeldonEnvError, match="SELDON_KAFKA_SASL_MECHANISM"):
        engine_kafka_security({"SELDON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SELDON_KAFKA_SASL_MECHANISM": "GSSAPI"})


def test_oauthbearer_sets_the_mechanism_and_leaves_credentials_to_the_config_file():
    conf = engine_kafka_security({"SELDON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                                  "SELDON_KAFKA_SASL_MECHANISM": "OAUTHBEARER"})
    assert conf["sasl.mechanism"] == "OAUTHBEARER" and conf["sasl.oauthbearer.method"] == "oidc"
    assert "sasl.password" not in conf


def test_our_kafka_config_file_wins_over_reference_security(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("from-file")
    conf = tmp_path / "kafka.json"
    conf.write_text(json.dumps({"sasl.username": "bob"}))
    cfg = engine(["--kafka-config", str(conf)], {"SELDON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                                                 "SELDON_KAFKA_SASL_PASSWORD_PATH": str(pw)})
    common = cfg.kafka.common()
    assert (common["security.protocol"], common["sasl.username"], common["sasl.password"]) == (
        "SASL_SSL", "bob", "from-file")


# -------------------------------------------------------------------------- gateways (Go names)


def test_gateway_sasl_from_the_go_variables(tmp_path):
    pw = tmp_path / "password"
    pw.write_text("pw")
    conf = gateway_kafka_security({
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "KAFKA_CLIENT_SASL_USERNAME": "", "KAFKA_CLIENT_SASL_PASSWORD_LOCATION": str(pw),
        "KAFKA_BROKER_TLS_CA_LOCATION": "/b/ca.crt",
    })
    assert conf == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "seldon",
                    "sasl.password": "pw", "ssl.ca.location": "/b/ca.crt",
                    "ssl.endpoint.identification.algorithm": "https"}


def test_gateway_tls_mutual_when_client_files_given_else_one_sided():
    base = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_CLIENT_TLS_CA_LOCATION": "/c/ca.crt",
            "KAFKA_CLIENT_TLS_ENDPOINT_IDENTIFICATION_ALGORITHM": ""}
    assert gateway_kafka_security(base) == {"security.protocol": "SSL", "ssl.ca.location": "/c/ca.crt",
                                            "ssl.endpoint.identification.algorithm": "none"}
    mutual = gateway_kafka_security({**base, "KAFKA_BROKER_TLS_CA_LOCATION": "/b/ca.crt",
                                     "KAFKA_CLIENT_TLS_KEY_LOCATION": "/c/tls.key",
                                     "KAFKA_CLIENT_TLS_CRT_LOCATION": "/c/tls.crt"})
    assert (mutual["ssl.ca.location"], mutual["ssl.key.location"], mutual["ssl.certificate.location"]) == (
        "/b/ca.crt", "/c/tls.key", "/c/tls.crt")
    assert gateway_kafka_security({}) == {}


def test_reference_kafka_json_layout_gives_bootstrap_prefixes_and_shared_settings():
    cfg = parse_kafka_config({
        "bootstrap.servers": "kafka:9092", "topicPrefix": "acme", "consumerGroupIdPrefix": "grp",
        "consumer": {"session.timeout.ms": 6000, "auto.offset.reset": "earliest", "security.protocol": "SSL"},
        "producer": {"linger.ms": 0, "security.protocol": "SSL"}, "streams": {}, "topics": {"retention.ms": 1},
    })
    assert (cfg.bootstrap, cfg.topic_prefix, cfg.consumer_group_prefix) == ("kafka:9092", "acme", "grp")
    assert cfg.extra == {"security.protocol": "SSL"}


def test_flat_kafka_config_is_unchanged():
    cfg = parse_kafka_config({"security.protocol": "SSL", "bootstrap.servers": "x:1"})
    assert cfg.extra == {"security.protocol": "SSL", "bootstrap.servers": "x:1"} and cfg.bootstrap is None


def test_kafka_settings_take_bootstrap_from_a_reference_kafka_json(tmp_path, monkeypatch):
    monkeypatch.delenv("DATAFLOW_KAFKA_BOOTSTRAP", raising=False)
    path = tmp_path / "kafka.json"
    path.write_text(json.dumps({"bootstrap.servers": "kafka:9092", "consumer": {}, "producer": {}}))
    assert KafkaSettings.from_env(config_path=str(path)).bootstrap_servers == "kafka:9092"
    assert KafkaSettings.from_env(bootstrap="flag:1", config_path=str(path)).bootstrap_servers == "flag:1"


def test_kubernetes_namespace_file(tmp_path):
    f = tmp_path / "namespace"
    f.write_text("seldon-mesh")
    assert kubernetes_namespace(str(f)) == "seldon-mesh"
    assert kubernetes_namespace(str(tmp_path / "absent")) is None


# ------------------------------------------------------------------------------ gateway CLI


@pytest.fixture
def clean_gateway_env(monkeypatch):
    for name in ("POD_NAMESPACE", "SELDON_KAFKA_TOPIC_PREFIX", "KAFKA_CONSUMER_GROUP_ID_PREFIX", "SELDON_SCHEDULE_HOST",
                 "DATAFLOW_KAFKA_BOOTSTRAP", "DATAFLOW_KAFKA_CONFIG", "KAFKA_SECURITY_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("dataflow.seldon_env.KUBERNETES_NAMESPACE_FILE", "/nonexistent/namespace")
    return monkeypatch


def gateway_args(*argv: str):
    return build_parser().parse_args(["pipeline-gateway", *argv])


def test_gateway_accepts_the_reference_flags_and_kafka_json(clean_gateway_env, tmp_path):
    from dataflow_cli.gateways import _scheduler, _settings

    kjson = tmp_path / "kafka.json"
    kjson.write_text(json.dumps({"bootstrap.servers": "kafka:9092", "topicPrefix": "acme",
                                 "consumerGroupIdPrefix": "grp", "consumer": {"security.protocol": "SSL"},
                                 "producer": {"security.protocol": "SSL"}}))
    args = gateway_args("--scheduler-host", "seldon-scheduler", "--kafka-config-path", str(kjson))
    settings, namer = _settings(args)
    assert _scheduler(args) == "seldon-scheduler:9004"
    assert settings.bootstrap_servers == "kafka:9092" and settings.common()["security.protocol"] == "SSL"
    assert (namer.prefix, namer.namespace, args.consumer_group_prefix) == ("acme", "default", "grp")


def test_gateway_flags_and_our_variables_win(clean_gateway_env, tmp_path):
    from dataflow_cli.gateways import _scheduler, _settings

    kjson = tmp_path / "kafka.json"
    kjson.write_text(json.dumps({"bootstrap.servers": "kafka:9092", "topicPrefix": "acme", "consumer": {}}))
    clean_gateway_env.setenv("POD_NAMESPACE", "envns")
    clean_gateway_env.setenv("SELDON_KAFKA_TOPIC_PREFIX", "envprefix")
    clean_gateway_env.setenv("SELDON_SCHEDULE_HOST", "env-sched:1")
    args = gateway_args("--kafka-config", str(kjson), "--kafka", "k:1", "--consumer-group-prefix", "flag")
    settings, namer = _settings(args)
    assert (settings.bootstrap_servers, namer.prefix, namer.namespace, args.consumer_group_prefix) == (
        "k:1", "envprefix", "envns", "flag")
    assert _scheduler(args) == "env-sched:1"
    args = gateway_args("--scheduler", "a:1", "--scheduler-host", "b", "--namespace", "ns")
    assert _scheduler(args) == "a:1" and _settings(args)[1].namespace == "ns"


def test_gateway_namespace_from_the_service_account_file(clean_gateway_env, tmp_path):
    from dataflow_cli.gateways import _settings

    f = tmp_path / "namespace"
    f.write_text("seldon-mesh\n")
    clean_gateway_env.setattr("dataflow.seldon_env.KUBERNETES_NAMESPACE_FILE", str(f))
    assert _settings(gateway_args())[1].namespace == "seldon-mesh"


def test_gateway_security_from_go_variables(clean_gateway_env, tmp_path):
    from dataflow_cli.gateways import _settings

    pw = tmp_path / "password"
    pw.write_text("pw")
    clean_gateway_env.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    clean_gateway_env.setenv("KAFKA_CLIENT_SASL_PASSWORD_LOCATION", str(pw))
    common = _settings(gateway_args())[0].common()
    assert (common["security.protocol"], common["sasl.username"], common["sasl.password"]) == (
        "SASL_SSL", "seldon", "pw")


def test_scheduler_takes_the_reference_flags(clean_gateway_env, tmp_path):
    from dataflow_cli.scheduler import _topics

    kjson = tmp_path / "kafka.json"
    kjson.write_text(json.dumps({"topicPrefix": "acme", "consumer": {}}))
    args = build_parser().parse_args(["scheduler", "--scheduler-port", "9100", "--dataflow-port", "9108",
                                      "--kafka-config-path", str(kjson)])
    assert (args.port, args.chainer_port, _topics(args)) == (9100, 9108, ("acme", "default"))
    args = build_parser().parse_args(["scheduler", "--topic-prefix", "ours", "--namespace", "ns",
                                      "--kafka-config-path", str(kjson)])
    assert _topics(args) == ("ours", "ns")
    assert _topics(build_parser().parse_args(["scheduler"])) == ("seldon", "default")
