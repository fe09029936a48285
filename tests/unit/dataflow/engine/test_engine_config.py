"""EngineConfig validation, CLI option/env mapping, runtime config, health endpoints."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from dataflow.broker import free_port
from dataflow.engine.config import ConfigError, EngineConfig
from dataflow.engine.health import start_health_server
from dataflow_cli import CliError, build_parser
from dataflow_cli.engine import build_config


def test_defaults_follow_the_reference():
    cfg = EngineConfig()
    assert cfg.replica_name and cfg.scheduler == "127.0.0.1:9008" and cfg.runtime == "kafka"
    rc = cfg.runtime_config()
    assert rc.join_window_ms == 60_000 and rc.partitions == 1 and not rc.exactly_once


@pytest.mark.parametrize("kw, fragment", [
    ({"scheduler": "nohostport"}, "scheduler must be HOST:PORT"),
    ({"runtime": "spark"}, "runtime must be one of kafka, faust"),
    ({"partitions": 0}, "partitions must be >= 1"),
    ({"topic_prefix": "bad prefix!"}, "The kafka prefix bad prefix! is invalid"),
])
def test_invalid_settings_say_what_is_wrong(kw, fragment):
    with pytest.raises((ConfigError, ValueError)) as info:
        EngineConfig(**kw)
    assert fragment in str(info.value)


def test_cli_options_and_env_fallbacks(monkeypatch, tmp_path):
    conf = tmp_path / "kafka.json"
    conf.write_text(json.dumps({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}))
    monkeypatch.setenv("DATAFLOW_REPLICA_NAME", "from-env")
    monkeypatch.setenv("DATAFLOW_PARTITIONS", "3")
    args = build_parser().parse_args(["engine", "--scheduler", "sched:9008", "--kafka", "k:9092",
                                      "--kafka-config", str(conf), "--namespace", "ns", "--exactly-once"])
    cfg = build_config(args)
    assert (cfg.replica_name, cfg.partitions, cfg.scheduler, cfg.namespace) == ("from-env", 3, "sched:9008", "ns")
    assert cfg.exactly_once and cfg.kafka.bootstrap_servers == "k:9092"
    assert cfg.kafka.common()["security.protocol"] == "SASL_SSL"


def test_cli_reports_a_bad_kafka_config_file_as_a_user_error(tmp_path):
    args = build_parser().parse_args(["engine", "--kafka-config", str(tmp_path / "missing.json")])
    with pytest.raises(CliError) as info:
        build_config(args)
    assert "missing.json" in str(info.value)


def test_health_endpoints():
    port = free_port()
    ready = {"ok": False}

    async def main():
        runner = await start_health_server(port, ready=lambda: ready["ok"], started=lambda: True, host="127.0.0.1")
        try:
            async with aiohttp.ClientSession() as s:
                codes = {}
                for path in ("live", "ready", "startup"):
                    async with s.get(f"http://127.0.0.1:{port}/{path}") as r:
                        codes[path] = r.status
                ready["ok"] = True
                async with s.get(f"http://127.0.0.1:{port}/ready") as r:
                    codes["ready-after"] = r.status
                return codes
        finally:
            await runner.cleanup()

    assert asyncio.run(main()) == {"live": 200, "ready": 503, "startup": 200, "ready-after": 200}
