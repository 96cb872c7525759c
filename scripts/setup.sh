#!/usr/bin/env bash
# Creates .venv (if missing) and installs tracelet with one extra: `setup.sh demo` or
# `setup.sh test` (the default). Torch comes first, pinned, so nothing pulls a CUDA build;
# constraints.txt pins what the suite was verified with, so pip never backtracks.
#
# A stamp in the venv (the hash of pyproject.toml and constraints.txt) records each extra
# installed: a rerun with nothing changed skips pip and starts in a second. Further arguments
# name extras that include this one (`setup.sh demo test`: an installed test stack will do).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRA="${1:-test}"
[ $# -gt 0 ] && shift
PYTHON="${PYTHON:-python3}"
VENV="${TRACELET_VENV:-.venv}"

fingerprint="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
for installed in "$EXTRA" "$@"; do
  stamp="$VENV/.tracelet-installed-$installed"
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
    echo "setup: $VENV already has .[$installed] for this pyproject.toml and constraints.txt; skipping pip"
    exit 0
  fi
done

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
echo "setup: installing .[$EXTRA] into $VENV (torch 2.13.0 CPU first)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[$EXTRA]"
echo "$fingerprint" > "$VENV/.tracelet-installed-$EXTRA"
