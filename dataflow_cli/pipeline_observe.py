"""``dataflow pipeline describe`` and ``dataflow pipeline top``: what a pipeline is and how it is doing.

``describe`` compiles the scheduler's record of a pipeline version exactly as an engine does
(scheduler conversion -> Chainer Create message -> ``dataflow.topology.build_topology``), so it
shows the steps an engine runs without any access to an engine. ``top`` reads the engines'
Prometheus endpoints (``/metrics`` on their health port) and prints per-step rates.
"""
from __future__ import annotations

import json
import sys

from dataflow_cli import CliError, pipeline_top
from dataflow_cli.config import add_scheduler_flags
from dataflow_cli.control import call, client, topic_namer
from scheduler_min.convert import creation_message, from_proto
from scheduler_min.validation import PipelineValidationError

FORMATS = ("text", "mermaid", "json")


def register(ps) -> None:
    d = ps.add_parser("describe", help="show the compiled topology of a pipeline (steps, sources, joins, topics)",
                      description="Compile the scheduler's record of the pipeline as an engine does and print "
                                  "its steps: sources with tensor subsets and renames, join type and window, "
                                  "triggers, batching, sinks and topics. Needs only the scheduler.")
    d.add_argument("name", help="pipeline name")
    d.add_argument("--format", choices=FORMATS, default="text",
                   help="text (default); mermaid: a flowchart for GitHub or any Mermaid viewer; json")
    d.add_argument("--version", type=int, default=None, dest="pipeline_version",
                   help="pipeline version (default: the latest)")
    add_scheduler_flags(d)
    d.set_defaults(handler=run_describe)

    pipeline_top.register(ps)


def compiled_topology(status, namer, version: int | None = None):
    """The ``Topology`` an engine builds for a version in a ``PipelineStatusResponse`` (the latest
    when ``version`` is None). Raises ``CliError`` when there is no such version."""
    # imported here: the topology compiler (numpy) adds ~85 ms to every `dataflow` command
    from dataflow.topology import TopologyError, build_topology

    versions = [v.pipeline for v in status.versions]
    if version is not None:
        versions = [p for p in versions if p.version == version]
    if not versions:
        which = f"version {version} of " if version is not None else ""
        raise CliError(f"no {which}pipeline {status.pipelineName} on the scheduler")
    proto = max(versions, key=lambda p: p.version)
    try:
        msg = creation_message(from_proto(proto), namer)
        return build_topology(msg)
    except (PipelineValidationError, TopologyError) as exc:
        raise CliError(f"pipeline {proto.name} version {proto.version} does not compile: {exc}") from None


def run_describe(args) -> int:
    namer = topic_namer(args)
    with client(args) as c:
        (status,) = call(lambda: c.pipeline_status(args.name, True))
    topology = compiled_topology(status, namer, args.pipeline_version)
    if args.format == "json":
        out = json.dumps(topology.as_dict(), indent=2) + "\n"
    elif args.format == "mermaid":
        out = topology.mermaid()
    else:
        out = topology.describe()
    sys.stdout.write(out)
    return 0

