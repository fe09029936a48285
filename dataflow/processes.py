"""Child processes that must not outlive their parent (broker, MLServer, Faust workers, demo stack):
starting them tied to the parent, stopping their whole process group, reading their log tails."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any


def die_with_parent(sig: int = signal.SIGTERM) -> None:  # pragma: no cover - runs in the forked child
    """``preexec_fn``: ask the kernel to send ``sig`` to this child when its parent dies (Linux).

    The signal follows the *thread* that forked the child, so only use it for children started
    from a long-lived thread (normally the main one): see ``pdeathsig_preexec``.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, sig, 0, 0, 0)
    except Exception:
        pass


def pdeathsig_preexec() -> Callable[[], None] | None:
    """``die_with_parent`` when called from the main thread, else None (a worker thread may exit
    long before the process, which would kill the child early)."""
    return die_with_parent if threading.current_thread() is threading.main_thread() else None


def name_this_thread(name: str) -> None:
    """Give the calling thread an OS-visible name (``top -H``, ``/proc/<pid>/task/*/comm``,
    py-spy), so an engine's threads can be told apart: Python names its threads only for itself."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME; the kernel keeps 15 bytes
    except OSError:
        pass


def return_free_memory() -> None:
    """Give the allocator's free pages back to the system (glibc keeps freed heap otherwise, so
    an engine's RSS would stay at its peak after its pipelines are unloaded)."""
    if sys.platform != "linux":
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def signal_group(proc: subprocess.Popen[Any], sig: int) -> None:
    """Signal the child's whole process group (it leads its own session)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float) -> int | None:
    """SIGTERM the child's group, wait up to ``timeout``, then SIGKILL. Returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
            proc.wait()
    signal_group(proc, signal.SIGKILL)  # anything the child left in its group
    return proc.returncode


def tail(path: Path | None, lines: int = 30) -> str:
    """The last ``lines`` lines of a child's log file ("" if there is none)."""
    if path is None or not path.exists():
        return ""
    with open(path, errors="replace") as handle:
        return "".join(deque(handle, maxlen=lines))
