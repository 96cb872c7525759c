#!/usr/bin/env bash
# Installs everything from nothing (see setup.sh), then runs the end-to-end demo on the
# default local store and prints the versions and lineage it made.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/quickstart.py "$@"
