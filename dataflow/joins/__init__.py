"""Windowed joins and trigger gating over ``StateStore``s. Values are opaque bytes;
steps choose how branch values merge."""
from dataflow.joins.stream_join import JoinResult, StreamJoin
from dataflow.joins.trigger_gate import TriggerGate
from dataflow.joins.types import JoinType

__all__ = ["JoinResult", "JoinType", "StreamJoin", "TriggerGate"]
