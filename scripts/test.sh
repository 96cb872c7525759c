#!/usr/bin/env bash
# Installs everything from nothing (see setup.sh), then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check tracelet_core tracelet_prefect tracelet_dagster tests examples
.venv/bin/python -m mypy  # type-check the packages (config in pyproject.toml)
exec .venv/bin/python -m pytest "$@"
