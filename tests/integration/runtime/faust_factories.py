"""Pipeline factories for Faust runtime tests, importable by module path in the worker process."""
from __future__ import annotations

import sys

from dataflow_testing.faust_factories import counting


def _in_faust_worker() -> bool:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec is not None and spec.name == "dataflow.runtime.faust_worker"


def counting_with_broken_restore(msg, config, store_factory):
    """``counting``, in a worker whose changelog cannot be read back (the engine's own compile of
    the pipeline, in the test process, is left alone)."""
    if _in_faust_worker():
        from dataflow.runtime import changelog

        def broken(*args, **kwargs):
            raise changelog.RestoreError("changelog unreadable (test)")

        changelog.restore = broken
    return counting(msg, config, store_factory)
