"""Child processes that must not outlive their parent (broker, MLServer, Faust workers, demo stack)."""
from __future__ import annotations

import signal
import threading


def die_with_parent(sig: int = signal.SIGTERM) -> None:  # pragma: no cover - runs in the forked child
    """``preexec_fn``: ask the kernel to send ``sig`` to this child when its parent dies (Linux).

    The signal follows the *thread* that forked the child, so only use it for children started
    from a long-lived thread (normally the main one): see ``pdeathsig_preexec``.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, sig, 0, 0, 0)
    except Exception:
        pass


def pdeathsig_preexec():
    """``die_with_parent`` when called from the main thread, else None (a worker thread may exit
    long before the process, which would kill the child early)."""
    return die_with_parent if threading.current_thread() is threading.main_thread() else None
