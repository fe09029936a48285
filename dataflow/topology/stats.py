"""Counters a compiled pipeline keeps about what it consumed, dropped and produced."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class PipelineStats:
    consumed: int = 0          # records offered to a step (after topic routing)
    filtered: int = 0          # skipped: `pipeline` header did not match the source's pipelineName
    malformed: int = 0         # value could not be decoded (logged; an error record sent for its key)
    empty_dropped: int = 0     # dropped: no tensor left after selection (spec 3.3)
    trigger_ignored: int = 0   # trigger records without the trigger tensors
    produced: int = 0          # records emitted to sinks or the error topic
    revisits_exceeded: int = 0 # records turned into max-step-revisits errors (spec 3.8)
    punctuate_errors: int = 0  # punctuations of a step that raised (logged; other steps went on)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
