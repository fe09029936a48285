"""The seldon CLI's habits: ``--timeout-secs`` and its config files under ``~/.config/seldon/cli``."""
from __future__ import annotations

import argparse
import json

import pytest

from dataflow_cli import build_parser
from dataflow_cli.config import load_cli_config, resolve

BLANK = argparse.Namespace(scheduler_host=None, kafka_broker=None, namespace=None, kafka_config_path=None)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("DATAFLOW_CLI_CONFIG", "SELDON_SCHEDULE_HOST", "SELDON_KAFKA_BROKER", "SELDON_KAFKA_CONFIG_PATH",
                 "POD_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def write(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


SELDON_CFG = {"controlplane": {"schedulerHost": "seldon-sched:9004"},
              "kafka": {"bootstrap": "seldon-kafka:9092", "namespace": "seldon-ns", "topicPrefix": "sp"},
              "dataplane": {"inferHost": "seldon-mesh:80"}}


@pytest.mark.parametrize("kind", ["pipeline", "model"])
def test_status_timeout_spelled_both_ways(kind):
    p = build_parser()
    assert p.parse_args([kind, "status", "x", "-w", "Ready", "--timeout-secs", "7"]).timeout == 7
    assert p.parse_args([kind, "status", "x", "--timeout", "8"]).timeout == 8
    assert p.parse_args([kind, "status", "x", "-t", "9"]).timeout == 9
    assert p.parse_args([kind, "status", "x"]).timeout == 60


def test_inspect_timeout_spelled_both_ways():
    p = build_parser()
    assert p.parse_args(["pipeline", "inspect", "p", "--timeout-secs", "3"]).timeout_secs == 3
    assert p.parse_args(["pipeline", "inspect", "p", "--timeout", "4"]).timeout_secs == 4
    assert p.parse_args(["pipeline", "inspect", "p", "-d", "2"]).timeout_secs == 2


def test_seldon_cli_config_json_is_read_when_ours_is_absent(home):
    write(home / ".config/seldon/cli/config.json", SELDON_CFG)
    c = resolve(BLANK)
    assert (c.scheduler_host, c.kafka_broker, c.namespace, c.topic_prefix) == (
        "seldon-sched:9004", "seldon-kafka:9092", "seldon-ns", "sp")
    assert load_cli_config()["dataplane"]["inferHost"] == "seldon-mesh:80"


def test_seldon_cli_active_config_wins_over_its_default_file(home):
    write(home / ".config/seldon/cli/config.json", SELDON_CFG)
    write(home / "kind.json", {"controlplane": {"schedulerHost": "kind:9004"}})
    write(home / ".config/seldon/cli/configs.json", {"configs": {"kind": str(home / "kind.json")}, "active": "kind"})
    assert resolve(BLANK).scheduler_host == "kind:9004"
    write(home / ".config/seldon/cli/configs.json", {"configs": {"kind": str(home / "kind.json")}})
    assert resolve(BLANK).scheduler_host == "seldon-sched:9004"  # none active: the default file


def test_our_config_file_wins_and_an_explicit_path_never_falls_back(home, monkeypatch):
    write(home / ".config/seldon/cli/config.json", SELDON_CFG)
    write(home / ".config/dataflow/cli/config.json", {"controlplane": {"schedulerHost": "ours:9004"}})
    assert resolve(BLANK).scheduler_host == "ours:9004"
    monkeypatch.setenv("DATAFLOW_CLI_CONFIG", str(home / "missing.json"))
    assert resolve(BLANK).scheduler_host == "0.0.0.0:9004"


def test_no_config_anywhere_gives_the_defaults(home):
    c = resolve(BLANK)
    assert (c.scheduler_host, c.kafka_broker, c.namespace, c.topic_prefix) == (
        "0.0.0.0:9004", "0.0.0.0:9092", "default", "seldon")
