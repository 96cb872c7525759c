"""Import cost: CPU seconds of ``import tracelet_core`` (and the adapters) in a fresh
interpreter, against ``import mlflow``; the interpreter's own start-up is not counted."""

from __future__ import annotations

import subprocess
import sys

from ._runner import Case, Contender, Sample, Skip, installed

_SCRIPT = "import time; t = time.process_time(); import {module}; print(time.process_time() - t)"


def _import_cpu(module: str) -> Sample:
    if not installed(module):
        raise Skip(f"{module} is not installed")
    out = subprocess.run([sys.executable, "-c", _SCRIPT.format(module=module)], check=True,
                         capture_output=True, text=True)
    return Sample(float(out.stdout.strip().splitlines()[-1]))


def _full_only() -> Sample:
    raise Skip("full runs only (importing MLflow takes seconds)")


def cases(quick: bool) -> list[Case]:
    return [Case(
        key="import", title="import, CPU time in a fresh interpreter",
        contenders=[Contender("import tracelet_core", lambda: _import_cpu("tracelet_core"), tracelet=True),
                    Contender("import mlflow", lambda: _import_cpu("mlflow") if not quick else _full_only())],
        target="light (no SDK imported)", repeats=1 if quick else None)]
