"""Faust runtime: each pipeline version runs in its own Faust worker process.

Design (see also ``faust_worker`` for the child side):

* ``FaustRunner.start()`` compiles the pipeline once in the engine with in-memory stores (to
  fail fast with a clear reason, learn its topics and whether it has state), ensures every topic
  with ``config.partitions`` and requires equal partition counts (a pipeline's topics share one
  count), creates the state changelog topic of a stateful version
  (``changelog.changelog_topic(group_id)``, compacted, one partition per source partition: the
  same topic and format as ``KafkaRunner``), then spawns
  ``python -m dataflow.runtime.faust_worker`` (with the parent's ``dataflow`` package first on
  its ``PYTHONPATH``) with a JSON ``WorkerSpec`` on stdin and waits for the child's first state
  line: ``RUNNING`` (group joined, partition state restored, start positions resolved) returns,
  ``ERROR`` or an early exit raises ``RunnerError`` with the reason, and so does
  ``config.start_timeout_s`` without either.
* Later state lines are reported through ``on_state``: ``REBALANCING`` <-> ``RUNNING``; a child
  that dies unexpectedly is reported as ``ERROR`` with its exit code.
* ``stop()`` sends SIGTERM (the worker commits and leaves the group), waits, then SIGKILLs.
* One process per version means versions are created and deleted at run time without touching
  each other, each worker has its own consumer group (``dataflow_group_id``: ``latest`` start,
  replicas share it and split partitions), web port and state directory
  (``config.state_dir/<group id>``, one RocksDB per partition; ``clean_state()`` removes it when
  the version is deleted), and the child dies with the engine (PR_SET_PDEATHSIG and a
  parent-pid watchdog). PR_SET_PDEATHSIG fires when the *thread* that spawned the child exits:
  start runners from a long-lived event loop (the engine's), not from a throwaway thread.
* State: partition tasks (``dataflow.runtime.tasks``) with one RocksDB per (version, partition),
  restored from the changelog on assignment and checkpointed at every offset commit, as in
  ``KafkaRunner``; Faust tables are not used. See ``faust_tasks``.
* Processing path: ``"batch"`` (default, ``faust_fastpath``: Faust's fetch loop replaced by one
  that hands each fetched batch to the pipeline, outputs produced as aiokafka batches) or
  ``"agent"`` (Faust's stock agent/stream, ~3-4x more CPU per record); ``processing_path=`` or
  ``DATAFLOW_FAUST_PATH``. Both keep Faust's group handling and commits.
* ``config.exactly_once`` selects Faust's ``exactly_once`` guarantee (Kafka transactions, one
  transactional producer per source partition, committing that partition's input offsets,
  outputs and changelog records together; uses the agent path). aiokafka only speaks InitProducerId
  v0, which the embedded broker rejects (docs/embedded-broker.md): ``faust_eos`` adds v3,
  negotiated only where the broker supports it. If a broker still refuses, ``start()`` raises
  with the broker's error as the reason. The embedded broker cannot show EOS crash consistency
  (it keeps aborted records visible): that test is marked ``real_kafka``.

Costs (measured here): a worker process is ~85 MB RSS, start() takes ~4.5 s (Python + Faust
import, group join ~3 s with a 6 s session timeout on the embedded broker), stop() ~1.2 s.
Throughput of one chain step on this machine: ~21-29k
msg/s per core on the batch path, ~6-8k on the agent path; see benchmarks/FAUST_PROFILE.md.

Public API: ``FaustRunner(msg, config, on_state, *, pipeline_factory="module:callable",
processing_path=None, log_level=None)``; ``pipeline_factory`` names a callable
``(msg, config, store_factory) -> CompiledPipeline`` importable in the worker (default
``dataflow.topology.compile_pipeline`` via ``faust_worker.compile_with_topology``). Properties:
``group_id``, ``changelog_topic`` (None for a stateless version, after start), ``partitions``
(topic -> partition count, after start), ``pid`` (worker process), ``state_dir``.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import signal
import sys
from typing import NoReturn

import dataflow
from chainer_api import chainer_pb2
from dataflow.broker import free_port
from dataflow.kafka import dataflow_group_id, ensure_topics
from dataflow.runtime import changelog as cl
from dataflow.runtime.base import PipelineRunner, RunnerError, RunnerState, RuntimeConfig, StateCallback
from dataflow.runtime.faust_worker import (
    DEFAULT_FACTORY,
    WorkerSpec,
    kafka_settings_to_dict,
    load_factory,
    runtime_config_to_dict,
)
from dataflow.runtime.tasks import probe

log = logging.getLogger(__name__)

REASON_INIT_FAILED = "failed to initialize kafka streams for pipeline"
REASON_TOPICS_FAILED = "kafka streams topic creation error"
REASON_START_FAILED = "kafka streams: failed to start"
LOG_LEVEL_ENV = "DATAFLOW_FAUST_LOG_LEVEL"
PATH_ENV = "DATAFLOW_FAUST_PATH"
STOP_GRACE_S = 15.0


def _with_exception(message: str, exc: BaseException | str) -> str:
    return f"{message} Exception: {exc}"


def _worker_env() -> dict[str, str]:
    """The worker's environment: this one, with the directory of this process's ``dataflow``
    package first on ``PYTHONPATH``, so the worker runs the same code (e.g. a source checkout next
    to an installed copy)."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(dataflow.__file__)))
    paths = [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


class FaustRunner(PipelineRunner):
    """Runs one pipeline version in a Faust worker process."""

    def __init__(self, msg: chainer_pb2.PipelineUpdateMessage, config: RuntimeConfig,
                 on_state: StateCallback | None = None, *, pipeline_factory: str = DEFAULT_FACTORY,
                 log_level: str | None = None, processing_path: str | None = None):
        super().__init__(msg, config, on_state)
        self.pipeline_factory = pipeline_factory
        # "batch" (default, dataflow.runtime.faust_fastpath) or "agent" (Faust's stock stream path)
        self.processing_path = processing_path or os.environ.get(PATH_ENV, "batch")
        self.log_level = log_level or os.environ.get(LOG_LEVEL_ENV, "WARNING")
        self.group_id = dataflow_group_id(msg.uid, config.consumer_prefix, config.namespace)
        self.partitions: dict[str, int] = {}
        self.changelog_topic: str | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._first_state: asyncio.Future[tuple[RunnerState, str]] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def state_dir(self) -> str:
        """The worker's data directory: one RocksDB per assigned partition of a stateful version."""
        return os.path.join(self.config.state_dir, self.group_id)

    async def clean_state(self) -> None:
        """Remove this version's state directory (after ``stop()``, when the pipeline is deleted)."""
        await asyncio.to_thread(shutil.rmtree, self.state_dir, True)

    # -- start -----------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            return
        self._stopping = False
        topics, stateful = await asyncio.to_thread(self._topics_of_pipeline)
        self.changelog_topic = (cl.changelog_topic(self.group_id)
                                if stateful and self.config.state_changelog else None)
        try:
            self.partitions = await asyncio.to_thread(self._ensure_topics, topics)
        except Exception as exc:
            self._fail(_with_exception(REASON_TOPICS_FAILED, exc))
        loop = asyncio.get_running_loop()
        self._first_state = loop.create_future()
        spec = WorkerSpec(
            msg_b64=base64.b64encode(self.msg.SerializeToString()).decode(),
            group_id=self.group_id, partitions=self.partitions, web_port=free_port(),
            parent_pid=os.getpid(), factory=self.pipeline_factory,
            kafka=kafka_settings_to_dict(self.config.kafka), config=runtime_config_to_dict(self.config),
            log_level=self.log_level, path=self.processing_path, changelog_topic=self.changelog_topic)
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dataflow.runtime.faust_worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None,
            env=_worker_env())
        assert self._proc.stdin is not None  # stdin=PIPE
        self._proc.stdin.write(spec.to_json().encode())
        await self._proc.stdin.drain()
        self._proc.stdin.close()
        self._reader = asyncio.create_task(self._read_states(self._proc), name=f"faust-states-{self.uid}")
        try:
            state, reason = await asyncio.wait_for(asyncio.shield(self._first_state),
                                                   self.config.start_timeout_s)
        except TimeoutError:
            await self._terminate()
            self._fail(_with_exception(REASON_START_FAILED,
                                       f"worker not running after {self.config.start_timeout_s}s"))
        except asyncio.CancelledError:  # the engine gave up on this start: leave no worker behind
            await asyncio.shield(self._terminate())
            raise
        if state != RunnerState.RUNNING:
            await self._terminate()
            self._fail(reason or _with_exception(REASON_START_FAILED, state.value))

    def _topics_of_pipeline(self) -> tuple[list[str], bool]:
        """The pipeline's topics and whether it has state (one compile over memory stores)."""
        try:
            factory = load_factory(self.pipeline_factory)
            probed, stateful = probe(lambda store_factory: factory(self.msg, self.config, store_factory))
            topics = sorted(probed.all_topics)
        except Exception as exc:
            self._fail(_with_exception(REASON_INIT_FAILED, exc))
        if not topics:
            self._fail(_with_exception(REASON_INIT_FAILED, "pipeline has no topics"))
        return topics, stateful

    def _ensure_topics(self, topics: list[str]) -> dict[str, int]:
        config = self.config
        partitions = ensure_topics(config.kafka, topics, config.partitions, config.replication_factor,
                                   require_equal=True,
                                   topic_config={"max.message.bytes": str(config.max_message_bytes)})
        if self.changelog_topic:  # one changelog partition per source partition
            n = max(partitions.values(), default=config.partitions)
            created = ensure_topics(config.kafka, [self.changelog_topic], n, config.replication_factor,
                                    topic_config={"max.message.bytes": str(config.max_message_bytes),
                                                  **cl.TOPIC_CONFIG})
            if created[self.changelog_topic] != n:
                raise RuntimeError(f"changelog topic {self.changelog_topic} has "
                                   f"{created[self.changelog_topic]} partitions, the pipeline's topics {n}")
        return partitions

    def _fail(self, reason: str) -> NoReturn:
        self.state = RunnerState.ERROR  # start() failures are raised, not reported
        raise RunnerError(reason)

    # -- child state lines -----------------------------------------------------------------------
    async def _read_states(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                break
            try:
                data = json.loads(line)
                state = RunnerState(data["state"])
                reason = str(data.get("reason", ""))
            except (ValueError, KeyError, TypeError):
                log.warning("faust worker %s: unexpected output %r", self.uid, line[:200])
                continue
            self._on_child_state(state, reason)
        code = await proc.wait()
        if self._first_state is not None and not self._first_state.done():
            self._first_state.set_result(
                (RunnerState.ERROR, _with_exception(REASON_START_FAILED, f"worker exited with code {code}")))
        elif not self._stopping and self.state not in (RunnerState.ERROR, RunnerState.STOPPED):
            self._set_state(RunnerState.ERROR, f"pipeline data streams error: faust worker exited with code {code}")

    def _on_child_state(self, state: RunnerState, reason: str) -> None:
        first = self._first_state
        if first is not None and not first.done():
            if state in (RunnerState.RUNNING, RunnerState.ERROR):
                first.set_result((state, reason))
                if state == RunnerState.RUNNING:
                    self._set_state(state, reason)
            return
        if self._stopping or state == RunnerState.STOPPED:
            return
        self._set_state(state, reason)

    # -- stop ------------------------------------------------------------------------------------
    async def stop(self) -> None:
        if self._proc is None:
            self.state = RunnerState.STOPPED
            return
        if self.state != RunnerState.STOPPED:
            self._set_state(RunnerState.STOPPING)
        await self._terminate()
        self._set_state(RunnerState.STOPPED)

    async def _terminate(self) -> None:
        self._stopping = True
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            try:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
            except ProcessLookupError:
                pass
            except TimeoutError:
                log.warning("faust worker %s did not stop in %ss; killing it", self.uid, STOP_GRACE_S)
                try:
                    proc.kill()
                except ProcessLookupError:
                    pass
                await proc.wait()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5)
            except (TimeoutError, asyncio.CancelledError):
                self._reader.cancel()
