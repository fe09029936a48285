"""``dataflow model infer``: call one model through the pipeline gateway (``seldon-model: <name>``).

The gateway produces to ``model.<name>.inputs`` and waits on ``model.<name>.outputs`` (the model
gateway serves those topics), so this exercises the same Kafka path a pipeline step uses.
"""
from __future__ import annotations

from dataflow_cli.pipeline_data import add_infer_arguments, add_infer_parser, run_infer


def register(model_subparsers) -> None:
    p = add_infer_parser(model_subparsers, "infer", help="call a model through the pipeline gateway")
    add_infer_arguments(p, "model")
    p.set_defaults(handler=lambda args: run_infer(args, is_pipeline=False))
