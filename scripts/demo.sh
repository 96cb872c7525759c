#!/usr/bin/env bash
# The first command to run. Installs what the demo needs into .venv (`.[demo]`: the core,
# Dagster, numpy and CPU torch; skipped when already installed), then runs a retraining
# pipeline through Dagster (in-process, no server) on the default store and shows its
# versions, aliases and lineage: as a tree, and as an HTML page it writes.
#
#   bash scripts/demo.sh                          # store: TRACELET_STORE_URI or ~/.tracelet/store
#   bash scripts/demo.sh --store /tmp/demo --seed 8
#
# TRACELET_PYTHON=/path/to/python uses that interpreter as it is (no install);
# TRACELET_DEMO_PAGE=FILE picks where the HTML page goes.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${TRACELET_PYTHON:-}" ]; then
  PY="$TRACELET_PYTHON"
else
  bash scripts/setup.sh demo test
  PY=.venv/bin/python
fi

"$PY" examples/dagster_demo.py "$@"

# The same store for the CLI: --store DIR or --store=DIR among the arguments, else the default.
store=()
previous=""
for arg in "$@"; do
  [ "$previous" = "--store" ] && store=(--store "$arg")
  case "$arg" in --store=*) store=(--store "${arg#--store=}") ;; esac
  previous="$arg"
done
tracelet() { "$PY" -m tracelet_core.cli "$@"; }

echo
echo "\$ tracelet lineage demo/promotion:latest ${store[*]:-}"
tracelet lineage demo/promotion:latest "${store[@]}"
page="${TRACELET_DEMO_PAGE:-${TMPDIR:-/tmp}/tracelet-demo-lineage.html}"
echo
echo "\$ tracelet lineage demo/promotion:latest --format html -o $page ${store[*]:-}"
tracelet lineage demo/promotion:latest --format html -o "$page" "${store[@]}"
echo "lineage page: $page (self-contained; open it in any browser)"
