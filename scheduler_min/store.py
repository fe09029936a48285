"""The scheduler's state: pipeline versions with their status, models; saved to disk on each change.

Each pipeline version has two statuses, as in the reference: ``status`` is the dataflow engines'
view (from Chainer acks) and ``gw_status`` the pipeline gateways' (from ``PipelineStatusEvent``
acks). A pipeline can run in the engines yet not be served by any gateway, and callers (the
operator's Ready condition, ``dataflow pipeline status``) need to tell the two apart. Models
likewise carry ``gw_state`` from the model gateways' ``ModelStatusEvent`` acks.

Single-threaded by design: every method runs on the scheduler's asyncio loop, so no locks. The
state file (``<state-dir>/scheduler-state.json``) is rewritten atomically (temp file + rename)
after every change, so a crash leaves either the old or the new state, never half of one.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from chainer_api import scheduler_pb2
from scheduler_min import convert
from scheduler_min.ids import new_uid
from scheduler_min.models import model_endpoint
from scheduler_min.pipeline_version import PipelineVersion
from scheduler_min.validation import PipelineValidationError

log = logging.getLogger(__name__)

S = scheduler_pb2.PipelineVersionState
M = scheduler_pb2.ModelStatus
STATE_FILE = "scheduler-state.json"
FORMAT_VERSION = 1

TERMINATING_STATES = (S.PipelineTerminate, S.PipelineTerminating, S.PipelineTerminated)
# Latest versions the pipeline gateways are (re)told about when the set of gateways changes:
# Terminating ones get their Delete again, Failed ones another Create (the failure may have been
# transient, e.g. Kafka unavailable).
GW_RUNNING_STATES = (S.PipelineCreate, S.PipelineCreating, S.PipelineReady, S.PipelineRebalancing,
                     S.PipelineTerminating, S.PipelineFailed)
# Models whose latest version the model gateways are (re)told about.
MODEL_GW_RUNNING_STATES = (M.ModelCreate, M.ModelProgressing, M.ModelAvailable, M.ModelTerminating, M.ModelFailed)
# Versions the chainer (re)sends on rebalance; Terminating ones get their Delete again.
# PipelineTerminate is normally left at once (Delete sent); it is listed for a restart after a crash
# between marking a version and sending its Delete.
RUNNING_STATES = (S.PipelineCreate, S.PipelineCreating, S.PipelineReady, S.PipelineRebalancing,
                  S.PipelineTerminate, S.PipelineTerminating, S.PipelineFailed)


class NotFoundError(LookupError):
    """Unknown pipeline / model / version (gRPC NOT_FOUND)."""


class StateError(RuntimeError):
    """The state file exists but cannot be read back."""


class ConflictError(RuntimeError):
    """The request clashes with the current state, e.g. unloading a pipeline still terminating."""


@dataclass
class PipelineRecord:
    pv: PipelineVersion
    status: S.PipelineStatus = S.PipelineCreate
    reason: str = ""
    changed: float = field(default_factory=time.time)
    gw_status: S.PipelineStatus = S.PipelineCreate  # the pipeline gateways' view
    gw_reason: str = ""

    @property
    def name(self) -> str:
        return self.pv.name

    def set(self, status: S.PipelineStatus, reason: str) -> None:
        self.status, self.reason, self.changed = status, reason, time.time()

    def set_gw(self, status: S.PipelineStatus, reason: str) -> None:
        self.gw_status, self.gw_reason, self.changed = status, reason, time.time()


@dataclass
class ModelRecord:
    model: scheduler_pb2.Model
    version: int
    state: M.ModelState = M.ModelAvailable
    reason: str = ""
    changed: float = field(default_factory=time.time)
    gw_state: M.ModelState = M.ModelCreate  # the model gateways' view
    gw_reason: str = ""


def _ts(seconds: float):
    t = Timestamp()
    t.FromNanoseconds(int(seconds * 1e9))
    return t


class Store:
    def __init__(self, state_dir: str | None = None) -> None:
        self.state_dir = state_dir
        self.pipelines: dict[str, list[PipelineRecord]] = {}
        self.models: dict[str, list[ModelRecord]] = {}
        self.deleted_models: set[str] = set()
        self.pipeline_listeners: list[Callable[[PipelineRecord], None]] = []
        self.model_listeners: list[Callable[[str], None]] = []
        if state_dir:
            os.makedirs(state_dir, exist_ok=True)
            self._load()

    # -- pipelines -------------------------------------------------------------------------

    def add_pipeline(self, proto: scheduler_pb2.Pipeline) -> PipelineRecord | None:
        """Validate and add a new version; None if it repeats the latest k8s generation."""
        versions = self.pipelines.get(proto.name, [])
        latest = versions[-1] if versions else None
        if latest is not None and (latest.status in TERMINATING_STATES or latest.gw_status in TERMINATING_STATES):
            versions = []  # a re-created pipeline starts again at version 1 (as the reference)
            latest = None
        if (latest is not None and proto.HasField("kubernetesMeta") and proto.kubernetesMeta.generation > 0
                and (latest.pv.k8s_generation or 0) > 0
                and proto.kubernetesMeta.generation == latest.pv.k8s_generation):
            return None
        pv = convert.from_proto(proto, version=(latest.pv.version + 1) if latest else 1, uid=new_uid())
        record = PipelineRecord(pv=pv)
        self.pipelines[pv.name] = versions + [record]
        self._changed(record)
        return record

    def remove_pipeline(self, name: str) -> PipelineRecord:
        """Mark the latest version for termination; raises NotFoundError / ConflictError."""
        versions = self.pipelines.get(name)
        if not versions:
            raise NotFoundError(f"pipeline {name} not found")
        latest = versions[-1]
        if (latest.status == S.PipelineTerminated
                and latest.gw_status in (S.PipelineTerminated, S.PipelineStatusUnknown)):
            raise NotFoundError(f"pipeline {name} not found")
        # Either side still terminating is enough: both are told to terminate together.
        if (latest.status in (S.PipelineTerminating, S.PipelineTerminate)
                or latest.gw_status in (S.PipelineTerminating, S.PipelineTerminate)):
            raise ConflictError(f"pipeline {name} still terminating")
        latest.set(S.PipelineTerminate, "pipeline removed")
        latest.set_gw(S.PipelineTerminate, "pipeline removed")
        self._changed(latest)
        return latest

    def get_version(self, name: str, version: int, uid: str) -> PipelineRecord | None:
        for r in self.pipelines.get(name, []):
            if r.pv.version == version and r.pv.uid == uid:
                return r
        return None

    def set_state(self, record: PipelineRecord, status: S.PipelineStatus, reason: str) -> list[PipelineRecord]:
        """Set a version's status; when it becomes Ready, older live versions are marked Terminate
        and returned (the caller sends them Delete with keepTopics)."""
        record.set(status, reason)
        old: list[PipelineRecord] = []
        if status == S.PipelineReady:
            for r in self.pipelines.get(record.name, []):
                if r.pv.version < record.pv.version and r.status not in TERMINATING_STATES:
                    r.set(S.PipelineTerminate, "")
                    old.append(r)
        self._changed(record)
        for r in old:
            self._changed(r)
        return old

    def set_gw_state(self, record: PipelineRecord, status: S.PipelineStatus, reason: str) -> None:
        """Set a version's pipeline-gateway status. When it becomes Ready, older versions are marked
        Terminate for the gateways without telling them: gateways serve a pipeline by name, so the
        new version's Create already covers the old one, and a Delete would stop serving the name."""
        record.set_gw(status, reason)
        if status == S.PipelineReady:
            for r in self.pipelines.get(record.name, []):
                if r.pv.version < record.pv.version and r.gw_status not in TERMINATING_STATES:
                    r.set_gw(S.PipelineTerminate, "")
        self._changed(record)

    def gw_running_versions(self) -> list[PipelineRecord]:
        """Latest versions the pipeline gateways should be told about again after they change."""
        return [vs[-1] for vs in self.pipelines.values() if vs and vs[-1].gw_status in GW_RUNNING_STATES]

    def running_versions(self) -> list[PipelineRecord]:
        return [r for vs in self.pipelines.values() for r in vs if r.status in RUNNING_STATES]

    def models_not_ready(self, record: PipelineRecord) -> list[str]:
        """Step models that keep the version from serving traffic, each with why (``m (not loaded)``,
        ``m (ModelFailed)``): a step's name is the name of the model it calls, so a step whose model
        the scheduler does not have available would make every request wait for the timeout."""
        missing = []
        for step in record.pv.steps:
            vs = self.models.get(step)
            if not vs or step in self.deleted_models:
                missing.append(f"{step} (not loaded)")
            elif vs[-1].state != M.ModelAvailable:
                missing.append(f"{step} ({M.ModelState.Name(vs[-1].state)})")
        return missing

    def models_ready(self, record: PipelineRecord) -> bool:
        return not self.models_not_ready(record)

    def pipeline_status(self, name: str, all_versions: bool = False) -> scheduler_pb2.PipelineStatusResponse:
        versions = self.pipelines.get(name)
        if not versions:
            raise NotFoundError(f"pipeline {name} not found")
        chosen = versions if all_versions else versions[-1:]
        return scheduler_pb2.PipelineStatusResponse(
            pipelineName=name, versions=[self.with_state(r) for r in chosen])

    def with_state(self, r: PipelineRecord) -> scheduler_pb2.PipelineWithState:
        """The version as callers see it. ``modelsReady`` is computed, never stored, so it follows
        model loads and unloads without touching the pipeline. When the engines run the version
        (PipelineReady) but ``modelsReady`` is false, the models are what keeps it from answering,
        so the reason names them after the engines' reason; in any other state the engines' reason
        is the news and stays as it is."""
        missing = self.models_not_ready(r)
        reason = r.reason
        if missing and r.status == S.PipelineReady:
            note = "models not ready: " + ", ".join(missing)
            reason = f"{r.reason.strip()}; {note}" if r.reason.strip() else note
        return scheduler_pb2.PipelineWithState(
            pipeline=convert.to_proto(r.pv),
            state=scheduler_pb2.PipelineVersionState(
                pipelineVersion=r.pv.version, status=r.status, reason=reason,
                lastChangeTimestamp=_ts(r.changed), modelsReady=not missing,
                pipelineGwStatus=r.gw_status, pipelineGwReason=r.gw_reason))

    # -- models ----------------------------------------------------------------------------

    def add_model(self, model: scheduler_pb2.Model) -> ModelRecord:
        name = model.meta.name
        versions = [] if name in self.deleted_models else self.models.get(name, [])
        self.deleted_models.discard(name)
        record = ModelRecord(model=model, version=(versions[-1].version + 1) if versions else 1,
                             reason="endpoint " + _endpoint(model))
        self.models[name] = versions + [record]
        self._model_changed(name)
        return record

    def remove_model(self, name: str) -> ModelRecord:
        versions = self.models.get(name)
        if not versions or name in self.deleted_models:
            raise NotFoundError(f"model {name} not found")
        latest = versions[-1]
        latest.state, latest.reason, latest.changed = M.ModelTerminated, "model removed", time.time()
        latest.gw_state, latest.gw_reason = M.ModelTerminate, "model removed"
        self.deleted_models.add(name)
        self._model_changed(name)
        return latest

    def latest_model(self, name: str) -> ModelRecord | None:
        versions = self.models.get(name)
        return versions[-1] if versions else None

    def set_model_gw_state(self, name: str, version: int, state: M.ModelState, reason: str) -> ModelRecord | None:
        """Set the model-gateway state of one model version; None if that version is unknown."""
        record = next((r for r in self.models.get(name, []) if r.version == version), None)
        if record is None:
            return None
        record.gw_state, record.gw_reason, record.changed = state, reason, time.time()
        self._model_changed(name)
        return record

    def gw_running_models(self) -> list[str]:
        """Models whose latest version the model gateways should be told about again after they change."""
        return [n for n, vs in self.models.items() if vs and vs[-1].gw_state in MODEL_GW_RUNNING_STATES]

    def model_status(self, name: str, all_versions: bool = False) -> scheduler_pb2.ModelStatusResponse:
        versions = self.models.get(name)
        if not versions:
            raise NotFoundError(f"model {name} not found")
        chosen = versions if all_versions else versions[-1:]
        out = scheduler_pb2.ModelStatusResponse(modelName=name, deleted=name in self.deleted_models)
        for r in chosen:
            v = out.versions.add(version=r.version, serverName=r.model.modelSpec.server or "external")
            v.state.state = r.state
            v.state.reason = r.reason
            v.state.availableReplicas = 1 if r.state == M.ModelAvailable else 0
            v.state.lastChangeTimestamp.CopyFrom(_ts(r.changed))
            v.state.modelGwState = r.gw_state
            v.state.modelGwReason = r.gw_reason
            if r.model.meta.HasField("kubernetesMeta"):
                v.kubernetesMeta.CopyFrom(r.model.meta.kubernetesMeta)
            v.modelDefn.CopyFrom(r.model)
        return out

    # -- change notification and persistence ----------------------------------------------

    def _changed(self, record: PipelineRecord) -> None:
        self.save()
        for fn in list(self.pipeline_listeners):
            try:
                fn(record)
            except Exception:  # a broken subscriber must not break the store
                log.exception("pipeline listener failed")

    def _model_changed(self, name: str) -> None:
        self.save()
        for fn in list(self.model_listeners):
            try:
                fn(name)
            except Exception:
                log.exception("model listener failed")

    def save(self) -> None:
        if not self.state_dir:
            return
        data = {
            "format": FORMAT_VERSION,
            "pipelines": {name: [{"pipeline": _b64(convert.to_proto(r.pv)), "status": r.status,
                                  "reason": r.reason, "changed": r.changed,
                                  "gw_status": r.gw_status, "gw_reason": r.gw_reason} for r in vs]
                          for name, vs in self.pipelines.items()},
            "models": {name: {"deleted": name in self.deleted_models,
                              "versions": [{"model": _b64(r.model), "version": r.version, "state": r.state,
                                            "reason": r.reason, "changed": r.changed,
                                            "gw_state": r.gw_state, "gw_reason": r.gw_reason} for r in vs]}
                       for name, vs in self.models.items()},
        }
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.state_dir)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(self.state_dir, STATE_FILE))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _load(self) -> None:
        assert self.state_dir is not None  # called only with a state directory
        path = os.path.join(self.state_dir, STATE_FILE)
        if not os.path.exists(path):
            return
        try:
            with open(path) as f:
                data = json.load(f)
            self._restore(data)
        except (OSError, ValueError, KeyError, TypeError, DecodeError) as exc:
            raise StateError(f"cannot read scheduler state {path}: {exc}; fix or move the file away "
                             f"to start empty") from exc
        log.info("restored %d pipelines and %d models from %s", len(self.pipelines), len(self.models), path)

    def _restore(self, data: dict) -> None:
        for name, vs in data.get("pipelines", {}).items():
            records = []
            for v in vs:
                proto = scheduler_pb2.Pipeline.FromString(base64.b64decode(v["pipeline"]))
                try:
                    pv = convert.from_proto(proto)
                except PipelineValidationError as exc:  # pragma: no cover - only if rules tightened
                    log.error("dropping stored pipeline %s:%s: %s", name, proto.version, exc)
                    continue
                # State saved before gateway acks existed: take the engines' status for the gateways' too.
                records.append(PipelineRecord(pv=pv, status=v["status"], reason=v["reason"], changed=v["changed"],
                                              gw_status=v.get("gw_status", v["status"]),
                                              gw_reason=v.get("gw_reason", "")))
            if records:
                self.pipelines[name] = records
        for name, entry in data.get("models", {}).items():
            self.models[name] = [ModelRecord(model=scheduler_pb2.Model.FromString(base64.b64decode(v["model"])),
                                             version=v["version"], state=v["state"], reason=v["reason"],
                                             changed=v["changed"],
                                             gw_state=v.get("gw_state",
                                                            M.ModelAvailable if v["state"] == M.ModelAvailable
                                                            else M.ModelTerminated),
                                             gw_reason=v.get("gw_reason", "")) for v in entry["versions"]]
            if entry.get("deleted"):
                self.deleted_models.add(name)


def _b64(msg) -> str:
    return base64.b64encode(msg.SerializeToString()).decode()


def _endpoint(model: scheduler_pb2.Model) -> str:
    return model_endpoint(model) or ""
