"""Topology compiler and step semantics (spec 3.3-3.8).

``build_topology(msg, settings)`` is the pure compile + validate step (``Topology``, with
``describe()`` / ``mermaid()``); ``compile_pipeline(msg, store_factory=...)`` also instantiates
processors and state stores and returns a ``Pipeline`` implementing ``CompiledPipeline``.
"""
from __future__ import annotations

from chainer_api import chainer_pb2
from dataflow.state.base import StoreFactory
from dataflow.topology.compiled import CompiledPipeline
from dataflow.topology.compiler import build_topology
from dataflow.topology.errors import TopologyError
from dataflow.topology.model import (
    BatchSpec, ChainType, JoinType, SourceNode, StepKind, StepNode, Topology,
)
from dataflow.topology.pipeline import Pipeline
from dataflow.topology.settings import TopologySettings
from dataflow.topology.stats import PipelineStats


def compile_pipeline(msg: chainer_pb2.PipelineUpdateMessage, *, store_factory: StoreFactory,
                     settings: TopologySettings | None = None) -> Pipeline:
    """Compile a Create message into a runnable ``Pipeline`` whose state lives in stores from
    ``store_factory(name)``. Raises ``TopologyError`` for invalid messages."""
    return Pipeline(build_topology(msg, settings), store_factory)


__all__ = [
    "compile_pipeline", "build_topology", "Pipeline", "CompiledPipeline", "Topology", "TopologyError",
    "TopologySettings", "PipelineStats", "StepNode", "SourceNode", "StepKind", "ChainType", "JoinType",
    "BatchSpec",
]
