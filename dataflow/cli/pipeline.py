"""``dataflow pipeline load|unload|status|list|inspect``: pipelines on the scheduler, as the seldon CLI.

Data-plane subcommands (``infer``, ``batch``) come from ``dataflow.cli.pipeline_data`` when present.
"""
from __future__ import annotations

import importlib
import json
import sys

from dataflow.cli.config import add_kafka_flags, add_scheduler_flags, resolve

STATUS_NAMES = ("PipelineCreate", "PipelineCreating", "PipelineReady", "PipelineFailed", "PipelineTerminate",
                "PipelineTerminating", "PipelineTerminated", "PipelineRebalancing", "PipelineFailedTerminating")


def register(sub) -> None:
    p = sub.add_parser("pipeline", help="load, unload, watch and inspect pipelines",
                       epilog="Connection settings come from flags, then the config file "
                              "~/.config/dataflow/cli/config.json (env DATAFLOW_CLI_CONFIG), then the env vars "
                              "SELDON_SCHEDULE_HOST, SELDON_KAFKA_BROKER, SELDON_KAFKA_CONFIG_PATH, POD_NAMESPACE "
                              "(see dataflow/cli/config.py).")
    ps = p.add_subparsers(dest="pipeline_command", metavar="SUBCOMMAND")
    p.set_defaults(handler=lambda args: _help(p))

    load = ps.add_parser("load", help="load pipelines from Seldon Pipeline YAML")
    load.add_argument("-f", "--file-path", dest="files", action="append", required=True,
                      help="YAML file (several documents allowed; '-' = stdin); repeatable")
    _common(load)
    load.set_defaults(handler=run_load)

    unload = ps.add_parser("unload", help="unload a pipeline")
    unload.add_argument("name", nargs="?", help="pipeline name")
    unload.add_argument("-f", "--file-path", dest="files", action="append", help="take the name(s) from YAML")
    _common(unload)
    unload.set_defaults(handler=run_unload)

    status = ps.add_parser("status", help="status of one pipeline (JSON), or of all")
    status.add_argument("name", nargs="?", help="pipeline name (default: all pipelines)")
    status.add_argument("-w", "--wait", default="", metavar="STATE",
                        help=f"wait until the latest version is in STATE, one of {', '.join(STATUS_NAMES)}")
    status.add_argument("-t", "--timeout", type=float, default=60.0, help="wait timeout seconds (default 60)")
    status.add_argument("--all-versions", action="store_true", help="show every version, not only the latest")
    _common(status)
    status.set_defaults(handler=run_status)

    lst = ps.add_parser("list", help="list pipelines with their state")
    _common(lst)
    lst.set_defaults(handler=run_list)

    insp = ps.add_parser("inspect", help="show the latest records of a pipeline's Kafka topics")
    insp.add_argument("expr", help="PIPELINE[.inputs|.outputs] or PIPELINE.STEP[.inputs|.outputs[.TENSOR]]")
    insp.add_argument("--offset", type=int, default=1, help="how many of the last messages to read (default 1)")
    insp.add_argument("--request-id", default="", help="only show records with this Kafka key")
    insp.add_argument("--format", choices=("raw", "json"), default="raw", help="output format (default raw)")
    insp.add_argument("-v", "--verbose", action="store_true", help="show headers")
    insp.add_argument("-t", "--truncate", action="store_true", help="clear tensor data")
    insp.add_argument("-d", "--timeout-secs", type=float, default=5.0, help="timeout seconds per topic (default 5)")
    add_scheduler_flags(insp)
    add_kafka_flags(insp)
    insp.set_defaults(handler=run_inspect)

    _register_optional("dataflow.cli.pipeline_data", ps)


def _register_optional(module: str, subparsers) -> None:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return
        raise
    mod.register(subparsers)


def _common(p) -> None:
    add_scheduler_flags(p)
    p.add_argument("-v", "--verbose", action="store_true", help="print the requests sent")


def _help(parser) -> int:
    parser.print_help()
    return 2


def to_json(msg) -> str:
    from google.protobuf import json_format

    return json.dumps(json_format.MessageToDict(msg), separators=(",", ":"))


def read_inputs(files: list[str]) -> list[tuple[str, str]]:
    from dataflow.cli import CliError

    out = []
    for f in files:
        try:
            if f == "-":
                out.append(("<stdin>", sys.stdin.read()))
            else:
                with open(f) as fh:
                    out.append((f, fh.read()))
        except OSError as exc:
            raise CliError(f"cannot read {f}: {exc.strerror or exc}") from None
    return out


def client(args):
    from scheduler_min.client import SchedulerClient

    return SchedulerClient(resolve(args).scheduler_host)


def call(fn):
    """Run a scheduler call; its failures become one-line CLI errors."""
    from dataflow.cli import CliError
    from scheduler_min.client import SchedulerCallError

    try:
        return fn()
    except SchedulerCallError as exc:
        raise CliError(str(exc)) from None


def _pipelines(files):
    from dataflow.cli import CliError
    from scheduler_min.manifest import pipelines_from_yaml
    from scheduler_min.validation import PipelineValidationError

    out = []
    for source, text in read_inputs(files):
        try:
            out += pipelines_from_yaml(text, source)
        except PipelineValidationError as exc:
            raise CliError(str(exc)) from None
    return out


def run_load(args) -> int:
    pipelines = _pipelines(args.files)
    with client(args) as c:
        for p in pipelines:
            if args.verbose:
                print(to_json(p))
            call(lambda: c.load_pipeline(p))
    return 0


def run_unload(args) -> int:
    from dataflow.cli import CliError

    names = [args.name] if args.name else []
    if args.files:
        names += [p.name for p in _pipelines(args.files)]
    if not names:
        raise CliError("pipeline unload needs a NAME or -f FILE")
    with client(args) as c:
        for n in names:
            call(lambda: c.unload_pipeline(n))
    return 0


def run_status(args) -> int:
    from dataflow.cli import CliError

    if args.wait and args.wait not in STATUS_NAMES:
        raise CliError(f"unknown state {args.wait!r} for -w; use one of {', '.join(STATUS_NAMES)}")
    if args.wait and not args.name:
        raise CliError("pipeline status -w needs a pipeline name")
    with client(args) as c:
        if args.wait:
            res = [call(lambda: c.wait_pipeline(args.name, args.wait, args.timeout))]
        else:
            res = call(lambda: c.pipeline_status(args.name, args.all_versions))
    for r in res:
        print(to_json(r))
    return 0


def _table(header: tuple[str, str, str], rows: list[tuple[str, str, str]]) -> str:
    rule = tuple("-" * len(h) for h in header)
    every = [header, rule] + rows
    widths = [max(len(r[i]) for r in every) + 1 for i in range(2)]
    return "\n".join(f"{r[0]:<{widths[0]}}\t{r[1]:<{widths[1]}}\t{r[2]}".rstrip() for r in every)


def run_list(args) -> int:
    from chainer_api import scheduler_pb2

    with client(args) as c:
        res = call(lambda: c.pipeline_status())
    rows = []
    for r in res:
        if r.versions:
            st = r.versions[-1].state
            rows.append((r.pipelineName, scheduler_pb2.PipelineVersionState.PipelineStatus.Name(st.status), st.reason))
    print(_table(("pipeline", "state", "reason"), rows))
    return 0


def run_inspect(args) -> int:
    from dataflow.cli import CliError
    from scheduler_min import topic_inspect as ti

    if args.offset < 1:
        raise CliError("--offset must be at least 1")
    conn = resolve(args)
    conf = ti.consumer_config(conn.kafka_broker, conn.kafka_consumer)
    print(ti.describe_config(conf), flush=True)
    pipeline = args.expr.split(".")[0]
    with client(args) as c:
        (status,) = call(lambda: c.pipeline_status(pipeline))
    try:
        target = ti.select_topics(args.expr, status, conn.namespace, conn.topic_prefix)
        topics = [ti.read_topic(conf, t, target.pipeline, args.offset, args.request_id, target.tensor,
                                args.verbose, args.truncate, args.timeout_secs) for t in target.topics]
    except ti.InspectError as exc:
        raise CliError(str(exc)) from None
    out = ti.format_json(topics) if args.format == "json" else ti.format_raw(topics, args.verbose)
    sys.stdout.write(out)
    return 0
