"""MLServer runs only as a subprocess: nothing in the package or the tests imports it
(mlserver and tritonclient.grpc register the same protobuf package and cannot share a process)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("dataflow", "chainer_api", "gateways", "scheduler_min", "dataflow_cli", "dataflow_testing", "benchmarks",
           "tests")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_module_imports_mlserver():
    offenders = []
    for folder in SCANNED:
        for path in (ROOT / folder).rglob("*.py"):
            if any(n == "mlserver" or n.startswith("mlserver.") or n.startswith("mlserver_")
                   for n in imported_modules(path)):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
