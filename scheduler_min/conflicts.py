"""Engine and gateway acks -> one status, with the reference's vector-clock guard.

Every message sent to engines for a pipeline version starts a new *iteration*: the clock ticks,
and the set of engines expected to answer is reset to Unknown. An ack counts only if it carries
the current clock value and comes from an engine of the current iteration; stale acks (from
before a rebalance) are dropped. Keyed by the pipeline version uid so two versions of one
pipeline (an upgrade in flight) never invalidate each other's acks. Gateway acks use the same
scheme keyed by pipeline / model name, as gateways serve by name.
"""
from __future__ import annotations

from chainer_api import chainer_pb2, scheduler_pb2

S = scheduler_pb2.PipelineVersionState
OP = chainer_pb2.PipelineUpdateMessage
MS = scheduler_pb2.ModelStatus
MOP = scheduler_pb2.ModelUpdateMessage

UNKNOWN = S.PipelineStatusUnknown


def ack_status(op: int, success: bool) -> S.PipelineStatus:
    """Per-engine status implied by one ack."""
    if op == OP.Create:
        return S.PipelineReady if success else S.PipelineFailed
    if op == OP.Delete:
        return S.PipelineTerminated if success else S.PipelineFailedTerminating
    if op == OP.Rebalance:
        return S.PipelineRebalancing if success else S.PipelineFailed
    if op == OP.Ready:
        return S.PipelineReady if success else S.PipelineFailed
    return UNKNOWN


def model_ack_state(op: int, success: bool) -> MS.ModelState:
    """Per-model-gateway state implied by one ``ModelStatusEvent``."""
    if op == MOP.Create:
        return MS.ModelAvailable if success else MS.ModelFailed
    if op == MOP.Delete:
        return MS.ModelTerminated if success else MS.ModelTerminateFailed
    return MS.ModelStateUnknown


class ConflictResolver:
    def __init__(self) -> None:
        self.clock: dict[str, int] = {}
        self.responses: dict[str, dict[str, int]] = {}

    def new_iteration(self, key: str, servers: list[str]) -> int:
        self.clock[key] = self.clock.get(key, 0) + 1
        self.responses[key] = {s: UNKNOWN for s in servers}
        return self.clock[key]

    def timestamp(self, key: str) -> int:
        return self.clock.get(key, 0)

    def is_outdated(self, key: str, timestamp: int, stream: str) -> bool:
        return timestamp != self.clock.get(key) or stream not in self.responses.get(key, {})

    def update(self, key: str, stream: str, status: int) -> None:
        self.responses.setdefault(key, {})[stream] = status

    def delete(self, key: str) -> None:
        self.clock.pop(key, None)
        self.responses.pop(key, None)

    def settle_pipeline_ack(self, key: str, message) -> tuple[S.PipelineStatus, str] | None:
        """Fold one pipeline ack (an engine's or a gateway's ``PipelineUpdateStatusMessage``) into
        the status of ``key``: None if it is outdated, else the aggregate status and reason (the
        ack's own reason appended when it failed). A settled Terminated forgets the key."""
        u = message.update
        if self.is_outdated(key, u.timestamp, u.stream):
            return None
        self.update(key, u.stream, ack_status(u.op, message.success))
        status, reason = self.aggregate(key, u.op)
        if not message.success and message.reason:
            reason = f"{reason}{message.reason}"
        if status == S.PipelineTerminated:
            self.delete(key)
        return status, reason

    def aggregate(self, key: str, op: int) -> tuple[S.PipelineStatus, str]:
        """(pipeline status, reason) over the current iteration's engines, for an ack of ``op``."""
        streams = self.responses.get(key, {})
        total = len(streams)

        def count(status: int) -> int:
            return sum(1 for v in streams.values() if v == status)

        ready, terminated = count(S.PipelineReady), count(S.PipelineTerminated)
        failed, failed_term = count(S.PipelineFailed), count(S.PipelineFailedTerminating)
        rebalancing, unknown = count(S.PipelineRebalancing), count(UNKNOWN)
        reason = ""
        if ready:
            reason += f"{ready}/{total} ready "
        if terminated:
            reason += f"{terminated}/{total} terminated "
        if failed:
            reason += f"{failed}/{total} failed "
        if failed_term:
            reason += f"{failed_term}/{total} failed terminating"
        if rebalancing:
            reason += f"{rebalancing}/{total} rebalancing "
        if op == OP.Create:
            if failed == total:
                return S.PipelineFailed, reason
            if ready > 0 and unknown == 0:
                return S.PipelineReady, reason
            return S.PipelineCreating, reason
        if op == OP.Delete:
            if failed_term > 0:
                return S.PipelineFailedTerminating, reason
            if terminated == total:
                return S.PipelineTerminated, reason
            return S.PipelineTerminating, reason
        if op in (OP.Rebalance, OP.Ready):
            if failed == total:
                return S.PipelineFailed, reason
            if ready > 0 and rebalancing == 0:
                return S.PipelineReady, reason
            return S.PipelineRebalancing, reason
        return UNKNOWN, "Unknown operation or status"

    def aggregate_model(self, key: str, op: int) -> tuple[MS.ModelState, str]:
        """(model gateway state, reason) over the current iteration's model gateways."""
        streams = self.responses.get(key, {})
        total = len(streams)

        def count(state: int) -> int:
            return sum(1 for v in streams.values() if v == state)

        ready, terminated = count(MS.ModelAvailable), count(MS.ModelTerminated)
        failed, term_failed, unknown = (count(MS.ModelFailed), count(MS.ModelTerminateFailed),
                                        count(MS.ModelStateUnknown))
        reason = ""
        if ready:
            reason += f"{ready}/{total} ready "
        if terminated:
            reason += f"{terminated}/{total} terminated "
        if failed:
            reason += f"{failed}/{total} failed "
        if term_failed:
            reason += f"{term_failed}/{total} terminate failed "
        if op == MOP.Create:
            if failed == total:
                return MS.ModelFailed, reason
            if ready > 0 and unknown == 0:
                return MS.ModelAvailable, reason
            return MS.ModelProgressing, reason
        if op == MOP.Delete:
            # the reference counts ModelFailed here, which a Delete ack never produces
            if failed > 0 or term_failed > 0:
                return MS.ModelTerminateFailed, reason
            if terminated == total:
                return MS.ModelTerminated, reason
            return MS.ModelTerminating, reason
        return MS.ModelStateUnknown, "Unknown operation or status"
