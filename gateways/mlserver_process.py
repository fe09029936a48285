"""Run MLServer as a child process serving a folder of sample models (the demo and e2e tests).

MLServer must never be imported here: it registers the protobuf package ``inference`` that
``tritonclient.grpc`` also registers, so the two cannot share a process. We only write its
``settings.json``, start ``mlserver start <folder>`` and talk to it over HTTP.

The working folder is a fresh temporary directory holding ``settings.json`` plus symlinks to
the selected model folders and to any shared runtime modules (``*.py``) of the models folder,
so the source tree is never written to (except for a model's one-off ``train.py`` artifact).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from dataflow.broker import free_port
from dataflow.processes import die_with_parent as request_parent_death_signal
from dataflow.processes import stop_process, tail

SETTINGS_FILE = "model-settings.json"


class MLServerError(RuntimeError):
    """MLServer could not be prepared, started or did not get its models ready."""


def default_models_dir() -> Path:
    """``examples/models`` of this source tree (the sample models)."""
    return Path(__file__).resolve().parent.parent / "examples" / "models"


def mlserver_command() -> list[str]:
    """The ``mlserver`` console script of the running interpreter's environment."""
    script = Path(sys.executable).parent / "mlserver"
    if script.exists():
        return [str(script)]
    found = shutil.which("mlserver")
    if found:
        return [found]
    raise MLServerError("the `mlserver` command was not found next to "
                        f"{sys.executable} nor on PATH; pip install mlserver")


def discover_models(models_dir: Path) -> dict[str, Path]:
    """Model name (from model-settings.json, else the folder name) -> its folder."""
    found: dict[str, Path] = {}
    for settings_path in sorted(models_dir.glob(f"*/{SETTINGS_FILE}")):
        try:
            name = json.loads(settings_path.read_text()).get("name") or settings_path.parent.name
        except (OSError, json.JSONDecodeError) as exc:
            raise MLServerError(f"cannot read {settings_path}: {exc}") from exc
        found[name] = settings_path.parent
    return found


def prepare_artifact(folder: Path) -> None:
    """Run the folder's ``train.py`` when the model's ``parameters.uri`` file is missing."""
    settings = json.loads((folder / SETTINGS_FILE).read_text())
    uri = (settings.get("parameters") or {}).get("uri")
    if not uri or (folder / uri).exists() or not (folder / "train.py").exists():
        return
    result = subprocess.run([sys.executable, str(folder / "train.py")], capture_output=True,
                            text=True, timeout=300)
    if result.returncode != 0 or not (folder / uri).exists():
        raise MLServerError(f"{folder / 'train.py'} failed to write {uri}: "
                            f"{(result.stderr or result.stdout).strip()[-2000:]}")


class MLServerProcess:
    """One MLServer child serving ``models`` (default: all) from ``models_dir``.

    ``start(timeout)`` returns once every selected model answers ready on
    ``/v2/models/<name>/ready``; a server that dies or times out raises ``MLServerError`` with
    the tail of its log. Use as a context manager or call ``stop()``.

    ``die_with_parent`` (default) makes the kernel SIGTERM MLServer when the *thread* that
    started it exits (Linux ``PR_SET_PDEATHSIG``): start it from a long-lived thread (normally
    the main one), or pass ``die_with_parent=False`` and make sure ``stop()`` runs.
    """

    def __init__(self, models_dir: str | os.PathLike | None = None, *, http_port: int | None = None,
                 grpc_port: int | None = None, models: list[str] | None = None,
                 host: str = "127.0.0.1", log_path: str | os.PathLike | None = None,
                 die_with_parent: bool = True):
        self.models_dir = Path(models_dir) if models_dir else default_models_dir()
        self.host = host
        self.http_port = http_port or free_port(host)
        self.grpc_port = grpc_port or free_port(host)
        self.requested_models = list(models) if models is not None else None
        self.log_path = Path(log_path) if log_path else None
        self.die_with_parent = die_with_parent
        self.models: list[str] = []
        self.workdir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._log_file: BinaryIO | None = None

    # Endpoints -------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.grpc_address}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # Lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> MLServerProcess:
        if self._proc is not None:
            return self
        selected = self._select_models()
        self.workdir = Path(tempfile.mkdtemp(prefix="dataflow-mlserver-"))
        try:
            self._write_workdir(selected)
            log_target = self.log_path or (self.workdir / "mlserver.log")
            self._log_file = open(log_target, "ab")
            self._log_target = Path(log_target)
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(self.workdir)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
            env.setdefault("PYTHONUNBUFFERED", "1")
            self._proc = subprocess.Popen(
                mlserver_command() + ["start", str(self.workdir)], cwd=str(self.workdir),
                stdout=self._log_file, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
                preexec_fn=request_parent_death_signal if self.die_with_parent else None)
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        stop_process(proc, timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.workdir is not None:  # a caller-chosen log_path lives outside it and survives
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None

    def log_tail(self, lines: int = 30) -> str:
        return tail(getattr(self, "_log_target", None), lines)

    def __enter__(self) -> MLServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # Internals -------------------------------------------------------------------------------
    def _select_models(self) -> dict[str, Path]:
        if not self.models_dir.is_dir():
            raise MLServerError(f"models folder {self.models_dir} does not exist")
        available = discover_models(self.models_dir)
        if self.requested_models is None:
            selected = available
        else:
            unknown = [m for m in self.requested_models if m not in available]
            if unknown:
                raise MLServerError(f"unknown model(s) {unknown} in {self.models_dir}; "
                                    f"available: {sorted(available)}")
            selected = {m: available[m] for m in self.requested_models}
        if not selected:
            raise MLServerError(f"no */{SETTINGS_FILE} found under {self.models_dir}")
        self.models = sorted(selected)
        return selected

    def _write_workdir(self, selected: dict[str, Path]) -> None:
        assert self.workdir is not None
        for folder in selected.values():
            prepare_artifact(folder)
            (self.workdir / folder.name).symlink_to(folder.resolve(), target_is_directory=True)
        for module in self.models_dir.glob("*.py"):  # shared runtimes, e.g. sample_runtimes.py
            (self.workdir / module.name).symlink_to(module.resolve())
        settings = {"host": self.host, "http_port": self.http_port, "grpc_port": self.grpc_port,
                    "metrics_endpoint": None, "parallel_workers": 0}
        (self.workdir / "settings.json").write_text(json.dumps(settings, indent=2))

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(self.models)
        while pending:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise MLServerError(f"MLServer exited (code {code}) before models "
                                    f"{pending} were ready; log tail:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise MLServerError(f"MLServer models {pending} not ready on {self.http_url} "
                                    f"within {timeout}s; log tail:\n{self.log_tail()}")
            pending = [m for m in pending if not self._model_ready(m)]
            if pending:
                time.sleep(0.1)

    def _model_ready(self, name: str) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/models/{name}/ready", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False
