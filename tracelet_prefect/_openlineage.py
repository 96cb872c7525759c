"""Prefect flow runs and tracelet task runs as OpenLineage runs.

A tracelet task's wrapper runs its body inside :func:`task_lineage`: with the OpenLineage
export on, the flow run (job = the flow name, id = Prefect's flow run id) gets its ``START``
at the flow run's start, the task run (job ``<flow name>.<task name>``, parent the flow run)
its ``START`` at the task run's start, then one terminal event when the body returns
(``COMPLETE`` with what it logged and read) or raises for the last time (``FAIL`` with the
error; an attempt Prefect will retry ends nothing). The flow run's end is reported just before
its final state is set (``_flow_end.call_at_end``, once per store): ``COMPLETE`` or ``FAIL``.
The export starts and ends each run once, whatever the number of tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.context import FlowRunContext, TaskRunContext

from tracelet_core import ArtifactStore, ConfigurationError
from tracelet_core._delivery import exporter

from ._flow_end import call_at_end
from ._runs import ORCHESTRATOR, TaskRun
from ._stores import StoreSpec

logger = logging.getLogger("tracelet.prefect")


def _export() -> Any:
    try:
        return exporter()
    except ConfigurationError as exc:
        logger.warning("OpenLineage export is off here: %s", exc)
        return None


class FlowRunEnd:
    """What ends a flow run's OpenLineage run on one store, called with its final state (equal
    per store, so a flow run calls one per store however many task runs registered it)."""

    def __init__(self, store: StoreSpec) -> None:
        self.store = store

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FlowRunEnd) and other.store.identity() == self.store.identity()

    def __hash__(self) -> int:
        return hash(self.store.identity())

    def __call__(self, flow: Any, flow_run: Any, state: Any) -> None:
        export = _export()
        if export is None:
            return
        store = self.store.open()
        if not store.settings.openlineage:
            return
        parent = export.orchestrator_run(ORCHESTRATOR, str(flow_run.id), flow.name)
        if not export.is_started(store, parent):
            return  # no tracelet task of this store ran in this flow run
        error = None if state.is_completed() else f"{state.name}: {state.message or 'the flow run failed'}"
        export.run_ended(store, parent, error, state.timestamp)


def _will_retry(task_ctx: TaskRunContext) -> bool:
    """Whether Prefect runs the task again after this attempt raises."""
    return bool(task_ctx.task_run.run_count <= (task_ctx.task.retries or 0))


@contextmanager
def task_lineage(store: ArtifactStore, store_spec: StoreSpec, task_run: TaskRun) -> Iterator[None]:
    """The task run's (and its flow run's) OpenLineage runs around a tracelet task's body."""
    task_ctx = TaskRunContext.get()
    producer = task_run.producer
    export = _export() if store.settings.openlineage and producer is not None and task_ctx else None
    if export is None or producer is None or task_ctx is None:
        yield
        return
    flow_ctx = FlowRunContext.get()
    flow_name = flow_ctx.flow.name if flow_ctx is not None and flow_ctx.flow is not None else None
    step = export.step_run(producer, flow_name)
    if flow_ctx is not None and flow_ctx.flow is not None and flow_ctx.flow_run is not None:
        export.run_started(store, step.parent, flow_ctx.flow_run.start_time)
        call_at_end(str(flow_ctx.flow_run.id), FlowRunEnd(store_spec))
    export.run_started(store, step, task_ctx.task_run.start_time)
    try:
        yield
    except BaseException as exc:
        if not _will_retry(task_ctx):
            export.run_ended(store, step, export.error_text(exc))
        raise
    export.run_ended(store, step)
