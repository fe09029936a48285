"""``dataflow up``: the one-command demo. Starts the whole stack on loopback, loads the sample
models and pipelines, proves a request goes through, prints how to call it, and stops
everything (children in reverse order) on Ctrl-C / SIGTERM."""
from __future__ import annotations

import signal
import sys
import time

from dataflow_cli import CliError
from dataflow_cli.demo.stack import (
    DEFAULT_MODELS_FILE,
    Stack,
    StackError,
    StackInterrupted,
    UpOptions,
    options_from_args,
)

READY_LINE = "dataflow up: ready"


def register(sub) -> None:
    d = UpOptions()
    p = sub.add_parser("up", help="run the whole demo stack on loopback (broker, MLServer, "
                                  "scheduler, engine, gateways) with sample models and pipelines",
                       description=__doc__)
    p.add_argument("--host", default=d.host, help=f"address every component binds (default {d.host})")
    ports = p.add_argument_group("ports (0 = pick a free port)")
    ports.add_argument("--kafka-port", type=int, default=d.kafka_port)
    ports.add_argument("--scheduler-port", type=int, default=d.scheduler_port)
    ports.add_argument("--chainer-port", type=int, default=d.chainer_port)
    ports.add_argument("--http-port", type=int, default=d.http_port, help="pipeline gateway REST")
    ports.add_argument("--grpc-port", type=int, default=d.grpc_port, help="pipeline gateway gRPC")
    ports.add_argument("--mlserver-http-port", type=int, default=d.mlserver_http_port)
    ports.add_argument("--mlserver-grpc-port", type=int, default=d.mlserver_grpc_port)
    ports.add_argument("--metrics-port", type=int, default=d.metrics_port,
                       help="pipeline gateway Prometheus metrics")
    p.add_argument("--no-models", action="store_true",
                   help="start no MLServer and load no sample models (bring your own with "
                        "`dataflow model load`); no sample pipeline unless --pipelines is given")
    p.add_argument("--models-dir", default=None,
                   help="MLServer models folder (default examples/models)")
    p.add_argument("--models-file", default=str(DEFAULT_MODELS_FILE),
                   help="Seldon Model YAML to load (default examples/models.yaml); each model's "
                        "endpoint is set to the MLServer started here")
    p.add_argument("--pipelines", nargs="*", metavar="FILE", default=None,
                   help="Seldon Pipeline YAML files to load (default examples/pipelines/tfsimples.yaml)")
    p.add_argument("--state-dir", default=None,
                   help="keep scheduler state and logs here (default: a temporary folder, removed on exit)")
    p.add_argument("--partitions", type=int, default=d.partitions, help="partitions per topic (default 1)")
    p.add_argument("--engines", type=int, default=d.engines,
                   help="dataflow engine replicas (default 1); every pipeline runs on all of them, which "
                        "split its partitions (use --partitions >= --engines)")
    p.add_argument("--runtime", default=None, help="engine runtime (default: the engine's default)")
    p.add_argument("--ready-timeout", type=float, default=d.ready_timeout,
                   help=f"seconds to wait for each stage (default {d.ready_timeout:g})")
    p.add_argument("--component-log-level", default=d.log_level,
                   help=f"log level of the components' log files (default {d.log_level})")
    p.set_defaults(handler=run)


def run(args) -> int:
    def on_signal(signum, _frame):
        name = signal.Signals(signum).name
        stack.request_stop(name)  # kept even if the exception below is swallowed
        raise StackInterrupted(name)  # unwinds start-up or the watch loop

    for flag, value in (("--engines", args.engines), ("--partitions", args.partitions)):
        if value < 1:
            raise CliError(f"{flag} must be at least 1, got {value}")
    stack = Stack(options_from_args(args))
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    failure: str | None = None
    try:
        stack.start()
        stack.raise_if_stop_requested()  # asked for during the last stage
        print(stack.banner(), flush=True)
        print(READY_LINE, flush=True)
        while True:
            time.sleep(0.5)
            stack.raise_if_stop_requested()
            dead = stack.failed_child()
            if dead is not None:
                failure = (f"{getattr(dead, 'name', 'mlserver')} exited unexpectedly; "
                           f"log tail:\n{dead.log_tail()}")
                break
    except StackInterrupted as stop:
        print(f"\n{stop} received: stopping", flush=True)
    except StackError as exc:
        failure = str(exc)
    finally:
        for sig in previous:  # a second Ctrl-C must not interrupt the orderly stop
            signal.signal(sig, signal.SIG_IGN)
        try:
            stack.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        print("dataflow up: stopped", flush=True)
    if failure:
        raise CliError(failure)
    return 0


if __name__ == "__main__":  # pragma: no cover
    from dataflow_cli import main

    sys.exit(main(["up", *sys.argv[1:]]))
