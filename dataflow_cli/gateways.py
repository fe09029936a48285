"""``dataflow model-gateway`` and ``dataflow pipeline-gateway``: run the data-plane gateways.

Both run in the foreground until Ctrl-C / SIGTERM. Environment variables of the reference
gateways are honoured as defaults (``KAFKA_DEFAULT_NUM_PARTITIONS``, ``MODELGATEWAY_NUM_WORKERS``,
``MODELGATEWAY_WORKER_TIMEOUT_MS``, Kafka security from ``KAFKA_SECURITY_PROTOCOL``,
``KAFKA_SASL_MECHANISM``, ``KAFKA_CLIENT_*``, ``KAFKA_BROKER_*``...), and so are the reference's
flags that carry meaning here (``--scheduler-host``/``--scheduler-plaintxt-port``,
``--kafka-config-path`` with its ``kafka.json`` layout); our own flags and variables win.
"""
from __future__ import annotations

import asyncio
import os
import signal

from dataflow.kafka import CONFIG_ENV, KafkaSettings, KafkaSetupError, TopicNamer
from dataflow.schema_registry import GATEWAY_ENV, SchemaRegistryConfigError, load_config
from dataflow.seldon_env import (
    KafkaConfigFile,
    SeldonEnvError,
    gateway_kafka_security,
    kubernetes_namespace,
    load_kafka_config,
)
from dataflow_cli import CliError


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


REFERENCE_SCHEDULER_PORT = 9004  # the Go gateways' --scheduler-plaintxt-port default


def _kafka_flags(p) -> None:
    p.add_argument("--scheduler", default=None, metavar="HOST:PORT",
                   help="scheduler gRPC address to follow (env SELDON_SCHEDULE_HOST)")
    p.add_argument("--scheduler-host", default=None,
                   help="the reference's spelling: scheduler host, with --scheduler-plaintxt-port")
    p.add_argument("--scheduler-plaintxt-port", type=int, default=None,
                   help=f"scheduler port with --scheduler-host (default {REFERENCE_SCHEDULER_PORT})")
    p.add_argument("--kafka", default=None, metavar="BOOTSTRAP",
                   help="Kafka bootstrap servers (env DATAFLOW_KAFKA_BOOTSTRAP)")
    p.add_argument("--kafka-config", "--kafka-config-path", dest="kafka_config", default=None,
                   help="JSON file: librdkafka settings, or the reference's kafka.json (bootstrap.servers, "
                        "consumer/producer, topicPrefix, consumerGroupIdPrefix) (env DATAFLOW_KAFKA_CONFIG)")
    p.add_argument("--namespace", default=None,
                   help="namespace part of topic names (env POD_NAMESPACE, then the pod's service-account "
                        "namespace file; default: default)")
    p.add_argument("--topic-prefix", default=None,
                   help="topic prefix (env SELDON_KAFKA_TOPIC_PREFIX, then kafka.json topicPrefix; default: seldon)")
    p.add_argument("--consumer-group-prefix", default=None,
                   help="prefix of consumer group ids (env KAFKA_CONSUMER_GROUP_ID_PREFIX, then kafka.json "
                        "consumerGroupIdPrefix; default none)")
    p.add_argument("--schema-registry-config", default=None, metavar="PATH",
                   help="Confluent Schema Registry config: a directory holding .confluent-schema.yaml or the file; "
                        "values written to *.inputs / *.outputs topics get the registry's wire framing "
                        "(env SCHEMA_REGISTRY_CONFIG_PATH; default off)")


def _scheduler(args) -> str | None:
    """``--scheduler`` > the reference's ``--scheduler-host``[:``--scheduler-plaintxt-port``] > env."""
    if args.scheduler:
        return args.scheduler
    if args.scheduler_host:
        return f"{args.scheduler_host}:{args.scheduler_plaintxt_port or REFERENCE_SCHEDULER_PORT}"
    return os.environ.get("SELDON_SCHEDULE_HOST") or None


def register(sub) -> None:
    m = sub.add_parser("model-gateway", help="consume model input topics, call OIP servers, produce outputs")
    _kafka_flags(m)
    m.add_argument("--model", action="append", default=[], metavar="NAME=ENDPOINT",
                   help="serve NAME at ENDPOINT (grpc://host:port or http://host:port) without a scheduler; repeatable")
    m.add_argument("--default-endpoint", default=os.environ.get("MODELGATEWAY_DEFAULT_ENDPOINT"),
                   help="OIP endpoint for scheduler models whose definition names none")
    m.add_argument("--partitions", type=int, default=_env_int("KAFKA_DEFAULT_NUM_PARTITIONS", 1),
                   help="partitions of created model topics (env KAFKA_DEFAULT_NUM_PARTITIONS, default 1)")
    m.add_argument("--replication", type=int, default=_env_int("KAFKA_DEFAULT_REPLICATION_FACTOR", 1),
                   help="replication factor of created topics (default 1)")
    m.add_argument("--workers", type=int, default=_env_int("MODELGATEWAY_NUM_WORKERS", 8),
                   help="concurrent calls per model (env MODELGATEWAY_NUM_WORKERS, default 8)")
    m.add_argument("--max-batch", type=int, default=_env_int("MODELGATEWAY_MAX_BATCH", 32),
                   help="records of a batched model waiting together are sent as one call of up to this "
                        "many, stacked on the first dimension (env MODELGATEWAY_MAX_BATCH, default 32; "
                        "1 = one call per record)")
    m.add_argument("--batching", choices=("auto", "always", "off"),
                   default=os.environ.get("MODELGATEWAY_BATCHING", "auto"),
                   help="which models are batched: auto = those whose server's metadata gives every input "
                        "and output a variable first dimension (-1, the batch dimension); always = every "
                        "model (only right if each one's first dimension is the batch); off = none "
                        "(env MODELGATEWAY_BATCHING, default auto)")
    m.add_argument("--timeout-s", type=float,
                   default=_env_int("MODELGATEWAY_WORKER_TIMEOUT_MS", 120000) / 1000.0,
                   help="per-request timeout seconds (default 120)")
    m.add_argument("--model-version", default="",
                   help='model_version sent to the OIP server (default: the request\'s; the reference sends "1")')
    m.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus /metrics on this port (per model: calls, errors, latency, in flight)")
    m.set_defaults(handler=run_model_gateway)

    p = sub.add_parser("pipeline-gateway", help="synchronous REST/gRPC inference over Kafka")
    _kafka_flags(p)
    p.add_argument("--http-port", type=int, default=9010, help="REST port (default 9010)")
    p.add_argument("--grpc-port", type=int, default=9011, help="gRPC port (default 9011)")
    p.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    p.add_argument("--timeout-s", type=float, default=30.0,
                   help="request timeout seconds, REST 504 / gRPC DEADLINE_EXCEEDED after it (0 = wait forever); "
                        "the floor of each pipeline's own default, derived from its join and batch windows and "
                        "model calls; a request may give its own in the Seldon-Request-Timeout header")
    p.add_argument("--model-timeout-s", type=float, default=120.0,
                   help="the model gateways' per-call timeout, counted once per step in a pipeline's default "
                        "timeout (default 120, as MODELGATEWAY_WORKER_TIMEOUT_MS)")
    p.add_argument("--join-window-ms", type=int, default=60000,
                   help="the engines' default join window, for joins without their own in a pipeline's default "
                        "timeout (default 60000, as SELDON_KAFKA_JOIN_WINDOW_MILLIS)")
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port")
    p.add_argument("--partitions", type=int, default=None,
                   help="(accepted for compatibility; topics come from the engine)")
    p.add_argument("--no-scheduler", action="store_true",
                   help="serve any pipeline or model whose output topic exists, without a scheduler announcing it")
    p.add_argument("--max-num-consumers", type=int, default=_env_int("PIPELINEGATEWAY_MAX_NUM_CONSUMERS", 1),
                   help="consumer-group buckets for output topics; every replica must use the same value "
                        "(env PIPELINEGATEWAY_MAX_NUM_CONSUMERS, default 1: one consumer for all)")
    p.add_argument("--max-request-bytes", type=int, default=1_000_000_000,
                   help="largest request accepted (REST body, gRPC message, Kafka record); larger ones get "
                        "REST 413 / gRPC RESOURCE_EXHAUSTED (default 1000000000, the reference's max message size)")
    p.set_defaults(handler=run_pipeline_gateway)


def _settings(args):
    """Kafka settings and topic names; fills ``args.consumer_group_prefix`` when not given."""
    try:
        path = args.kafka_config or os.environ.get(CONFIG_ENV)
        file = load_kafka_config(path) if path else KafkaConfigFile(extra={})
        settings = KafkaSettings.from_env(bootstrap=args.kafka, config_path=path,
                                          security=gateway_kafka_security(os.environ))
        prefix = (args.topic_prefix or os.environ.get("SELDON_KAFKA_TOPIC_PREFIX") or file.topic_prefix
                  or "seldon")
        namespace = args.namespace or os.environ.get("POD_NAMESPACE") or kubernetes_namespace() or "default"
        namer = TopicNamer(prefix=prefix, namespace=namespace)
    except (KafkaSetupError, SeldonEnvError) as exc:
        raise CliError(str(exc)) from exc
    if args.consumer_group_prefix is None:
        args.consumer_group_prefix = (os.environ.get("KAFKA_CONSUMER_GROUP_ID_PREFIX")
                                      or file.consumer_group_prefix or "")
    return settings, namer


def _schema_registry(args) -> str | None:
    """``--schema-registry-config`` > ``SCHEMA_REGISTRY_CONFIG_PATH`` (the reference gateways'),
    checked now: a given but unreadable config stops the gateway, as in the reference."""
    path = args.schema_registry_config or os.environ.get(GATEWAY_ENV, "").strip() or None
    if path:
        try:
            load_config(path)
        except SchemaRegistryConfigError as exc:
            raise CliError(str(exc)) from exc
    return path


def _run(service) -> int:
    async def main():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, service.request_stop)
            except (NotImplementedError, RuntimeError):
                pass
        await service.run_forever()

    asyncio.run(main())
    return 0


def run_model_gateway(args) -> int:
    # imported here: the gateway service adds ~390 ms to every `dataflow` command
    from gateways.model_service import ModelGatewayConfig, ModelGatewayService

    settings, namer = _settings(args)
    static = {}
    for spec in args.model:
        name, sep, endpoint = spec.partition("=")
        if not sep or not name or not endpoint:
            raise CliError(f"--model {spec!r}: expected NAME=ENDPOINT, e.g. add10=grpc://127.0.0.1:9500")
        static[name] = endpoint
    scheduler = _scheduler(args)
    if not scheduler and not static:
        raise CliError("nothing to serve: give --scheduler HOST:PORT and/or --model NAME=ENDPOINT")
    if args.workers < 1:
        raise CliError(f"--workers must be at least 1, got {args.workers}")
    if args.max_batch < 1:
        raise CliError(f"--max-batch must be at least 1, got {args.max_batch}")
    cfg = ModelGatewayConfig(settings=settings, namer=namer, scheduler=scheduler, static_models=static,
                             default_endpoint=args.default_endpoint, workers=args.workers,
                             max_batch=args.max_batch, batching=args.batching,
                             timeout_s=args.timeout_s, partitions=args.partitions, replication=args.replication,
                             consumer_prefix=args.consumer_group_prefix, model_version=args.model_version,
                             schema_registry_config=_schema_registry(args), metrics_port=args.metrics_port)
    print(f"model gateway: kafka {settings.bootstrap_servers}, scheduler {scheduler or '-'}", flush=True)
    return _run(ModelGatewayService(cfg))


def run_pipeline_gateway(args) -> int:
    # imported here: the gateway service adds ~390 ms to every `dataflow` command
    from gateways.pipeline_gateway import GatewayError
    from gateways.pipeline_service import PipelineGatewayConfig, PipelineGatewayService

    settings, namer = _settings(args)
    scheduler = None if args.no_scheduler else _scheduler(args)
    if not scheduler and not args.no_scheduler:
        raise CliError("give --scheduler HOST:PORT (or --no-scheduler to serve pipelines on demand)")
    if args.max_num_consumers < 1:
        raise CliError(f"--max-num-consumers must be at least 1, got {args.max_num_consumers}")
    if not 1 <= args.max_request_bytes <= 1_000_000_000:
        raise CliError(f"--max-request-bytes must be between 1 and 1000000000, got {args.max_request_bytes}")
    cfg = PipelineGatewayConfig(settings=settings, namer=namer, scheduler=scheduler, http_port=args.http_port,
                                grpc_port=args.grpc_port, host=args.host, metrics_port=args.metrics_port,
                                timeout_s=args.timeout_s, consumer_prefix=args.consumer_group_prefix,
                                max_num_consumers=args.max_num_consumers,
                                max_request_bytes=args.max_request_bytes,
                                model_timeout_s=args.model_timeout_s, default_join_window_ms=args.join_window_ms,
                                schema_registry_config=_schema_registry(args))
    service = PipelineGatewayService(cfg)
    print(f"pipeline gateway: REST {args.host}:{args.http_port}, gRPC {args.host}:{args.grpc_port}, "
          f"kafka {settings.bootstrap_servers}, scheduler {scheduler or '-'}", flush=True)
    try:
        return _run(service)
    except (OSError, GatewayError) as exc:  # e.g. port in use
        raise CliError(f"pipeline gateway cannot start: {exc}") from exc
