"""The Prefect run a tracelet task is part of, as the core sees it, and lineage from the graph.

``TaskRun`` is read once, in the process that runs the task, from ``TaskRunContext``:

- the producer ``RunInfo(orchestrator="prefect", run_id=<flow run id>, step=<task run id>,
  name=<flow name>)`` (a task run outside any flow uses its own id as ``run_id`` and the task's
  name), whose ``extra`` names the task (``task_name``) and holds the flow run's JSON-able
  ``parameters`` when the flow run's context is at hand (not in another process, such as a Dask
  worker: then ``name`` is the task's too): what ``reproduce`` runs the flow again with;
- the upstream task runs of each parameter (``task_run.task_inputs``), so a value that a
  ``load_artifact`` task produced can be traced back to the version it loaded: that task records
  what it read (``ArtifactStore.record_consumption``) under its own ``RunInfo``, and the
  consumer looks those runs up in the catalog, from any process that shares the store.

Prefect finds those upstream runs by ``id()`` of the values, and for plain ``dict``, ``list``,
``str``... (no weak reference) a freed object's address can match a new one. So an edge through a
plain value is recorded only when it is confirmed: the value (or one inside it) is an object that
upstream run loaded, by identity where Prefect could verify it (a weak reference) and otherwise
by content (same type, and the core's ``serializes_to`` finds it gives the bytes of the object
that run loaded).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect.client.schemas.objects import TaskRunResult
from prefect.context import FlowRunContext, TaskRunContext
from prefect.utilities.engine import get_state_for_result

from tracelet_core import ArtifactStore, LoggedArtifact, RunInfo
from tracelet_core._values import serializes_to

ORCHESTRATOR = "prefect"
#: ``task_inputs`` keys that are not data flowing into a parameter.
_NOT_DATA = frozenset({"__parents__", "wait_for"})


def run_info(flow_run_id: Any, task_run_id: Any, task_name: str | None = None,
             task_run_name: str | None = None, code_version: str | None = None,
             flow: tuple[str, dict[str, Any]] | None = None) -> RunInfo:
    """The ``RunInfo`` of one Prefect task run (the same everywhere it is computed): ``name`` is
    the flow's (``flow``: its name and the run's parameters, when known), else the task's; the
    task's name and the run's parameters are in ``extra`` (descriptive, left out of its identity)."""
    step = str(task_run_id)
    extra: dict[str, Any] = {"task_name": task_name} if task_name else {}
    if task_run_name:
        extra["task_run_name"] = task_run_name
    name = task_name
    if flow is not None:
        name, extra["parameters"] = flow
    return RunInfo(orchestrator=ORCHESTRATOR, run_id=str(flow_run_id) if flow_run_id else step, step=step,
                   name=name, code_version=code_version, extra=extra)


@dataclass(frozen=True)
class TaskRun:
    """What a tracelet task needs to know about the Prefect task run executing it."""

    task_name: str
    flow_run_id: str | None = None
    task_run_id: str | None = None
    task_run_name: str | None = None
    code_version: str | None = None
    retries: int = 0
    #: parameter name -> ids of the task runs whose results flowed into it
    upstream: dict[str, list[str]] = field(default_factory=dict)
    #: the flow's name and the flow run's JSON-able parameters, when its context is at hand
    flow: tuple[str, dict[str, Any]] | None = None

    @classmethod
    def current(cls, fallback_name: str) -> TaskRun:
        """The running task run, or an empty one when the function is called outside Prefect
        (``task.fn(...)``): then nothing is published and the version has no producer."""
        ctx = TaskRunContext.get()
        if ctx is None:
            return cls(task_name=fallback_name)
        task_run = ctx.task_run
        upstream: dict[str, list[str]] = {}
        for parameter, inputs in (task_run.task_inputs or {}).items():
            if parameter in _NOT_DATA:
                continue
            ids = [str(item.id) for item in inputs if isinstance(item, TaskRunResult)]
            if ids:
                upstream[parameter] = ids
        return cls(task_name=ctx.task.name,
                   flow_run_id=str(task_run.flow_run_id) if task_run.flow_run_id else None,
                   task_run_id=str(task_run.id), task_run_name=task_run.name,
                   code_version=ctx.task.version, retries=ctx.task.retries or 0, upstream=upstream,
                   flow=_flow_run())

    @property
    def in_prefect(self) -> bool:
        return self.task_run_id is not None

    @property
    def producer(self) -> RunInfo | None:
        if self.task_run_id is None:
            return None
        return run_info(self.flow_run_id, self.task_run_id, self.task_name, self.task_run_name,
                        self.code_version, self.flow)

    def confirmed_inputs(self, store: ArtifactStore, values: Mapping[str, Sequence[Any]]) -> list[str]:
        """Refs of the versions that upstream runs loaded into these parameter values
        (``values``: parameter -> the plain objects it holds), each edge confirmed."""
        refs: dict[str, None] = {}
        for parameter, objects in values.items():
            if not objects:
                continue
            for task_run_id in self.upstream.get(parameter, ()):
                for version in store.consumed(run_info(self.flow_run_id, task_run_id)):
                    if any(_holds(obj, version, task_run_id) for obj in objects):
                        refs[version.ref] = None
        return list(refs)


def _flow_run() -> tuple[str, dict[str, Any]] | None:
    """The running flow's name and its run's parameters that JSON holds as they are."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow is None:
        return None
    return ctx.flow.name, {name: value for name, value in (ctx.parameters or {}).items() if _json_able(value)}


#: A parameter whose JSON is longer is not recorded (it would be copied into every version).
MAX_PARAMETER_JSON = 64 * 1024


def _json_able(value: Any) -> bool:
    """True when ``value`` goes through JSON and comes back equal (no tuples, no NaN, no
    ``SecretStr``), in at most ``MAX_PARAMETER_JSON`` characters."""
    try:
        text = json.dumps(value, allow_nan=False)
        return len(text) <= MAX_PARAMETER_JSON and bool(json.loads(text) == value)
    except (TypeError, ValueError):
        return False


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _holds(obj: Any, version: LoggedArtifact, task_run_id: str) -> bool:
    """Whether ``obj`` is one of ``version``'s objects as the run ``task_run_id`` loaded it."""
    entries = [e for e in version.objects if e.python_type == _type_name(obj)]
    if not entries:
        return False
    if type(obj).__weakrefoffset__:
        # Prefect links weak-referenceable results by identity: trust a live link to this run.
        linked = get_state_for_result(obj)
        if linked is not None and str(linked[0].state_details.task_run_id) == task_run_id:
            return True
    return any(serializes_to(obj, entry) for entry in entries)
