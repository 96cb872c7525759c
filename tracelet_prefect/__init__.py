"""tracelet for Prefect: tasks whose return values become versioned artifacts.

- ``tracelet_task(...)``: a decorator that makes a real Prefect task; its return value is logged
  as one version (producer: the flow run and task run), ``LoggedArtifact`` arguments are loaded
  to their values and recorded as inputs, and the task returns the ``LoggedArtifact``.
- ``log_artifact``: a plain Prefect task that logs a hand-built ``TraceletArtifact`` (or moves
  aliases onto a logged version).
- ``load_artifact``: a plain Prefect task that loads ``name:alias`` into a value; a tracelet
  task that receives that value records the version as its input (lineage from the task graph).
- ``reproduce(ref, flow)``: the flow run again with its recorded parameters, the task that
  produced ``ref`` loading the input versions it recorded; a ``ReproduceReport`` says whether
  the result is identical.

Every new version (and every alias set) shows up in the Prefect UI as a markdown artifact and
emits the event ``tracelet.artifact.logged`` (resource ``tracelet.artifact.<name>``), plus an
asset materialization event (``tracelet://<name>``) for Prefect's asset lineage.

Importing this package imports no Prefect: the names above load on first use, so
``import tracelet_prefect`` stays as light as ``import tracelet_core``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracelet_core._lazy import lazy_exports

if TYPE_CHECKING:
    from ._reproduce import reproduce
    from ._tasks import load_artifact, log_artifact, tracelet_task

__all__ = ["load_artifact", "log_artifact", "tracelet_task", "reproduce"]

_EXPORTS = {
    "load_artifact": "._tasks",
    "log_artifact": "._tasks",
    "tracelet_task": "._tasks",
    "reproduce": "._reproduce",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
