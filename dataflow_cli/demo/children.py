"""Child processes that cannot outlive the process that started them.

``dataflow up`` runs every component as a child. Each child gets its own session, so a Ctrl-C
in the terminal reaches only ``dataflow up``, which then stops the children itself in reverse
start order. On Linux each child also asks the kernel for SIGTERM when its parent dies
(``PR_SET_PDEATHSIG``), so even ``kill -9`` of ``dataflow up`` leaves no orphans behind.
(The signal follows the *thread* that forked the child: start children from a long-lived
thread, normally the main one.)
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from dataflow.processes import die_with_parent, stop_process, tail


class ChildProcess:
    """One supervised command whose output goes to ``log_path``."""

    def __init__(self, name: str, argv: list[str], log_path: Path, *, env: dict | None = None,
                 cwd: str | None = None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> ChildProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd,
                                         start_new_session=True, preexec_fn=die_with_parent)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 10.0) -> int | None:
        proc, self.proc = self.proc, None
        return stop_process(proc, timeout)

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log_path, lines)

    def wait_until(self, check, timeout: float, what: str, interval: float = 0.1) -> None:
        """Poll ``check()`` until true; raise ``ChildFailed`` if the child dies or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise ChildFailed(self, f"exited (code {self.exit_code()}) before {what}")
            if check():
                return
            if time.monotonic() > deadline:
                raise ChildFailed(self, f"not {what} within {timeout:g}s")
            time.sleep(interval)


class ChildFailed(RuntimeError):
    """A child died or did not become ready; the message carries its log tail."""

    def __init__(self, child: ChildProcess, problem: str):
        self.child = child
        log = child.log_tail()
        super().__init__(f"{child.name} {problem} (log {child.log_path})"
                         + (f"; log tail:\n{log}" if log else ""))
