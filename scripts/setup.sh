#!/usr/bin/env bash
# Creates .venv (if missing) and installs tracelet with its test dependencies.
# Torch comes first, pinned, so nothing pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
# constraints.txt pins what the suite was verified with, so pip never backtracks.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
