#!/usr/bin/env bash
# Installs everything from nothing (see setup.sh: .[test] into .venv), plus Debian's chromium
# for the lineage-page test, then runs ruff, mypy and the whole test suite (arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
if [ ! -x /usr/bin/chromium ]; then
  echo "test: installing Debian's chromium (headless browser for tests/test_lineage_html.py)"
  as_root=()
  [ "$(id -u)" = 0 ] || as_root=(sudo)
  "${as_root[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq chromium
fi
.venv/bin/python -m ruff check tracelet_core tracelet_prefect tracelet_dagster tests examples
.venv/bin/python -m mypy  # type-check the packages (config in pyproject.toml)
exec .venv/bin/python -m pytest "$@"
