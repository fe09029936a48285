"""The seam between step semantics and runtimes.

A runtime (Faust, a raw confluent-kafka loop, the in-memory test driver) runs a
``CompiledPipeline``: it subscribes to ``source_topics`` in the pipeline version's consumer
group, feeds every record to ``process`` and calls ``punctuate`` on a wall-clock tick (outer-join
expiry, batch windows). Output records carry their destination ``topic``; the runtime picks the
partition with ``dataflow.kafka.partition_for_key`` and produces them, keeping key, headers and
timestamp. Nothing here knows about Kafka clients or Faust.

A pipeline may also offer ``direct_routes``: topic -> a call that turns a consumed record's
fields into its outputs, or says the record needs ``process`` (``DirectSource``, defined with the
steps). A runtime that uses it builds no ``Record`` for the commonest steps (a chain step, a join
straight to its sink); outputs, state and statistics are the same as through ``process``.

A pipeline with joins also says which topics meet in one step (``aligned_topics``): a runtime
hands their records over in record-time order (``dataflow.runtime.alignment``).

A pipeline whose processors keep decoded state in memory between checkpoints (joins do) also has
``flush()``: the runtime calls it before reading the stores' changes for a checkpoint.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from dataflow.records import Record
from dataflow.topology.steps import DirectOutput as DirectOutput
from dataflow.topology.steps import DirectSource as DirectSource


@runtime_checkable
class CompiledPipeline(Protocol):
    pipeline: str          # pipeline name
    version: int
    uid: str

    @property
    def source_topics(self) -> frozenset[str]:
        """Topics to consume (sources and triggers of every step)."""

    @property
    def all_topics(self) -> frozenset[str]:
        """Every topic the pipeline touches (sources, triggers, sinks, error topic): created on start."""

    def process(self, record: Record, now_ms: int) -> list[Record]:
        """Records produced in response to one input record (any number, any sink)."""

    def punctuate(self, now_ms: int) -> list[Record]:
        """Records released by the passage of wall-clock time (outer joins, batch windows)."""


def direct_routes(pipeline: CompiledPipeline) -> Mapping[str, DirectSource]:
    """The pipeline's direct routes, none for a pipeline that offers none."""
    routes: Mapping[str, DirectSource] = getattr(pipeline, "direct_routes", _NONE)
    return routes


_NONE: Mapping[str, DirectSource] = {}


def aligned_topics(pipeline: CompiledPipeline) -> tuple[frozenset[str], ...]:
    """Groups of topics whose records meet in one step (a join, a trigger gate), none for a
    pipeline that says nothing."""
    groups: tuple[frozenset[str], ...] = getattr(pipeline, "aligned_topics", ())
    return groups
