"""``dataflow model load|unload|status|list``: models (name + serving endpoint) on the scheduler.

A model's Open Inference Protocol endpoint is given in its YAML as ``spec.endpoint`` (or a
parameter named ``endpoint``, or a ``grpc://``/``http://`` ``storageUri``), see
``scheduler_min.models``. Data-plane subcommands come from ``dataflow.cli.model_data`` when present.
"""
from __future__ import annotations

from dataflow.cli.config import add_scheduler_flags
from dataflow.cli.pipeline import _common, _help, _register_optional, _table, call, client, read_inputs, to_json

STATE_NAMES = ("ModelProgressing", "ModelAvailable", "ModelFailed", "ModelTerminating", "ModelTerminated",
               "ModelTerminateFailed", "ScheduleFailed")


def register(sub) -> None:
    p = sub.add_parser("model", help="load, unload and watch models")
    ms = p.add_subparsers(dest="model_command", metavar="SUBCOMMAND")
    p.set_defaults(handler=lambda args: _help(p))

    load = ms.add_parser("load", help="load models from Seldon Model YAML",
                         description="Load models from Seldon Model YAML. The scheduler needs each model's "
                                     "Open Inference Protocol endpoint: spec.endpoint (e.g. grpc://127.0.0.1:9500 "
                                     "or http://127.0.0.1:9000), or a spec.parameters entry named endpoint, or a "
                                     "grpc:// / http:// spec.storageUri, or the scheduler's --default-model-endpoint.")
    load.add_argument("-f", "--file-path", dest="files", action="append", required=True,
                      help="YAML file (several documents allowed; '-' = stdin); repeatable")
    _common(load)
    load.set_defaults(handler=run_load)

    unload = ms.add_parser("unload", help="unload a model")
    unload.add_argument("name", nargs="?", help="model name")
    unload.add_argument("-f", "--file-path", dest="files", action="append", help="take the name(s) from YAML")
    _common(unload)
    unload.set_defaults(handler=run_unload)

    status = ms.add_parser("status", help="status of one model (JSON), or of all")
    status.add_argument("name", nargs="?", help="model name (default: all models)")
    status.add_argument("-w", "--wait", default="", metavar="STATE",
                        help=f"wait until the latest version is in STATE, one of {', '.join(STATE_NAMES)}")
    status.add_argument("-t", "--timeout", type=float, default=60.0, help="wait timeout seconds (default 60)")
    status.add_argument("--all-versions", action="store_true", help="show every version, not only the latest")
    _common(status)
    status.set_defaults(handler=run_status)

    lst = ms.add_parser("list", help="list models with their state")
    add_scheduler_flags(lst)
    lst.set_defaults(handler=run_list)

    _register_optional("dataflow.cli.model_data", ms)


def _models(files):
    from dataflow.cli import CliError
    from scheduler_min.manifest import models_from_yaml
    from scheduler_min.validation import PipelineValidationError

    out = []
    for source, text in read_inputs(files):
        try:
            out += models_from_yaml(text, source)
        except PipelineValidationError as exc:
            raise CliError(str(exc)) from None
    return out


def run_load(args) -> int:
    models = _models(args.files)
    with client(args) as c:
        for m in models:
            if args.verbose:
                print(to_json(m))
            call(lambda: c.load_model(m))
    return 0


def run_unload(args) -> int:
    from dataflow.cli import CliError

    names = [args.name] if args.name else []
    if args.files:
        names += [m.meta.name for m in _models(args.files)]
    if not names:
        raise CliError("model unload needs a NAME or -f FILE")
    with client(args) as c:
        for n in names:
            call(lambda: c.unload_model(n))
    return 0


def run_status(args) -> int:
    from dataflow.cli import CliError

    if args.wait and args.wait not in STATE_NAMES:
        raise CliError(f"unknown state {args.wait!r} for -w; use one of {', '.join(STATE_NAMES)}")
    if args.wait and not args.name:
        raise CliError("model status -w needs a model name")
    with client(args) as c:
        if args.wait:
            res = [call(lambda: c.wait_model(args.name, args.wait, args.timeout))]
        else:
            res = call(lambda: c.model_status(args.name, args.all_versions))
    for r in res:
        print(to_json(r))
    return 0


def run_list(args) -> int:
    from chainer_api import scheduler_pb2

    with client(args) as c:
        res = call(lambda: c.model_status())
    rows = []
    for r in res:
        if r.versions and r.versions[-1].state.state != scheduler_pb2.ModelStatus.ModelTerminated:
            st = r.versions[-1].state
            rows.append((r.modelName, scheduler_pb2.ModelStatus.ModelState.Name(st.state), st.reason))
    print(_table(("model", "state", "reason"), rows))
    return 0
