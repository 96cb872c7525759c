"""The OpenLineage export: runs with a start and an end, inside orchestrator runs, and datasets.

With ``TRACELET_OPENLINEAGE=true`` every producing step is one OpenLineage run: a ``START``
when it starts and one terminal event, ``COMPLETE`` listing every version it logged (outputs)
and read (inputs), or ``FAIL`` with the error (``_queue``). The Dagster run and the Prefect flow
run are runs too, parents of their steps; a version logged outside any tracked run is a run of
its own. Datasets are versions in a store (``_events``). Events go through the catalog's
``lineage_events`` queue: written before they are sent, sent right away within
``TRACELET_BACKEND_TIMEOUT`` (a refused connection gives up at once, ``_client``), and sent
again by ``tracelet sync`` where that failed; a log never fails because of them.

``tracelet lineage REF --format openlineage`` and ``tracelet export-lineage`` replay the same
runs (:func:`replay`): the events as they were queued, and for versions logged while the export
was off, their runs built from the catalog. Routed as a backend (``Experiment(backend=
"openlineage")``), ``openlineage`` sends versions as DatasetEvents (``_backend``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from openlineage.client.event_v2 import RunState

from ..._trackers import ArtifactResult
from ._backend import OpenLineageBackend
from ._client import CLIENT_ERRORS, _DeadlineRetry, open_client
from ._events import (
    DEFAULT_NAMESPACE,
    PRODUCER,
    RUN_ID_NAMESPACE,
    TRACELET_FACET_SCHEMA,
    LineageRun,
    TraceletDatasetFacet,
    dataset_event,
    dataset_namespace,
    event_json,
    orchestrator_run,
    payload,
    run_event,
    step_run,
    version_run,
)
from ._queue import (
    aliases_changed,
    error_text,
    flush,
    is_started,
    own_run_events,
    producer_ended,
    producer_started,
    run_ended,
    run_io,
    run_started,
    send_row,
    version_committed,
)

if TYPE_CHECKING:
    from ..._lineage import LineageGraph
    from ..._logged import LoggedArtifact
    from ..._store import ArtifactStore

__all__ = [
    "CLIENT_ERRORS", "DEFAULT_NAMESPACE", "LineageRun", "OpenLineageBackend", "PRODUCER", "RUN_ID_NAMESPACE",
    "Replayed", "TRACELET_FACET_SCHEMA", "TraceletDatasetFacet", "_DeadlineRetry", "aliases_changed", "dataset_event",
    "dataset_namespace", "error_text", "event_json", "export_store", "flush", "graph_events", "is_started",
    "lineage_events", "open_client", "orchestrator_run", "payload", "producer_ended", "producer_started", "replay",
    "run_ended", "run_event", "run_started", "step_run", "version_committed", "version_run",
]


@dataclass(frozen=True)
class Replayed:
    """One event of a replay: as sent (a JSON object), and the queued row it is (if any)."""

    payload: dict[str, Any]
    row_id: int | None = None

    @property
    def key(self) -> str:
        run = self.payload.get("run")
        return f"{run['runId']}/{self.payload['eventType']}" if run else f"dataset/{self.payload['eventTime']}"


def _built_run(store: ArtifactStore, run: LineageRun, version: LoggedArtifact) -> list[Replayed]:
    """``START`` and ``COMPLETE`` of a run the export never saw, from the catalog."""
    inputs, outputs = run_io(store, run)
    times = [v.created_at for v in outputs] or [version.created_at]
    return [Replayed(payload(run_event(RunState.START, run, min(times)))),
            Replayed(payload(run_event(RunState.COMPLETE, run, max(times), inputs=inputs, outputs=outputs)))]


def replay(store: ArtifactStore, versions: Iterable[LoggedArtifact]) -> list[Replayed]:
    """The run events of the runs that produced ``versions`` (and of their orchestrator runs),
    oldest first: those queued live, as they were sent; for a run the export never saw, its
    ``START`` and ``COMPLETE`` built from the catalog."""
    events: list[Replayed] = []
    seen: set[str] = set()

    def stored(run_id: str) -> list[Replayed]:
        rows = store.catalog.lineage_queue(statuses=None, run_ids=[run_id])
        return [Replayed(r["payload"], r["id"]) for r in rows]

    for version in sorted(versions, key=lambda v: (v.created_at, v.ref)):
        candidates = ([step_run(version.producer)] if version.producer is not None else []) + [version_run(version)]
        if any(c.run_id in seen for c in candidates):
            continue
        found = next(((c, rows) for c in candidates if (rows := stored(c.run_id))), None)
        if found is not None:
            run, rows = found
            parent = run.parent
            if parent is not None and parent.run_id not in seen:
                seen.add(parent.run_id)
                events += stored(parent.run_id)
            events += rows
        elif version.producer is not None:
            run = candidates[0]
            events += _built_run(store, run, version)
        else:
            run = candidates[-1]
            events += [Replayed(payload(e)) for e in own_run_events(version)]
        seen.add(run.run_id)
    return sorted(events, key=lambda e: datetime.fromisoformat(e.payload["eventTime"]))


def graph_events(store: ArtifactStore, graph: LineageGraph) -> list[dict[str, Any]]:
    """The run events of every version in a lineage graph, oldest first."""
    return [e.payload for e in replay(store, (store.get(node) for node in graph.artifact_refs))]


def lineage_events(store: ArtifactStore, ref: str, direction: str = "upstream",
                   depth: int | None = None) -> list[dict[str, Any]]:
    """The run events of a version and of every version upstream (or downstream) of it,
    oldest first: what ``tracelet lineage REF --format openlineage`` prints."""
    return graph_events(store, store.lineage(ref, direction=direction, depth=depth))


def export_store(store: ArtifactStore, refs: Iterable[str] | None = None) -> Iterator[ArtifactResult]:
    """Send the run events of every version (or of ``refs``), oldest first, through the
    configured transport (``export-lineage``); a queued event sent this way is settled, so
    ``sync`` does not send it again. Stops after the first failure."""
    open_client()  # fail before the first event on a missing configuration
    if refs is None:
        records = store.catalog.get_by_ids(store.catalog.all_version_ids())
        versions = [store.get(r.ref) for r in records]
    else:
        versions = [store.get(ref) for ref in refs]
    for event in replay(store, versions):
        result = send_row({"key": event.key, "payload": event.payload}, store.settings.backend_timeout)
        if event.row_id is not None:
            store.catalog.finish_lineage_event(event.row_id, ok=result.ok, error=result.error)
        yield result
        if not result.ok:
            return
