"""``dataflow scheduler``: the minimal Seldon scheduler (Scheduler API + Chainer API for engines)."""
from __future__ import annotations

import asyncio
import signal

from dataflow.kafka import KafkaSetupError
from dataflow.seldon_env import SeldonEnvError, kubernetes_namespace, load_kafka_config
from dataflow_cli import CliError
from scheduler_min.server import SchedulerConfig, serve
from scheduler_min.store import StateError


def register(sub) -> None:
    p = sub.add_parser("scheduler", help="run the minimal scheduler (pipelines, models, dataflow engines)")
    # Second spellings are the reference scheduler's, so its manifests' args work unchanged.
    p.add_argument("--port", "--scheduler-port", dest="port", type=int, default=9004,
                   help="Scheduler gRPC port (default 9004)")
    p.add_argument("--chainer-port", "--dataflow-port", dest="chainer_port", type=int, default=9008,
                   help="Chainer gRPC port the dataflow engines subscribe to (default 9008)")
    p.add_argument("--host", default="0.0.0.0", help="interface to listen on (default 0.0.0.0)")
    p.add_argument("--state-dir", default=None,
                   help="directory for the persisted state (pipelines, models); none = memory only")
    p.add_argument("--topic-prefix", default=None,
                   help="Kafka topic prefix (default: topicPrefix of --kafka-config-path, else seldon)")
    p.add_argument("--kafka-config-path", default=None,
                   help="the reference's kafka.json; only its topicPrefix is used (the scheduler needs no Kafka)")
    p.add_argument("--namespace", default=None,
                   help="namespace part of topic names (default: the pod's service-account namespace file, "
                        "else default)")
    p.add_argument("--max-shard-count-multiplier", type=int, default=1,
                   help="engines per pipeline version (default 1)")
    p.add_argument("--default-model-endpoint", default=None,
                   help="OIP endpoint (grpc://HOST:PORT or http://HOST:PORT) for models that name none")
    p.add_argument("--retry-failed-pipelines-secs", type=float, default=60.0,
                   help="re-send failed pipeline creates/deletes this often (default 60; 0 = never)")
    p.add_argument("--max-retry-failed-pipelines", type=int, default=10,
                   help="at most this many re-sends per pipeline version (default 10)")
    p.set_defaults(handler=run)


def _topics(args) -> tuple[str, str]:
    """Topic prefix and namespace: flag > the reference's sources (kafka.json topicPrefix, the
    service-account namespace file) > seldon / default. Unlike the reference, a flag beats the file."""
    prefix = args.topic_prefix
    if prefix is None and args.kafka_config_path:
        try:
            prefix = load_kafka_config(args.kafka_config_path).topic_prefix
        except SeldonEnvError as exc:
            raise CliError(str(exc)) from exc
    return prefix or "seldon", args.namespace or kubernetes_namespace() or "default"


def run(args) -> int:
    topic_prefix, namespace = _topics(args)
    config = SchedulerConfig(port=args.port, chainer_port=args.chainer_port, host=args.host,
                             state_dir=args.state_dir, topic_prefix=topic_prefix,
                             namespace=namespace,
                             max_shard_count_multiplier=max(1, args.max_shard_count_multiplier),
                             default_model_endpoint=args.default_model_endpoint,
                             retry_failed_secs=args.retry_failed_pipelines_secs,
                             max_retry_failed=args.max_retry_failed_pipelines)

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None  # asyncio.run runs main() as a task
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)

        def ready(app) -> None:
            print(f"scheduler ready: scheduler port {app.port}, chainer port {app.chainer_port}", flush=True)

        try:
            await serve(config, ready)
        except asyncio.CancelledError:
            pass

    try:
        asyncio.run(main())
    except (OSError, KafkaSetupError, RuntimeError, StateError) as exc:
        raise CliError(f"scheduler failed: {exc}") from exc
    print("scheduler stopped", flush=True)
    return 0
