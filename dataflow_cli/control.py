"""Plumbing shared by the control-plane subcommands (``dataflow pipeline|model ...``).

Pipelines and models are loaded, unloaded and watched the same way (as the seldon CLI does);
only the kind's name, its states, its YAML parser and its scheduler calls differ.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable

from google.protobuf import json_format

from dataflow.kafka import KafkaSetupError, TopicNamer
from dataflow_cli import CliError
from dataflow_cli.config import add_scheduler_flags, resolve
from scheduler_min.client import SchedulerCallError, SchedulerClient
from scheduler_min.manifest import one_line
from scheduler_min.validation import PipelineValidationError


def add_common_flags(p) -> None:
    add_scheduler_flags(p)
    p.add_argument("-v", "--verbose", action="store_true", help="print the requests sent")


def print_help(parser) -> int:
    parser.print_help()
    return 2


def add_load_unload_status(subparsers, kind: str, states: tuple[str, ...], *, load_help: str,
                           run_load, run_unload, run_status, load_description: str | None = None,
                           text_output: bool = False) -> None:
    """The ``load`` / ``unload`` / ``status`` subcommands of ``dataflow <kind>``."""
    load = subparsers.add_parser("load", help=load_help, description=load_description)
    load.add_argument("-f", "--file-path", dest="files", action="append", required=True,
                      help="YAML file (several documents allowed; '-' = stdin); repeatable")
    add_common_flags(load)
    load.set_defaults(handler=run_load)

    unload = subparsers.add_parser("unload", help=f"unload a {kind}")
    unload.add_argument("name", nargs="?", help=f"{kind} name")
    unload.add_argument("-f", "--file-path", dest="files", action="append", help="take the name(s) from YAML")
    add_common_flags(unload)
    unload.set_defaults(handler=run_unload)

    status = subparsers.add_parser("status", help=f"status of one {kind} (JSON), or of all")
    status.add_argument("name", nargs="?", help=f"{kind} name (default: all {kind}s)")
    status.add_argument("-w", "--wait", default="", metavar="STATE",
                        help=f"wait until the latest version is in STATE, one of {', '.join(states)}")
    status.add_argument("-t", "--timeout-secs", "--timeout", dest="timeout", type=float, default=60.0,
                        help="wait timeout seconds (default 60); --timeout-secs is the seldon CLI's spelling")
    status.add_argument("--all-versions", action="store_true", help="show every version, not only the latest")
    if text_output:
        status.add_argument("-o", "--output", choices=("json", "text"), default="json",
                            help="json (default): one status message per line, as the seldon CLI; "
                                 "text: a table, one row per version")
    add_common_flags(status)
    status.set_defaults(handler=run_status)


def to_json(msg) -> str:
    return json.dumps(json_format.MessageToDict(msg), separators=(",", ":"))


def read_inputs(files: list[str]) -> list[tuple[str, bytes]]:
    """``(source, bytes)`` of each file (``-`` = stdin); an unreadable file is a ``CliError``.

    Bytes, not text: decoding is the manifest parser's job, so a binary or UTF-16 file gets an
    error naming the file instead of a ``UnicodeDecodeError`` from ``open().read()``."""
    out = []
    for f in files:
        try:
            if f == "-":
                out.append(("<stdin>", sys.stdin.buffer.read()))
            else:
                with open(f, "rb") as fh:
                    out.append((f, fh.read()))
        except OSError as exc:
            raise CliError(f"cannot read {f}: {exc.strerror or exc}") from None
    return out


def read_manifests(files: list[str], parse: Callable[[bytes, str], list],
                   check: Callable[[object], None] | None = None) -> list:
    """Every resource in ``files``, parsed by ``parse(data, source)`` and passed to ``check``
    (which raises ``PipelineValidationError``); any failure is a one-line ``CliError`` naming the file."""
    out = []
    for source, data in read_inputs(files):
        try:
            resources = parse(data, source)
            for r in resources:
                if check is not None:
                    check(r)
        except PipelineValidationError as exc:
            message = str(exc)
            raise CliError(one_line(message if message.startswith(f"{source}: ") else f"{source}: {message}")) \
                from None
        out += resources
    return out


def topic_namer(args):
    """The topic naming the CLI's settings give (prefix and namespace), to refuse names whose
    topics Kafka would refuse before anything is sent; the scheduler checks again with its own."""
    conn = resolve(args)
    try:
        return TopicNamer(prefix=conn.topic_prefix, namespace=conn.namespace)
    except KafkaSetupError as exc:
        raise CliError(str(exc)) from None


def client(args):
    return SchedulerClient(resolve(args).scheduler_host)


def call(fn):
    """Run a scheduler call; its failures become one-line CLI errors."""
    try:
        return fn()
    except SchedulerCallError as exc:
        raise CliError(str(exc)) from None


def load_each(args, resources: list, send: Callable) -> int:
    """``send(client, resource)`` for each resource, in order (``-v`` prints each request)."""
    with client(args) as c:
        for r in resources:
            if args.verbose:
                print(to_json(r))
            call(lambda: send(c, r))  # noqa: B023  # called within this iteration
    return 0


def unload_each(args, kind: str, names_in_files: Callable[[list[str]], list[str]], send: Callable) -> int:
    """``send(client, name)`` for the NAME argument and every name in ``-f`` files."""
    names = [args.name] if args.name else []
    if args.files:
        names += names_in_files(args.files)
    if not names:
        raise CliError(f"{kind} unload needs a NAME or -f FILE")
    with client(args) as c:
        for n in names:
            call(lambda: send(c, n))  # noqa: B023  # called within this iteration
    return 0


def print_status(args, kind: str, states: tuple[str, ...], *, wait: Callable, query: Callable,
                 text: Callable | None = None) -> int:
    """Print the status of ``args.name`` (or all), or wait for ``-w STATE`` and print it; with
    ``-o text`` (where offered) ``text(responses)`` formats them instead of JSON."""
    if args.wait and args.wait not in states:
        raise CliError(f"unknown state {args.wait!r} for -w; use one of {', '.join(states)}")
    if args.wait and not args.name:
        raise CliError(f"{kind} status -w needs a {kind} name")
    with client(args) as c:
        if args.wait:
            res = [call(lambda: wait(c, args.name, args.wait, args.timeout))]
        else:
            res = call(lambda: query(c, args.name, args.all_versions))
    if text is not None and getattr(args, "output", "json") == "text":
        print(text(res))
        return 0
    for r in res:
        print(to_json(r))
    return 0


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Tab-separated columns, all but the last padded (the seldon CLI's list layout)."""
    rule = tuple("-" * len(h) for h in header)
    every = [header, rule] + [tuple(r) for r in rows]
    widths = [max(len(r[i]) for r in every) + 1 for i in range(len(header) - 1)]
    return "\n".join("\t".join([*(f"{c:<{w}}" for c, w in zip(r, widths)), r[-1]]).rstrip() for r in every)
