"""``dataflow broker``: run the embedded broker in the foreground until Ctrl-C / SIGTERM."""
from __future__ import annotations

import signal
import threading

from dataflow.broker import BrokerError, EmbeddedBroker
from dataflow_cli import CliError


def register(sub) -> None:
    p = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (Tansu) on loopback")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: a free port)")
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(handler=run)


def run(args) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        broker = EmbeddedBroker(port=args.port or None, host=args.host).start()
    except BrokerError as exc:
        raise CliError(str(exc)) from exc
    print(f"broker ready: bootstrap {broker.bootstrap}", flush=True)
    try:
        while not stop.wait(0.5):
            if not broker.alive():
                raise CliError("broker process exited unexpectedly")
    finally:
        broker.stop()
        print("broker stopped", flush=True)
    return 0
