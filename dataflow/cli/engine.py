"""``dataflow engine``: run a dataflow engine replica until SIGTERM / Ctrl-C."""
from __future__ import annotations

import argparse
import os

ENV_HELP = """\
environment variables (used when the option is not given):
  DATAFLOW_SCHEDULER        --scheduler        DATAFLOW_KAFKA_BOOTSTRAP  --kafka
  DATAFLOW_KAFKA_CONFIG     --kafka-config     DATAFLOW_REPLICA_NAME     --name
  DATAFLOW_RUNTIME          --runtime          DATAFLOW_PARTITIONS       --partitions
  DATAFLOW_STATE_DIR        --state-dir        DATAFLOW_NAMESPACE        --namespace
  DATAFLOW_TOPIC_PREFIX     --topic-prefix     DATAFLOW_CONSUMER_PREFIX  --consumer-prefix
  DATAFLOW_JOIN_WINDOW_MS   --join-window-ms   DATAFLOW_HEALTH_PORT      --health-port
  DATAFLOW_EXACTLY_ONCE=1   --exactly-once

--kafka-config is a JSON object of standard librdkafka settings (security.protocol, sasl.*,
ssl.*, ...) applied to every client, so a secured cluster needs no code change.
"""


def _env(name: str, default=None):
    value = os.environ.get(name)
    return default if value in (None, "") else value


def register(sub) -> None:
    from dataflow.engine.config import DEFAULT_RUNTIME, DEFAULT_SCHEDULER, RUNTIMES

    p = sub.add_parser("engine", help="run a dataflow engine replica (pipelines from the scheduler)",
                       description="Subscribe to the scheduler's Chainer service and run the pipeline "
                                   "versions it assigns to this replica, until SIGTERM / Ctrl-C.",
                       epilog=ENV_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scheduler", default=_env("DATAFLOW_SCHEDULER", DEFAULT_SCHEDULER),
                   help=f"scheduler Chainer endpoint HOST:PORT (default {DEFAULT_SCHEDULER})")
    p.add_argument("--kafka", default=_env("DATAFLOW_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
                   help="Kafka bootstrap servers (default 127.0.0.1:9092)")
    p.add_argument("--kafka-config", default=_env("DATAFLOW_KAFKA_CONFIG"),
                   help="JSON file of extra librdkafka client settings (security, SASL, TLS)")
    p.add_argument("--name", default=_env("DATAFLOW_REPLICA_NAME"),
                   help="replica name, stable and unique per replica (default: the hostname)")
    p.add_argument("--runtime", choices=RUNTIMES, default=_env("DATAFLOW_RUNTIME", DEFAULT_RUNTIME),
                   help=f"pipeline runtime (default {DEFAULT_RUNTIME}: raw confluent-kafka loop)")
    p.add_argument("--partitions", type=int, default=int(_env("DATAFLOW_PARTITIONS", 1)),
                   help="partitions of topics the engine creates (default 1)")
    p.add_argument("--replication-factor", type=int, default=1, help="of created topics (default 1)")
    p.add_argument("--state-dir", default=_env("DATAFLOW_STATE_DIR", "/tmp/dataflow-engine/state"),
                   help="directory for pipeline state stores, one subdirectory per replica name "
                        "(default /tmp/dataflow-engine/state)")
    p.add_argument("--join-window-ms", type=int, default=int(_env("DATAFLOW_JOIN_WINDOW_MS", 60000)),
                   help="join window when a step sets none (default 60000)")
    p.add_argument("--namespace", default=_env("DATAFLOW_NAMESPACE", ""),
                   help="namespace used in consumer group ids (default none)")
    p.add_argument("--topic-prefix", default=_env("DATAFLOW_TOPIC_PREFIX", "seldon"),
                   help="topic prefix (validated; topic names come from the scheduler)")
    p.add_argument("--consumer-prefix", default=_env("DATAFLOW_CONSUMER_PREFIX", ""),
                   help="consumer group prefix (default none)")
    p.add_argument("--exactly-once", action="store_true",
                   default=_env("DATAFLOW_EXACTLY_ONCE", "0") not in ("0", "false", "False"),
                   help="transactional producer: outputs and input offsets commit atomically")
    p.add_argument("--commit-interval-ms", type=int, default=1000,
                   help="offset commit interval (default 1000)")
    p.add_argument("--health-port", type=int,
                   default=int(_env("DATAFLOW_HEALTH_PORT")) if _env("DATAFLOW_HEALTH_PORT") else None,
                   help="serve /live /ready /startup on this port (default off)")
    p.add_argument("--pipeline-factory", default=None, help=argparse.SUPPRESS)  # tests: MODULE:CALLABLE
    p.set_defaults(handler=run)


def build_config(args):
    from dataflow.cli import CliError
    from dataflow.engine.config import ConfigError, EngineConfig, default_replica_name
    from dataflow.kafka import KafkaSettings, KafkaSetupError

    try:
        kafka = KafkaSettings.from_env(bootstrap=args.kafka, config_path=args.kafka_config)
        return EngineConfig(
            replica_name=args.name or default_replica_name(), scheduler=args.scheduler, kafka=kafka,
            runtime=args.runtime, partitions=args.partitions, replication_factor=args.replication_factor,
            state_dir=args.state_dir, join_window_ms=args.join_window_ms, consumer_prefix=args.consumer_prefix,
            namespace=args.namespace, topic_prefix=args.topic_prefix, exactly_once=args.exactly_once,
            commit_interval_ms=args.commit_interval_ms, health_port=args.health_port,
            pipeline_factory=args.pipeline_factory,
        )
    except (ConfigError, KafkaSetupError) as exc:
        raise CliError(str(exc)) from exc


def run(args) -> int:
    import asyncio
    import signal

    from dataflow.cli import CliError
    from dataflow.engine import Engine

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
