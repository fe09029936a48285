"""``dataflow model load|unload|status|list``: models (name + serving endpoint) on the scheduler.

A model's Open Inference Protocol endpoint is given in its YAML as ``spec.endpoint`` (or a
parameter named ``endpoint``, or a ``grpc://``/``http://`` ``storageUri``), see
``scheduler_min.models``. Data-plane subcommands come from ``dataflow_cli.model_data`` when present.
"""
from __future__ import annotations

from chainer_api import scheduler_pb2
from dataflow_cli import model_data
from dataflow_cli.config import add_scheduler_flags
from dataflow_cli.control import (
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
from scheduler_min.manifest import models_from_yaml
from scheduler_min.validation import check_topic_names

STATE_NAMES = ("ModelProgressing", "ModelAvailable", "ModelFailed", "ModelTerminating", "ModelTerminated",
               "ModelTerminateFailed", "ScheduleFailed")


def register(sub) -> None:
    p = sub.add_parser("model", help="load, unload and watch models")
    ms = p.add_subparsers(dest="model_command", metavar="SUBCOMMAND")
    p.set_defaults(handler=lambda args: print_help(p))
    add_load_unload_status(
        ms, "model", STATE_NAMES, load_help="load models from Seldon Model YAML",
        load_description="Load models from Seldon Model YAML. The scheduler needs each model's "
                         "Open Inference Protocol endpoint: spec.endpoint (e.g. grpc://127.0.0.1:9500 "
                         "or http://127.0.0.1:9000), or a spec.parameters entry named endpoint, or a "
                         "grpc:// / http:// spec.storageUri, or the scheduler's --default-model-endpoint.",
        run_load=run_load, run_unload=run_unload, run_status=run_status)

    lst = ms.add_parser("list", help="list models with their state")
    add_scheduler_flags(lst)
    lst.set_defaults(handler=run_list)

    model_data.register(ms)


def _models(files, check=None):
    return read_manifests(files, models_from_yaml, check)


def run_load(args) -> int:
    namer = topic_namer(args)
    models = _models(args.files, lambda m: check_topic_names(namer, model=m.meta.name))
    return load_each(args, models, lambda c, m: c.load_model(m))


def run_unload(args) -> int:
    return unload_each(args, "model", lambda files: [m.meta.name for m in _models(files)],
                       lambda c, name: c.unload_model(name))


def run_status(args) -> int:
    return print_status(args, "model", STATE_NAMES, wait=lambda c, *a: c.wait_model(*a),
                        query=lambda c, *a: c.model_status(*a))


def run_list(args) -> int:
    with client(args) as c:
        res = call(lambda: c.model_status())
    rows: list[tuple[str, ...]] = []
    for r in res:
        if r.versions and r.versions[-1].state.state != scheduler_pb2.ModelStatus.ModelTerminated:
            st = r.versions[-1].state
            rows.append((r.modelName, scheduler_pb2.ModelStatus.ModelState.Name(st.state), st.reason))
    print(table(("model", "state", "reason"), rows))
    return 0
