"""The run lifecycle as OpenLineage events, through the export's own outbox.

Adapters and ``Experiment`` call :func:`run_started` when a run (an orchestrator run, a step,
an experiment) starts and :func:`run_ended` when it ends (``error``: it raised); the store
calls :func:`version_committed` after each commit and :func:`aliases_changed` after an alias
change. Each event is built once, stored in the catalog's ``lineage_events`` queue under a key
that makes a run start once and end once (``<run id>/start``, ``<run id>/end``), then
:func:`flush` sends what is queued, oldest first, stopping at the first failure so a run's
end never overtakes its start. Nothing here raises into the caller: a failure stays queued
for ``tracelet sync`` (and is logged). A run whose process died has a ``START`` and no end:
nothing is invented for it.

The terminal event lists what the run logged (outputs) and read (inputs) as the catalog has
them at the end of the run; a version committed inside a started run is sent with its run's
end, any other version as a run of its own (``START`` + ``COMPLETE``) right after its commit.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from openlineage.client.event_v2 import RunEvent, RunState

from ..._delivery import _call_with_timeout
from ..._errors import TraceletError
from ..._trackers import ArtifactResult, failure
from ._backend import SENDER
from ._client import open_client, send
from ._events import LineageRun, dataset_event, payload, run_event, step_run, version_run

if TYPE_CHECKING:
    from ..._logged import LoggedArtifact
    from ..._model import RunInfo
    from ..._store import ArtifactStore

logger = logging.getLogger("tracelet.openlineage")
#: Orchestrators whose adapter reports each step's start and end after the step (Dagster reads
#: its event log at teardown): what their steps log is sent with the step's end.
REPORTED_AFTER = frozenset({"dagster"})
#: One sender per process at a time, so two threads never send the same queued event.
_flush_lock = threading.Lock()


def _key(run: LineageRun, phase: str) -> str:
    return f"{run.run_id}/{phase}"


def is_started(store: ArtifactStore, run: LineageRun) -> bool:
    """Whether the run's ``START`` was queued (it is a live, tracked run)."""
    return bool(store.catalog.lineage_queue(statuses=None, key=_key(run, "start")))


def _queue(store: ArtifactStore, key: str, run_id: str | None, event: Any) -> bool:
    return store.catalog.enqueue_lineage_event(key, run_id, payload(event))


def run_io(store: ArtifactStore, run: LineageRun) -> tuple[list[LoggedArtifact], list[LoggedArtifact]]:
    """``(inputs, outputs)``: what the run read and logged, as the catalog has them now."""
    if run.source is None:
        return [], []
    logged_ids, read_ids = store.catalog.run_versions(run.source)
    outputs = [store.get(r.ref) for r in store.catalog.get_by_ids(logged_ids)]
    read = {r.ref: None for r in store.catalog.get_by_ids(read_ids)}
    for version in outputs:
        read.update(dict.fromkeys(version.inputs))
    produced = {v.ref for v in outputs}
    return [store.get(ref) for ref in read if ref not in produced], outputs


def run_started(store: ArtifactStore, run: LineageRun, at: float | datetime | None = None) -> None:
    """Queue and send the run's ``START`` (once; ``at``: when it really started)."""
    _guarded(store, lambda: _queue(store, _key(run, "start"), run.run_id,
                                   run_event(RunState.START, run, at if at is not None else time.time())))


def run_ended(store: ArtifactStore, run: LineageRun, error: str | None = None,
              at: float | datetime | None = None) -> None:
    """Queue and send the run's one terminal event: ``COMPLETE`` with what it logged and read,
    or ``FAIL`` (``error``: what it raised). A run ends once: a second call does nothing."""
    def queue() -> None:
        if store.catalog.lineage_queue(statuses=None, key=_key(run, "end")):
            return
        inputs, outputs = run_io(store, run)
        state = RunState.FAIL if error is not None else RunState.COMPLETE
        event = run_event(state, run, at if at is not None else time.time(), inputs=inputs, outputs=outputs,
                          error=error)
        _queue(store, _key(run, "end"), run.run_id, event)
    _guarded(store, queue)


def error_text(error: BaseException | None) -> str | None:
    """What a ``FAIL`` says about the exception a run raised."""
    return None if error is None else f"{type(error).__name__}: {error}"


def producer_started(store: ArtifactStore, producer: RunInfo, at: float | datetime | None = None) -> None:
    """``run_started`` for the run of ``producer`` (an ``Experiment``'s run)."""
    run_started(store, step_run(producer), at)


def producer_ended(store: ArtifactStore, producer: RunInfo, error: BaseException | None = None,
                   at: float | datetime | None = None) -> None:
    """``run_ended`` for the run of ``producer``."""
    run_ended(store, step_run(producer), error_text(error), at)


def own_run_events(version: LoggedArtifact) -> list[RunEvent]:
    """``START`` and ``COMPLETE`` of a version that is a run of its own."""
    run = version_run(version)
    return [run_event(RunState.START, run, version.created_at),
            run_event(RunState.COMPLETE, run, version.created_at, inputs=[version.store.get(r) for r in version.inputs],
                      outputs=[version])]


def version_committed(store: ArtifactStore, version: LoggedArtifact) -> None:
    """A version just committed: sent with its run's end when that run is tracked, else as a
    run of its own."""
    def queue() -> None:
        producer = version.producer
        if producer is not None and (producer.orchestrator in REPORTED_AFTER or is_started(store, step_run(producer))):
            return
        start, complete = own_run_events(version)
        _queue(store, f"{start.run.runId}/start", start.run.runId, start)
        _queue(store, f"{complete.run.runId}/end", complete.run.runId, complete)
    _guarded(store, queue)


def aliases_changed(store: ArtifactStore, name: str) -> None:
    """Queue a ``DatasetEvent`` for each version whose aliases changed (recorded in the alias
    history and not sent yet): the version as it is now, with its aliases."""
    def queue() -> None:
        prefix = f"aliases/{name}/"
        sent = {row["key"] for row in store.catalog.lineage_queue(statuses=None, key_prefix=prefix)}
        for index, (_alias, before, after, at, _run, _reason) in enumerate(store.catalog.alias_history(name, None)):
            for ref in (before, after):
                key = f"{prefix}{index}/{ref}"
                if ref is None or key in sent:
                    continue
                version = store._including_deleted(ref)
                _queue(store, key, None, dataset_event(version, at))
    _guarded(store, queue)


def _guarded(store: ArtifactStore, queue: Any) -> None:
    """Queue (never failing the caller), then send what is queued."""
    try:
        queue()
    except Exception as exc:  # noqa: BLE001 - a log never fails because of its export; logged
        logger.warning("OpenLineage: an event could not be queued: %s: %s", type(exc).__name__, exc)
        return
    flush(store)


# -- sending ------------------------------------------------------------------------------------
def send_row(row: dict[str, Any], timeout: float | None) -> ArtifactResult:
    """Send one queued event within ``timeout``; the outcome (not yet recorded)."""
    def attempt() -> None:
        client = open_client(timeout)
        try:
            send(client, row["payload"], f"event {row['key']}")
        finally:
            client.close(0)
    outcome = _call_with_timeout(SENDER, attempt, timeout)
    if isinstance(outcome, BaseException):
        return failure(SENDER.name, outcome, version=row["key"])
    return ArtifactResult(backend=SENDER.name, ok=True, version=row["key"], uri=f"openlineage:{row['key']}")


def flush(store: ArtifactStore) -> list[ArtifactResult]:
    """Send every queued event not delivered yet, oldest first, recording each outcome;
    stops at the first failure (the rest waits for the next flush or ``tracelet sync``)."""
    results: list[ArtifactResult] = []
    with _flush_lock:
        try:
            for row in store.catalog.lineage_queue():
                result = send_row(row, store.settings.backend_timeout)
                store.catalog.finish_lineage_event(row["id"], ok=result.ok, error=result.error)
                results.append(result)
                if not result.ok:
                    logger.warning("OpenLineage export is pending (run `tracelet sync` later): %s", result.error)
                    break
        except TraceletError as exc:
            logger.warning("OpenLineage export is pending (run `tracelet sync` later): %s", exc)
    return results
