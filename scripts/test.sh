#!/usr/bin/env bash
# The README's test command: install the package with test extras, check the environment, lint
# (ruff), check the import contracts (layers, no test support in product code: pyproject.toml), type check (mypy),
# run the default test selection (slow soak tests and real-Kafka-only tests are excluded by pytest's
# addopts; run them with `pytest -m slow`). pytest exit code 5 (no tests collected) fails.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[test]"
python3 -m pip check
ruff check .  # lint: rules in pyproject.toml
lint-imports
python3 -m mypy  # type check: files and strictness per package in pyproject.toml
set +e
python3 -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
