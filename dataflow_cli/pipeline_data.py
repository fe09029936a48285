"""``dataflow pipeline infer`` and ``dataflow pipeline batch``: the data plane of a pipeline.

``infer`` calls the pipeline gateway like ``seldon pipeline infer`` (REST by default, header
``seldon-model: <name>.pipeline``) and prints the JSON response. ``batch`` scores a file of
requests asynchronously through the pipeline's Kafka topics (see ``gateways.batch``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from dataflow.kafka import KafkaSettings, KafkaSetupError, TopicNamer
from dataflow_cli import CliError
from dataflow_cli.config import add_kafka_flags, load_cli_config, resolve

ENV_INFER_HOST = "SELDON_INFER_HOST"
DEFAULT_REST_HOST = "127.0.0.1:9010"
DEFAULT_GRPC_HOST = "127.0.0.1:9011"


class _IntermixedParser(argparse.ArgumentParser):
    """Lets ``NAME`` and the request JSON sit on either side of the options
    (``infer NAME --inference-host H '{...}'``), as with the seldon CLI."""

    _busy = False

    def parse_known_args(self, args=None, namespace=None):
        if self._busy:
            return super().parse_known_args(args, namespace)
        self._busy = True
        try:
            return super().parse_known_intermixed_args(args, namespace)
        finally:
            self._busy = False


def add_infer_parser(subparsers, name: str, **kwargs) -> argparse.ArgumentParser:
    """``subparsers.add_parser`` building an ``_IntermixedParser``."""
    original = subparsers._parser_class
    subparsers._parser_class = _IntermixedParser
    try:
        return subparsers.add_parser(name, **kwargs)
    finally:
        subparsers._parser_class = original


def add_infer_arguments(p, what: str) -> None:
    p.add_argument("name", help=f"{what} name")
    p.add_argument("data", nargs="?", help="request JSON (OIP REST body); or use -i FILE")
    p.add_argument("-i", "--file-path", default=None, help="read the request JSON from this file ('-' = stdin)")
    p.add_argument("--inference-mode", choices=("rest", "grpc"), default="rest", help="rest (default) or grpc")
    p.add_argument("--inference-host", default=None,
                   help=f"pipeline gateway HOST:PORT (env {ENV_INFER_HOST}; default {DEFAULT_REST_HOST} for "
                        f"REST, {DEFAULT_GRPC_HOST} for gRPC)")
    p.add_argument("--header", action="append", default=[], metavar="KEY=VALUE",
                   help="extra request header / gRPC metadata; repeatable")
    p.add_argument("-s", "--show-headers", action="store_true", help="print the response headers too")
    p.add_argument("--iterations", type=int, default=1, help="send the request this many times (default 1)")
    p.add_argument("--timeout-s", type=float, default=60.0, help="per-call timeout seconds (default 60)")


def register(pipeline_subparsers) -> None:
    p = add_infer_parser(pipeline_subparsers, "infer", help="call a pipeline through the pipeline gateway")
    add_infer_arguments(p, "pipeline")
    p.set_defaults(handler=lambda args: run_infer(args, is_pipeline=True))

    b = pipeline_subparsers.add_parser(
        "batch", help="score a file of requests asynchronously through the pipeline's Kafka topics")
    b.add_argument("name", help="pipeline name")
    b.add_argument("--input", required=True, help="requests: JSONL (one OIP JSON per line) or Avro")
    b.add_argument("--output", required=True, help="results file (JSONL or Avro)")
    b.add_argument("--errors", default=None, help="errors file (default: <output>.errors.<ext>)")
    b.add_argument("--format", choices=("jsonl", "avro"), default=None,
                   help="format of input and output (default: from the file extension, .avro = Avro)")
    b.add_argument("--max-in-flight", type=int, default=100, help="unanswered requests at most (default 100)")
    b.add_argument("--request-timeout-s", type=float, default=120.0,
                   help="give up (keeping results; rerun to resume) when a request waits longer (default 120)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    add_kafka_flags(b)
    b.add_argument("--kafka", dest="kafka_broker", default=None, metavar="BOOTSTRAP",
                   help="same as --kafka-broker")
    b.set_defaults(handler=run_batch)


def _request_body(args) -> bytes:
    if args.file_path:
        try:
            if args.file_path == "-":
                return sys.stdin.buffer.read()
            with open(args.file_path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise CliError(f"cannot read {args.file_path}: {exc}") from exc
    if args.data is None:
        raise CliError("give the request JSON as an argument or with -i FILE")
    return args.data.encode()


def _inference_host(args) -> str:
    if args.inference_host:
        return args.inference_host
    env = os.environ.get(ENV_INFER_HOST)
    if env:
        return env
    cfg = load_cli_config().get("dataplane")
    if isinstance(cfg, dict) and cfg.get("inferHost"):
        return str(cfg["inferHost"])
    return DEFAULT_GRPC_HOST if args.inference_mode == "grpc" else DEFAULT_REST_HOST


def run_infer(args, *, is_pipeline: bool) -> int:
    # imported here: the infer client adds ~110 ms to every `dataflow` command
    from gateways.infer_client import InferCallError, infer_grpc, infer_rest

    body = _request_body(args)
    try:
        json.loads(body)
    except ValueError as exc:
        raise CliError(f"request is not valid JSON: {exc}") from exc
    headers = {}
    for h in args.header:
        k, sep, v = h.partition("=")
        if not sep or not k:
            raise CliError(f"--header {h!r}: expected KEY=VALUE")
        headers[k] = v
    call = infer_grpc if args.inference_mode == "grpc" else infer_rest
    host = _inference_host(args)
    for _ in range(max(1, args.iterations)):
        try:
            reply = call(host, args.name, body, is_pipeline=is_pipeline, headers=headers, timeout_s=args.timeout_s)
        except InferCallError as exc:
            raise CliError(str(exc)) from exc
        if args.show_headers:
            for k, v in reply.headers:
                print(f"{k}: {v}")
        print(json.dumps(reply.body, indent=2))
    return 0


def run_batch(args) -> int:
    # imported here: batch scoring adds ~120 ms to every `dataflow` command
    from gateways.batch import BatchError, BatchJob, BatchRun, format_summary

    conn = resolve(args)
    try:
        settings = KafkaSettings(bootstrap_servers=conn.kafka_broker,
                                 extra=tuple(sorted((k, str(v)) for k, v in conn.kafka_consumer.items())))
        namer = TopicNamer(prefix=conn.topic_prefix, namespace=conn.namespace)
    except KafkaSetupError as exc:
        raise CliError(str(exc)) from exc
    job = BatchJob(pipeline=args.name, input=args.input, output=args.output, errors=args.errors,
                   input_format=args.format, output_format=args.format, max_in_flight=args.max_in_flight,
                   request_timeout_s=args.request_timeout_s, progress=not args.no_progress)
    try:
        summary = BatchRun(job, settings, namer).run()
    except BatchError as exc:
        raise CliError(str(exc)) from exc
    print(format_summary(summary), file=sys.stderr)
    if summary.interrupted:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    return 0
