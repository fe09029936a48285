"""Topology compiler and step semantics (chains, joins, triggers, batching, cycles).

``build_topology(msg, settings)`` is the pure compile + validate step (``Topology``, with
``describe()`` / ``mermaid()``); ``compile_pipeline(msg, store_factory=...)`` also instantiates
processors and state stores and returns a ``Pipeline`` implementing ``CompiledPipeline``.

Per record, a step runs: pipeline-header filter -> chain transform (select, rename, convert) ->
empty drop -> [join] -> [batch] -> [trigger gate] -> header rewrite -> [cycle counter] -> sink.
Output records carry ``topic`` = sink (or the error topic), the input key, rewritten headers and the
input timestamp (join results: max of the parts). Undecodable values are logged, counted in
``Pipeline.stats.malformed`` and replaced by an error record for their key on the error topic
(``seldon-pipeline-errors: <pipeline>``), so the caller waiting on the key is answered at once.

Where we knowingly differ from the reference (Kotlin/Kafka Streams):

* ``passEmptyResponses`` is honoured: such a step forwards a message with no tensors instead of
  dropping it (``TopologySettings.honour_pass_empty_responses=False`` restores the reference).
* Outer joins emit the partial result of a key with missing branches once, when its window closes
  by wall clock (``punctuate``), instead of waiting for stream time to advance (Seldon Core issue #4850).
* Any joins forward each arriving branch on its own and never emit an extra merged record.
* Inner joins keep buffers until they expire, so a key repeated on a branch joins again (as in
  the reference); records are not dropped as "late" - they are matched on ``|dt| <= window`` and
  purged once stream time or wall clock passes the window.
* Outer-combined triggers whose window closes release data still buffered at that tick.
* ``batch.windowMs`` / ``rolling`` are implemented (``dataflow.batching``); batch state lives in a
  store. Batch settings on join steps or steps feeding an ``outputs`` topic are ignored (warning).
"""
from __future__ import annotations

from chainer_api import chainer_pb2
from dataflow.state.base import StoreFactory
from dataflow.topology.compiled import CompiledPipeline
from dataflow.topology.compiler import build_topology
from dataflow.topology.errors import TopologyError
from dataflow.topology.model import (
    BatchSpec,
    ChainType,
    JoinType,
    SourceNode,
    StepKind,
    StepNode,
    Topology,
)
from dataflow.topology.pipeline import Pipeline
from dataflow.topology.settings import TopologySettings
from dataflow.topology.stats import PipelineStats


def compile_pipeline(msg: chainer_pb2.PipelineUpdateMessage, *, store_factory: StoreFactory,
                     settings: TopologySettings | object = None) -> Pipeline:
    """Compile a Create message into a runnable ``Pipeline`` whose state lives in stores from
    ``store_factory(name)``. Raises ``TopologyError`` for invalid messages."""
    return Pipeline(build_topology(msg, settings), store_factory)


__all__ = [
    "BatchSpec",
    "ChainType",
    "CompiledPipeline",
    "JoinType",
    "Pipeline",
    "PipelineStats",
    "SourceNode",
    "StepKind",
    "StepNode",
    "Topology",
    "TopologyError",
    "TopologySettings",
    "build_topology",
    "compile_pipeline",
]
