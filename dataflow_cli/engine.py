"""``dataflow engine``: run a dataflow engine replica until SIGTERM / Ctrl-C."""
from __future__ import annotations

import argparse
import asyncio
import os
import signal

from dataflow.engine import Engine
from dataflow.engine.config import (
    DEFAULT_RUNTIME,
    DEFAULT_SCHEDULER,
    RUNTIMES,
    ConfigError,
    EngineConfig,
    default_replica_name,
)
from dataflow.kafka import KafkaSettings, KafkaSetupError
from dataflow.schema_registry import SchemaRegistryConfigError, load_config
from dataflow.seldon_env import (
    ENGINE_SETTINGS,
    UPSTREAM_HOST_ENV,
    UPSTREAM_PORT_ENV,
    SeldonEnvError,
    engine_defaults,
    engine_kafka_security,
)
from dataflow_cli import CliError


def _env_help() -> str:
    shown = [(s.flag, s.ours, s.reference) for s in ENGINE_SETTINGS if s.ours]
    a, b = max(len(flag) for flag, _, _ in shown), max(len(ours) for _, ours, _ in shown)
    rows = [f"  {flag:<{a}} {ours:<{b}} {reference or '-'}" for flag, ours, reference in shown]
    return "\n".join([
        "environment variables (used when the option is not given; ours win over the reference's):",
        f"  {'option':<{a}} {'ours':<{b}} reference (Seldon Core 2 engine)",
        *rows,
        f"  {'':<{a}} {'':<{b}} --scheduler also from {UPSTREAM_HOST_ENV} + {UPSTREAM_PORT_ENV}",
        "",
        "Kafka security comes from SELDON_KAFKA_SECURITY_PROTOCOL, SELDON_KAFKA_TLS_* and SELDON_KAFKA_SASL_*",
        "as for the reference engine, and from --kafka-config: a JSON object of standard librdkafka",
        "settings (security.protocol, sasl.*, ssl.*, ...) applied to every client, which wins.",
        "See docs/configuration.md.",
    ])


def register(sub) -> None:
    p = sub.add_parser("engine", help="run a dataflow engine replica (pipelines from the scheduler)",
                       description="Subscribe to the scheduler's Chainer service and run the pipeline "
                                   "versions it assigns to this replica, until SIGTERM / Ctrl-C.",
                       epilog=_env_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    # Defaults are None here and resolved in build_config, so a malformed variable is a one-line
    # error of this command rather than a crash of every command at parser construction.
    p.add_argument("--scheduler", help=f"scheduler Chainer endpoint HOST:PORT (default {DEFAULT_SCHEDULER})")
    p.add_argument("--kafka", help="Kafka bootstrap servers (default 127.0.0.1:9092)")
    p.add_argument("--kafka-config", help="JSON file of extra librdkafka client settings (security, SASL, TLS)")
    p.add_argument("--name", help="replica name, stable and unique per replica (default: the hostname)")
    p.add_argument("--runtime", choices=RUNTIMES,
                   help=f"pipeline runtime (default {DEFAULT_RUNTIME}: raw confluent-kafka loop)")
    p.add_argument("--partitions", type=int, help="partitions of topics the engine creates (default 1)")
    p.add_argument("--replication-factor", type=int, help="of created topics (default 1)")
    p.add_argument("--state-dir", help="directory for pipeline state stores, one subdirectory per replica name "
                                       "(default /tmp/dataflow-engine/state)")
    p.add_argument("--join-window-ms", type=int, help="join window when a step sets none (default 60000)")
    p.add_argument("--max-message-bytes", type=int,
                   help="max.message.bytes of created topics and client size limits (default 1000000000)")
    p.add_argument("--namespace", help="namespace used in consumer group ids (default none)")
    p.add_argument("--topic-prefix", help="topic prefix (validated; topic names come from the scheduler)")
    p.add_argument("--consumer-prefix", help="consumer group prefix (default none)")
    p.add_argument("--ctlops-threads", type=int, help="pipeline creates/deletes run in parallel (default 8)")
    p.add_argument("--exactly-once", action="store_true", default=None,
                   help="transactional producer: outputs and input offsets commit atomically")
    p.add_argument("--commit-interval-ms", type=int, default=1000,
                   help="offset commit interval (default 1000)")
    p.add_argument("--health-port", type=int,
                   help="serve /live /ready /startup and Prometheus /metrics on this port (default off)")
    p.add_argument("--schema-registry-config", metavar="PATH",
                   help="Confluent Schema Registry config: a directory holding .confluent-schema.yaml (as the "
                        "reference mounts it) or the file; values written to *.inputs / *.outputs topics get "
                        "the registry's wire framing (default off)")
    p.add_argument("--pipeline-factory", default=None, help=argparse.SUPPRESS)  # tests: MODULE:CALLABLE
    p.set_defaults(handler=run)


def resolve_settings(args, environ=None) -> dict:
    """Every engine setting: the flag if given, else ``DATAFLOW_*``, else ``SELDON_*``, else default."""
    values = engine_defaults(os.environ if environ is None else environ)
    for key in values:
        given = getattr(args, key, None)
        if given is not None:
            values[key] = given
    return values


def build_config(args, environ=None):
    environ = os.environ if environ is None else environ
    try:
        v = resolve_settings(args, environ)
        kafka = KafkaSettings.from_env(bootstrap=v["kafka"], config_path=v["kafka_config"],
                                       security=engine_kafka_security(environ))
        if v["schema_registry_config"]:  # fail at start, as the reference does, not in every pipeline
            load_config(v["schema_registry_config"])
        return EngineConfig(
            replica_name=v["name"] or default_replica_name(), scheduler=v["scheduler"], kafka=kafka,
            runtime=v["runtime"], partitions=v["partitions"], replication_factor=v["replication_factor"],
            state_dir=v["state_dir"], join_window_ms=v["join_window_ms"], consumer_prefix=v["consumer_prefix"],
            namespace=v["namespace"], topic_prefix=v["topic_prefix"], exactly_once=v["exactly_once"],
            commit_interval_ms=args.commit_interval_ms, max_message_bytes=v["max_message_bytes"],
            ctlops_parallelism=v["ctlops_threads"], health_port=v["health_port"],
            pipeline_factory=args.pipeline_factory, schema_registry_config=v["schema_registry_config"],
        )
    except (ConfigError, KafkaSetupError, SeldonEnvError, SchemaRegistryConfigError) as exc:
        raise CliError(str(exc)) from exc


def run(args) -> int:
    config = build_config(args)
    try:
        engine = Engine(config)
    except ImportError as exc:
        raise CliError(f"runtime {config.runtime!r} is not available: {exc}") from exc
    except (AttributeError, ValueError) as exc:
        raise CliError(f"invalid pipeline factory: {exc}") from exc

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, engine.request_stop)
        print(f"dataflow engine {config.replica_name}: scheduler {config.scheduler}, kafka "
              f"{config.kafka.bootstrap_servers}, runtime {config.runtime}", flush=True)
        await engine.run()

    asyncio.run(main())
    return 0
