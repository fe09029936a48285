"""``dataflow pipeline load|unload|status|list|inspect``: pipelines on the scheduler, as the seldon CLI.

Data-plane subcommands (``infer``, ``batch``) come from ``dataflow_cli.pipeline_data`` when present;
``describe`` and ``top`` from ``dataflow_cli.pipeline_observe``.
"""
from __future__ import annotations

import sys

from chainer_api import scheduler_pb2
from dataflow_cli import CliError, pipeline_data, pipeline_observe
from dataflow_cli.config import add_kafka_flags, add_scheduler_flags, resolve
from dataflow_cli.control import (
    add_common_flags,
    add_load_unload_status,
    call,
    client,
    load_each,
    print_help,
    print_status,
    read_manifests,
    table,
    topic_namer,
    unload_each,
)
from scheduler_min.manifest import pipelines_from_yaml
from scheduler_min.validation import check_topic_names

STATUS_NAMES = ("PipelineCreate", "PipelineCreating", "PipelineReady", "PipelineFailed", "PipelineTerminate",
                "PipelineTerminating", "PipelineTerminated", "PipelineRebalancing", "PipelineFailedTerminating")


def register(sub) -> None:
    p = sub.add_parser("pipeline", help="load, unload, watch and inspect pipelines",
                       epilog="Connection settings come from flags, then the config file "
                              "~/.config/dataflow/cli/config.json (env DATAFLOW_CLI_CONFIG; if absent, the seldon "
                              "CLI's active config or ~/.config/seldon/cli/config.json), then the env vars "
                              "SELDON_SCHEDULE_HOST, SELDON_KAFKA_BROKER, SELDON_KAFKA_CONFIG_PATH, POD_NAMESPACE "
                              "(see dataflow_cli/config.py).")
    ps = p.add_subparsers(dest="pipeline_command", metavar="SUBCOMMAND")
    p.set_defaults(handler=lambda args: print_help(p))
    add_load_unload_status(ps, "pipeline", STATUS_NAMES, load_help="load pipelines from Seldon Pipeline YAML",
                           run_load=run_load, run_unload=run_unload, run_status=run_status, text_output=True)

    lst = ps.add_parser("list", help="list pipelines with their state")
    add_common_flags(lst)
    lst.set_defaults(handler=run_list)

    insp = ps.add_parser("inspect", help="show the latest records of a pipeline's Kafka topics")
    insp.add_argument("expr", help="PIPELINE[.inputs|.outputs] or PIPELINE.STEP[.inputs|.outputs[.TENSOR]]")
    insp.add_argument("--offset", type=int, default=1, help="how many of the last messages to read (default 1)")
    insp.add_argument("--request-id", default="", help="only show records with this Kafka key")
    insp.add_argument("--format", choices=("raw", "json"), default="raw", help="output format (default raw)")
    insp.add_argument("-v", "--verbose", action="store_true", help="show headers")
    insp.add_argument("-t", "--truncate", action="store_true", help="clear tensor data")
    insp.add_argument("-d", "--timeout-secs", "--timeout", dest="timeout_secs", type=float, default=5.0,
                      help="timeout seconds per topic (default 5)")
    add_scheduler_flags(insp)
    add_kafka_flags(insp)
    insp.set_defaults(handler=run_inspect)

    pipeline_data.register(ps)
    pipeline_observe.register(ps)


def _pipelines(files, check=None):
    return read_manifests(files, pipelines_from_yaml, check)


def run_load(args) -> int:
    namer = topic_namer(args)
    pipelines = _pipelines(args.files, lambda p: check_topic_names(namer, pipeline=p.name,
                                                                   steps=[s.name for s in p.steps]))
    return load_each(args, pipelines, lambda c, p: c.load_pipeline(p))


def run_unload(args) -> int:
    return unload_each(args, "pipeline", lambda files: [p.name for p in _pipelines(files)],
                       lambda c, name: c.unload_pipeline(name))


def run_status(args) -> int:
    return print_status(args, "pipeline", STATUS_NAMES, wait=lambda c, *a: c.wait_pipeline(*a),
                        query=lambda c, *a: c.pipeline_status(*a), text=status_table)


def _status_name(value: int) -> str:
    return scheduler_pb2.PipelineVersionState.PipelineStatus.Name(value)


def status_table(responses) -> str:
    """One row per version: the engines' state, the pipeline gateways' state (``gateway``), whether
    the step models are ready, and the reasons. ``gateway`` is what says the pipeline is served:
    engines can run a pipeline no gateway has loaded yet."""
    rows: list[tuple[str, ...]] = []
    for r in responses:
        for v in r.versions:
            st = v.state
            reasons = "; ".join(x for x in (st.reason.strip(), f"gateway: {st.pipelineGwReason.strip()}"
                                            if st.pipelineGwReason.strip() else "") if x)
            rows.append((r.pipelineName, str(st.pipelineVersion), _status_name(st.status),
                         _status_name(st.pipelineGwStatus), "true" if st.modelsReady else "false", reasons))
    return table(("pipeline", "version", "state", "gateway", "models-ready", "reason"), rows)


def run_list(args) -> int:
    with client(args) as c:
        res = call(lambda: c.pipeline_status())
    rows: list[tuple[str, ...]] = []
    for r in res:
        if r.versions:
            st = r.versions[-1].state
            rows.append((r.pipelineName, _status_name(st.status), _status_name(st.pipelineGwStatus), st.reason))
    print(table(("pipeline", "state", "gateway", "reason"), rows))
    return 0


def run_inspect(args) -> int:
    # imported here: topic inspection adds ~130 ms to every `dataflow` command
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
