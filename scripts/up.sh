#!/usr/bin/env bash
# The README's run command: install, then start the whole stack on loopback (`dataflow up`).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[test]"
exec dataflow up "$@"
