"""Pipeline lifecycle: Create / Delete tasks per pipeline version uid, runner state reports.

Ordering rules (the reference engine's): one conflated queue per uid -- a newer task replaces one that has
not started yet ("latest wins") -- processed sequentially per uid, different uids in parallel
(bounded like the reference's ``pipeline.ctlops.threads``).
"""
from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from chainer_api import chainer_pb2
from dataflow.kafka import delete_topics
from dataflow.processes import return_free_memory
from dataflow.runtime.base import PipelineRunner, RunnerError, RunnerState, RuntimeConfig, StateCallback

log = logging.getLogger(__name__)

Msg = chainer_pb2.PipelineUpdateMessage

REASON_READY = "pipeline data streams: ready"
REASON_REBALANCING = "pipeline data streams: rebalancing"
REASON_REMOVED = "pipeline removed"
REASON_TOPIC_DELETION = "kafka streams topic deletion error"


def reason_state_error(state: RunnerState) -> str:
    return f"pipeline data streams error: kafka streams state: {state.value}"


def reason_task_failed(op: str, exc: BaseException) -> str:
    return f"Pipeline {op} operation failed: {exc}"


RunnerFactory = Callable[[Msg, RuntimeConfig, StateCallback], PipelineRunner]
# ack(answered message, op, success, reason)
AckFn = Callable[[Msg, Msg.PipelineOperation, bool, str], Coroutine[Any, Any, object]]


@dataclass
class _Running:
    runner: PipelineRunner
    create: Msg                   # latest Create for this uid: its timestamp is echoed in state acks
    started: bool = False         # initial RUNNING is answered by the Create ack, not a Ready
    stopping: bool = False
    last_state: RunnerState = RunnerState.STARTING


@dataclass
class _UidQueue:
    pending: Msg | None = None
    task: asyncio.Task[None] | None = None


@dataclass
class PipelineManager:
    runtime_config: RuntimeConfig
    runner_factory: RunnerFactory
    ack: AckFn
    parallelism: int = 8
    running: dict[str, _Running] = field(default_factory=dict)
    _queues: dict[str, _UidQueue] = field(default_factory=dict)
    _background: set[asyncio.Task[object]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.parallelism)

    # ---------------------------------------------------------------- intake

    def submit(self, msg: Msg) -> None:
        """Queue a message from the scheduler (called on the event loop, never blocks)."""
        if msg.op not in (Msg.Create, Msg.Delete):
            log.warning("ignoring pipeline update %s for %s (%s)", msg.op, msg.pipeline, msg.uid)
            return
        queue = self._queues.setdefault(msg.uid, _UidQueue())
        if queue.pending is not None:
            log.info("pipeline %s (%s): op %d replaced by newer op %d before it started",
                     msg.pipeline, msg.uid, queue.pending.op, msg.op)
        queue.pending = msg
        if queue.task is None:
            queue.task = asyncio.create_task(self._drain(msg.uid, queue), name=f"pipeline-{msg.uid}")

    async def _drain(self, uid: str, queue: _UidQueue) -> None:
        try:
            while queue.pending is not None:
                msg, queue.pending = queue.pending, None
                await self._handle(msg)
        finally:
            queue.task = None
            if queue.pending is None and self._queues.get(uid) is queue:
                del self._queues[uid]

    async def _handle(self, msg: Msg) -> None:
        op = "create" if msg.op == Msg.Create else "delete"
        try:
            if msg.op == Msg.Create:
                await self._create(msg)
            else:
                async with self._slots:
                    await self._delete(msg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("pipeline %s %s failed", msg.pipeline, op)
            await self.ack(msg, msg.op, False, reason_task_failed(op, exc))

    # ---------------------------------------------------------------- tasks

    async def _create(self, msg: Msg) -> None:
        async with self._slots:   # bounds the work of starting, not the wait for the group
            current = self.running.get(msg.uid)
            if current is not None and current.runner.state in (RunnerState.RUNNING, RunnerState.REBALANCING):
                current.create = msg
                await self.ack(msg, Msg.Create, True, REASON_READY)
                return
            if current is not None:  # stopped or failed: start afresh
                await self._stop_entry(msg.uid)
            entry = _Running(runner=None, create=msg)  # type: ignore[arg-type]
            entry.runner = self.runner_factory(msg, self.runtime_config, self._state_callback(msg.uid, entry))
            self.running[msg.uid] = entry
            log.info("starting pipeline %s v%d (%s)", msg.pipeline, msg.version, msg.uid)
            if not await self._starting(msg, entry, entry.runner.launch):
                return
        if not await self._starting(msg, entry, entry.runner.wait_running):
            return
        entry.started = True
        entry.last_state = RunnerState.RUNNING
        await self.ack(msg, Msg.Create, True, REASON_READY)

    async def _starting(self, msg: Msg, entry: _Running, step: Callable[[], Awaitable[None]]) -> bool:
        """Run one phase of a start; on failure stop the entry and nack (RunnerError) or re-raise."""
        try:
            await step()
        except RunnerError as exc:
            await self._stop_entry(msg.uid, entry)
            await self.ack(msg, Msg.Create, False, str(exc))
            return False
        except Exception:
            await self._stop_entry(msg.uid, entry)
            raise
        return True

    async def _delete(self, msg: Msg) -> None:
        entry = self.running.get(msg.uid)
        await self._stop_entry(msg.uid)
        clean_state = getattr(entry.runner, "clean_state", None) if entry is not None else None
        if clean_state is not None:  # a deleted version's local state is never needed again
            try:
                await clean_state()
            except Exception:
                log.exception("removing state of pipeline %s (%s) failed", msg.pipeline, msg.uid)
        topics = {t.topicName for u in msg.updates for t in (*u.sources, u.sink) if t.topicName}
        if topics:
            try:
                await asyncio.to_thread(delete_topics, self.runtime_config.kafka, topics)
            except Exception as exc:
                await self.ack(msg, Msg.Delete, False, f"{REASON_TOPIC_DELETION} Exception: {exc}")
                return
        if not self.running:  # the last version is gone: let the process shrink back
            gc.collect()
            return_free_memory()
        # An unknown uid is acked too (the reference stays silent and can leave it Terminating).
        await self.ack(msg, Msg.Delete, True, REASON_REMOVED)

    async def _stop_entry(self, uid: str, entry: _Running | None = None) -> None:
        entry = entry or self.running.get(uid)
        if entry is None:
            return
        entry.stopping = True
        if self.running.get(uid) is entry:
            del self.running[uid]
        try:
            await entry.runner.stop()
        except Exception:
            log.exception("stopping pipeline %s failed", uid)

    # ---------------------------------------------------------------- async state reports

    def _state_callback(self, uid: str, entry: _Running) -> StateCallback:
        def on_state(state: RunnerState, reason: str) -> None:
            if not entry.started or entry.stopping:
                return
            previous, entry.last_state = entry.last_state, state
            create = entry.create
            if state == RunnerState.REBALANCING and previous == RunnerState.RUNNING:
                self._spawn(self.ack(create, Msg.Rebalance, True, REASON_REBALANCING))
            elif state == RunnerState.RUNNING and previous == RunnerState.REBALANCING:
                self._spawn(self.ack(create, Msg.Ready, True, REASON_READY))
            elif state not in (RunnerState.RUNNING, RunnerState.REBALANCING):
                log.error("pipeline %s (%s) entered %s: %s", create.pipeline, uid, state.value, reason)
                self._spawn(self.ack(create, Msg.Ready, False, reason_state_error(state)))
        return on_state

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---------------------------------------------------------------- shutdown

    async def stop_all(self) -> None:
        """Cancel queued work and stop every runner concurrently (engine shutdown)."""
        for queue in list(self._queues.values()):
            queue.pending = None
            if queue.task is not None:
                queue.task.cancel()
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(self._stop_entry(uid) for uid in list(self.running)), return_exceptions=True)
        if self._background:
            await asyncio.wait(list(self._background), timeout=5)
