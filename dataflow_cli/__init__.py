"""The ``dataflow`` command. Each subcommand group lives in its own module with ``register(sub)``.

Errors a user can cause (bad file, unknown pipeline, unreachable service) are raised as
``CliError`` and printed as one line on stderr with exit code 1, never as a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from dataflow import __version__

# Subcommand modules, in help order. A module registers one or more subcommands.
COMMAND_MODULES = (
    "broker",
    "up",
    "engine",
    "scheduler",
    "pipeline",
    "model",
    "gateways",
)


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dataflow",
        description="dataflow-engine: run Seldon Core 2 inference pipelines over Kafka "
                    "(engine, scheduler, gateways, CLI).",
    )
    parser.add_argument("--version", action="version", version=f"dataflow-engine {__version__}")
    parser.add_argument("--log-level", default="WARNING", help="Python log level (default WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"dataflow_cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except CliError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
