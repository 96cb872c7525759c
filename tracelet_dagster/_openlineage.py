"""The Dagster run and its steps as OpenLineage runs, read from Dagster's own event log.

When the IO manager or the resource is torn down after execution (``teardown_after_execution``,
at the end of an in-process run, or of each step's process with the multiprocess executor),
:func:`report_run` reads the run's event log and hands the OpenLineage export what it says:

- the run (job = the Dagster job name, id = Dagster's run id) started at ``RUN_START``;
- each step that started (``STEP_START``: its ``START``, job ``<job name>.<step key>``, parent
  the run) and ended (``STEP_SUCCESS``: ``COMPLETE`` with the versions it logged and read;
  ``STEP_FAILURE``: ``FAIL`` with the error);
- the run's end once no planned step can still run (each ended, or downstream of a failure):
  ``FAIL`` when a step failed, else ``COMPLETE``.

The export starts and ends each run once, so several teardowns (the IO manager and the
resource, one per step process) report each event once. A step still running in another
process is left for the teardown that sees it end.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from dagster import DagsterEventType

from tracelet_core import ArtifactStore, ConfigurationError, RunInfo, TraceletSettings
from tracelet_core._delivery import exporter

logger = logging.getLogger("tracelet.dagster")

ORCHESTRATOR = "dagster"
_STEP_END = {DagsterEventType.STEP_SUCCESS.value, DagsterEventType.STEP_FAILURE.value}
_WANTED = {DagsterEventType.RUN_START, DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS,
           DagsterEventType.STEP_FAILURE}


def _error_message(entry: Any) -> str:
    """What a ``STEP_FAILURE`` says: the user's exception where Dagster wrapped it."""
    error = entry.dagster_event.step_failure_data.error
    if error is None:
        return "the step failed"
    while error.cause is not None:
        error = error.cause
    return str(error.message).strip()


def _blocked(plan: Mapping[str, set[str]], ended: Mapping[str, Any], failed: set[str]) -> set[str]:
    """Planned steps that will never run: downstream of a failed (or blocked) step."""
    blocked: set[str] = set()
    changed = True
    while changed:
        changed = False
        for step, upstream in plan.items():
            if step not in blocked and step not in ended and upstream & (failed | blocked):
                blocked.add(step)
                changed = True
    return blocked


def _plan(instance: Any, dagster_run: Any) -> dict[str, set[str]]:
    """Planned step key -> the step keys it takes inputs from."""
    snapshot = instance.get_execution_plan_snapshot(dagster_run.execution_plan_snapshot_id)
    wanted = set(snapshot.step_keys_to_execute or [s.key for s in snapshot.steps])
    return {step.key: {h.step_key for i in step.inputs for h in i.upstream_output_handles}
            for step in snapshot.steps if step.key in wanted}


def _events(instance: Any, run_id: str) -> Iterable[Any]:
    records = instance.get_records_for_run(run_id, of_type=_WANTED, limit=None).records
    return [r.event_log_entry for r in records]


def report_run(access: Any, context: Any) -> None:
    """Hand the export what Dagster's event log says about the run being torn down (nothing
    with the export off, or outside a run); ``access``: the IO manager or resource, whose
    ``store`` it goes to. Never raises: the run's outcome is Dagster's."""
    dagster_run = getattr(context, "run", None)
    instance = getattr(context, "instance", None)
    if dagster_run is None or instance is None:
        return
    try:
        if not TraceletSettings.load().openlineage:
            return  # checked before the store opens: a run that never used it does not open it
        store: ArtifactStore = access.store
        if store.settings.openlineage:
            _report(store, exporter(), instance, dagster_run)
    except ConfigurationError as exc:
        logger.warning("OpenLineage export is off here: %s", exc)
    except Exception as exc:  # noqa: BLE001 - the export never fails a run; what failed is logged
        logger.warning("OpenLineage: the events of Dagster run %s could not be sent: %s", dagster_run.run_id, exc)


def _report(store: ArtifactStore, export: Any, instance: Any, dagster_run: Any) -> None:
    run_id, job = dagster_run.run_id, dagster_run.job_name
    parent = export.orchestrator_run(ORCHESTRATOR, run_id, job)
    started: dict[str, float] = {}
    ended: dict[str, Any] = {}
    run_start = None
    for entry in _events(instance, run_id):
        kind = entry.dagster_event.event_type_value
        if kind == DagsterEventType.RUN_START.value:
            run_start = entry.timestamp
        elif kind == DagsterEventType.STEP_START.value:
            started.setdefault(entry.step_key, entry.timestamp)
        elif kind in _STEP_END:
            ended[entry.step_key] = entry
    export.run_started(store, parent, run_start if run_start is not None else min(started.values(), default=None))
    failed: set[str] = set()
    for step, at in started.items():
        step_run = export.step_run(_step_producer(run_id, step, job), job)
        export.run_started(store, step_run, at)
        end = ended.get(step)
        if end is None:
            continue
        error = None
        if end.dagster_event.event_type_value == DagsterEventType.STEP_FAILURE.value:
            error = _error_message(end)
            failed.add(step)
        export.run_ended(store, step_run, error, end.timestamp)
    plan = _plan(instance, dagster_run)
    unsettled = set(plan) - set(ended) - _blocked(plan, ended, failed)
    if unsettled or set(started) - set(ended):
        return  # steps still to run (in another process): a later teardown ends the run
    last = max((e.timestamp for e in ended.values()), default=None)
    error = f"{len(failed)} step(s) failed: {', '.join(sorted(failed))}" if failed else None
    export.run_ended(store, parent, error, last)


def _step_producer(run_id: str, step_key: str, job: str) -> RunInfo:
    """The step as the IO manager and the resource name it (``step_reader``), partition aside."""
    return RunInfo(orchestrator=ORCHESTRATOR, run_id=run_id, step=step_key, name=job)
