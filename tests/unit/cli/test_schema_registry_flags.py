"""``--schema-registry-config`` and the reference's variables on the engine and the gateways."""
from __future__ import annotations

import pytest

from dataflow_cli import CliError, build_parser
from dataflow_cli.engine import build_config
from dataflow_cli.gateways import _schema_registry

CONFIG = "schemaRegistry:\n  client:\n    URL: http://127.0.0.1:8081\n"


@pytest.fixture
def config_dir(tmp_path):
    (tmp_path / ".confluent-schema.yaml").write_text(CONFIG)
    return str(tmp_path)


def engine(argv, environ):
    return build_config(build_parser().parse_args(["engine", *argv]), environ)


def test_engine_is_off_by_default_and_with_the_charts_blank_variable():
    assert engine([], {}).schema_registry_config is None
    cfg = engine([], {"SELDON_KAFKA_SCHEMA_REGISTRY_CONFIG_PATH": ""})
    assert cfg.schema_registry_config is None and cfg.runtime_config().schema_registry_config is None


def test_engine_reads_the_reference_variable_and_the_flag(config_dir, tmp_path):
    cfg = engine([], {"SELDON_KAFKA_SCHEMA_REGISTRY_CONFIG_PATH": config_dir})
    assert cfg.runtime_config().schema_registry_config == config_dir
    other = tmp_path / "flag.yaml"
    other.write_text(CONFIG)
    assert engine(["--schema-registry-config", str(other)],
                  {"SELDON_KAFKA_SCHEMA_REGISTRY_CONFIG_PATH": config_dir}).schema_registry_config == str(other)


def test_engine_refuses_to_start_with_a_missing_config(tmp_path):
    with pytest.raises(CliError, match=r"\.confluent-schema\.yaml"):
        engine([], {"SELDON_KAFKA_SCHEMA_REGISTRY_CONFIG_PATH": str(tmp_path)})


@pytest.mark.parametrize("command", ["model-gateway", "pipeline-gateway"])
def test_gateways_read_schema_registry_config_path_and_the_flag(command, config_dir, tmp_path, monkeypatch):
    parse = build_parser().parse_args
    monkeypatch.delenv("SCHEMA_REGISTRY_CONFIG_PATH", raising=False)
    assert _schema_registry(parse([command])) is None
    monkeypatch.setenv("SCHEMA_REGISTRY_CONFIG_PATH", "")
    assert _schema_registry(parse([command])) is None
    monkeypatch.setenv("SCHEMA_REGISTRY_CONFIG_PATH", config_dir)
    assert _schema_registry(parse([command])) == config_dir
    other = tmp_path / "flag.yaml"
    other.write_text(CONFIG)
    assert _schema_registry(parse([command, "--schema-registry-config", str(other)])) == str(other)
    with pytest.raises(CliError, match="URL is required"):
        other.write_text("schemaRegistry: {}\n")
        _schema_registry(parse([command, "--schema-registry-config", str(other)]))
