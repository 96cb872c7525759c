"""The OpenLineage exporter: every committed version as one OpenLineage ``RunEvent`` (``COMPLETE``).

It is a backend like the trackers (registered as ``openlineage``), so export goes through the
delivery outbox: ``TRACELET_OPENLINEAGE=true`` gives every committed version a delivery row,
delivered right after the commit within ``TRACELET_BACKEND_TIMEOUT`` and retried by
``tracelet sync``. Events are built from the ``openlineage-python`` client's own classes and
emitted by its client, whose transport is configured the OpenLineage way (``OPENLINEAGE_URL``,
``OPENLINEAGE__TRANSPORT__*`` or ``openlineage.yml``).

What one event says:

* job: namespace = the producer's orchestrator (``dagster``, ``prefect``; ``tracelet`` for an
  ``Experiment`` or a version without a producer); name = the producing step (Dagster step key,
  Prefect task name, experiment name; ``log:<artifact name>`` without a producer);
* run: a UUID derived from the producer (``RunInfo.key``: orchestrator, run id, step,
  partition; never the attempt), so retries of one step and replays of the store give the same
  id; the ``parent`` facet names the orchestrator run a step belongs to;
* outputs: the version as the dataset ``tracelet`` / ``<artifact name>`` with the ``version``
  facet ``vN`` and a ``tracelet`` facet (ref, digest, type, aliases, partition); inputs: the
  versions it was made from, described the same way;
* event time: the version's commit time, so an event is the same however often it is sent.

The client's errors (``requests``' ``OSError`` family, its ``RuntimeError`` and ``ValueError``)
become ``BackendError`` with the cause chained.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timezone
from typing import TYPE_CHECKING, Any

import attr
from openlineage.client import OpenLineageClient
from openlineage.client.constants import __version__ as client_version
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    DatasetFacet,
    dataset_version_dataset,
    documentation_dataset,
    job_type_job,
    parent_run,
    processing_engine_run,
)
from openlineage.client.serde import Serde
from openlineage.client.transport.http import HttpTransport
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from .. import __version__
from .._backends import ArtifactResult, Backend, sdk_errors
from .._errors import ConfigurationError

if TYPE_CHECKING:
    from types import TracebackType

    from urllib3.connectionpool import ConnectionPool
    from urllib3.response import BaseHTTPResponse

    from .._lineage import LineageGraph
    from .._logged import LoggedArtifact
    from .._model import RunInfo
    from .._store import ArtifactStore

#: Who made the events (OpenLineage's ``producer``): this package, at this version.
PRODUCER = f"https://pypi.org/project/tracelet-artifacts/{__version__}/"
#: The dataset namespace of every version.
DATASET_NAMESPACE = "tracelet"
#: The job namespace of versions logged by an ``Experiment`` or without a producer.
DEFAULT_NAMESPACE = "tracelet"
#: Where the run ids come from: ``uuid5(RUN_ID_NAMESPACE, RunInfo.key)``.
RUN_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://pypi.org/project/tracelet-artifacts/")
#: Orchestrators whose ``RunInfo.step`` is a run id (a Prefect task run), not a step name;
#: their step's name is ``RunInfo.name``.
STEP_IS_A_RUN_ID = frozenset({"prefect"})
#: What the client raises when a transport cannot deliver.
CLIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError, ValueError)

TRACELET_FACET_SCHEMA_URL = f"{PRODUCER}#/$defs/TraceletDatasetFacet"
#: The JSON Schema of the ``tracelet`` dataset facet (its ``_schemaURL`` points here).
TRACELET_FACET_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {"TraceletDatasetFacet": {
        "type": "object",
        "properties": {
            "_producer": {"type": "string", "format": "uri"},
            "_schemaURL": {"type": "string", "format": "uri"},
            "ref": {"type": "string", "description": "the tracelet ref, name:vN"},
            "digest": {"type": "string", "description": "content digest of the version"},
            "type": {"type": "string", "description": "tracelet artifact type (model, dataset, ...)"},
            "aliases": {"type": "array", "items": {"type": "string"}},
            "partition": {"type": "string", "description": "orchestrator partition key"},
            "sizeBytes": {"type": "integer", "minimum": 0},
        },
        "required": ["_producer", "_schemaURL", "ref", "digest", "type", "aliases"],
        "additionalProperties": True,
    }},
    "$ref": "#/$defs/TraceletDatasetFacet",
}


@attr.define
class TraceletDatasetFacet(DatasetFacet):
    """tracelet's own dataset facet: which version of the artifact this dataset is."""

    ref: str
    digest: str
    type: str
    aliases: list[str] = attr.field(factory=list)
    partition: str | None = attr.field(default=None)
    sizeBytes: int | None = attr.field(default=None)  # noqa: N815 - OpenLineage's camelCase

    @staticmethod
    def _get_schema() -> str:
        return TRACELET_FACET_SCHEMA_URL


# -- the event --------------------------------------------------------------------------------
def run_uuid(producer: RunInfo | None, artifact: LoggedArtifact) -> str:
    """The OpenLineage run id: from the producer's run step (stable across its retries), or,
    without a producer, from the version itself."""
    source = producer.key if producer is not None else f"version/{artifact.ref}/{artifact.digest}"
    return str(uuid.uuid5(RUN_ID_NAMESPACE, source))


def job_name(producer: RunInfo | None, artifact: LoggedArtifact) -> str:
    """The producing step: Dagster's step key, Prefect's task name, the experiment's name."""
    if producer is None:
        return f"log:{artifact.name}"
    if producer.orchestrator in STEP_IS_A_RUN_ID:
        return producer.name or producer.step or producer.run_id
    return producer.step or producer.name or producer.run_id


def orchestrator_run(producer: RunInfo, step_job: str) -> parent_run.ParentRunFacet | None:
    """The ``parent`` facet: the orchestrator run a step ran in (none for a run without steps,
    such as an experiment). Its id is the orchestrator's own run id where that is a UUID
    (Dagster, Prefect), so events of other OpenLineage integrations of that run line up."""
    if producer.step is None:
        return None
    try:
        parent_id = str(uuid.UUID(producer.run_id))
    except ValueError:
        parent_id = str(uuid.uuid5(RUN_ID_NAMESPACE, f"{producer.orchestrator}/{producer.run_id}"))
    extra_name = producer.extra.get("flow_name") or producer.extra.get("job_name")
    name = str(extra_name or (producer.name if producer.name != step_job else None) or producer.orchestrator)
    return parent_run.ParentRunFacet(
        run=parent_run.Run(runId=parent_id),
        job=parent_run.Job(namespace=producer.orchestrator, name=name),
        root=parent_run.Root(run=parent_run.RootRun(runId=parent_id),
                             job=parent_run.RootJob(namespace=producer.orchestrator, name=name)),
        producer=PRODUCER)


def dataset_facets(version: LoggedArtifact) -> dict[str, DatasetFacet]:
    """The facets that describe one version as a dataset."""
    facets: dict[str, DatasetFacet] = {
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=version.version, producer=PRODUCER),
        "tracelet": TraceletDatasetFacet(
            ref=version.ref, digest=version.digest, type=version.type.value,
            aliases=list(version.aliases), partition=version.partition, sizeBytes=version.size_bytes,
            producer=PRODUCER),
    }
    if version.description:
        facets["documentation"] = documentation_dataset.DocumentationDatasetFacet(
            description=version.description, producer=PRODUCER)
    return facets


def build_event(artifact: LoggedArtifact) -> RunEvent:
    """The ``COMPLETE`` event of the run step that produced ``artifact``."""
    producer = artifact.producer
    namespace = producer.orchestrator if producer is not None else DEFAULT_NAMESPACE
    name = job_name(producer, artifact)
    run_facets: dict[str, Any] = {"processing_engine": processing_engine_run.ProcessingEngineRunFacet(
        version=__version__, name="tracelet", openlineageAdapterVersion=client_version, producer=PRODUCER)}
    parent = orchestrator_run(producer, name) if producer is not None else None
    if parent is not None:
        run_facets["parent"] = parent
    job_facets: dict[str, Any] = {"jobType": job_type_job.JobTypeJobFacet(
        processingType="BATCH", integration=namespace.upper(),
        jobType="TASK" if producer is not None and producer.step else "JOB", producer=PRODUCER)}
    inputs = [artifact.store.get(ref) for ref in artifact.inputs]
    return RunEvent(
        eventType=RunState.COMPLETE,
        eventTime=artifact.created_at.astimezone(timezone.utc).isoformat(),
        run=Run(runId=run_uuid(producer, artifact), facets=run_facets),
        job=Job(namespace=namespace, name=name, facets=job_facets),
        inputs=[InputDataset(namespace=DATASET_NAMESPACE, name=v.name, facets=dataset_facets(v)) for v in inputs],
        outputs=[OutputDataset(namespace=DATASET_NAMESPACE, name=artifact.name, facets=dataset_facets(artifact))],
        producer=PRODUCER,
    )


def event_json(event: RunEvent) -> str:
    """One event as the client serializes it (one line of JSON)."""
    return Serde.to_json(event)


def lineage_events(store: ArtifactStore, ref: str, direction: str = "upstream",
                   depth: int | None = None) -> list[RunEvent]:
    """The events of a version and of every version upstream (or downstream) of it, oldest
    first: what ``tracelet lineage REF --format openlineage`` prints."""
    return graph_events(store, store.lineage(ref, direction=direction, depth=depth))


def graph_events(store: ArtifactStore, graph: LineageGraph) -> list[RunEvent]:
    """The events of every version in a lineage graph, oldest first."""
    versions = [store.get(node) for node in graph.artifact_refs]
    return [build_event(v) for v in sorted(versions, key=lambda v: (v.created_at, v.ref))]


# -- the client -------------------------------------------------------------------------------
_client_lock = threading.Lock()


@contextmanager
def _environ_kept(prefix: str = "OPENLINEAGE__") -> Iterator[None]:
    """Undo what the client writes into ``os.environ`` while it is built (it copies
    ``OPENLINEAGE_URL`` into ``OPENLINEAGE__TRANSPORT__TRANSPORTS__*`` variables)."""
    before = {key: value for key, value in os.environ.items() if key.startswith(prefix)}
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith(prefix) and k not in before]:
            del os.environ[key]
        os.environ.update(before)


class _ConsoleFallbackFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Couldn't find any OpenLineage transport configuration")


@contextmanager
def _no_console_fallback_warning() -> Iterator[None]:
    """Silence the client's warning that it falls back to printing events: tracelet refuses
    that fallback with a ``ConfigurationError`` of its own."""
    client_logger = logging.getLogger("openlineage.client.client")
    quiet = _ConsoleFallbackFilter()
    client_logger.addFilter(quiet)
    try:
        yield
    finally:
        client_logger.removeFilter(quiet)


class _DeadlineRetry(Retry):
    """urllib3's retries, but none that would start after ``deadline`` (``time.monotonic``)."""

    deadline: float = math.inf

    def new(self, **kw: Any) -> _DeadlineRetry:
        retry = super().new(**kw)
        retry.deadline = self.deadline
        return retry

    def increment(self, method: str | None = None, url: str | None = None,
                  response: BaseHTTPResponse | None = None, error: Exception | None = None,
                  _pool: ConnectionPool | None = None,
                  _stacktrace: TracebackType | None = None) -> _DeadlineRetry:
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        if time.monotonic() + retry.get_backoff_time() >= self.deadline:
            raise MaxRetryError(_pool, url or "", error) from error  # type: ignore[arg-type]
        return retry


def _bound_to(transport: Any, seconds: float | None) -> None:
    """Keep an HTTP transport's requests and retries within ``seconds`` from now, so an
    attempt the outbox gave up on does not deliver later behind its back."""
    if seconds is None or not isinstance(transport, HttpTransport) or transport.config.adapter is not None:
        return
    retry = _DeadlineRetry(**transport.config.retry)
    retry.deadline = time.monotonic() + seconds
    transport.config.adapter = HTTPAdapter(max_retries=retry)
    transport.timeout = min(transport.timeout, seconds)


def open_client(seconds: float | None = None) -> OpenLineageClient:
    """The OpenLineage client configured from the environment (``OPENLINEAGE_URL``,
    ``OPENLINEAGE__TRANSPORT__*``, ``openlineage.yml``); HTTP bounded to ``seconds``.

    Raises ``ConfigurationError`` when no transport is configured (the client would print
    the events to its console instead)."""
    with _client_lock, _environ_kept(), _no_console_fallback_warning(), \
            sdk_errors("openlineage", "configuring the client", CLIENT_ERRORS):
        client = OpenLineageClient()
    if client.transport.kind == "console" and not (client.config.transport or {}).get("type"):
        raise ConfigurationError(
            "no OpenLineage transport is configured: set OPENLINEAGE_URL (e.g. http://localhost:5000 "
            "for Marquez), OPENLINEAGE__TRANSPORT__TYPE=... or write an openlineage.yml")
    _bound_to(client.transport, seconds)
    return client


def emit(client: OpenLineageClient, event: RunEvent) -> None:
    with sdk_errors("openlineage", f"emitting the event of run {event.run.runId}", CLIENT_ERRORS):
        client.emit(event)


# -- the backend ------------------------------------------------------------------------------
class OpenLineageBackend(Backend):
    """Emits a version's ``COMPLETE`` event through the configured OpenLineage transport.

    Idempotent per ref in OpenLineage's sense: sending a version again sends the same event
    (same run id, event time and datasets), which consumers treat as the same run state."""

    name = "openlineage"

    def log(self, artifact: LoggedArtifact) -> ArtifactResult:
        """Build the event and emit it with a fresh client (the configuration of the process
        delivering it: the logging one, or ``tracelet sync``'s)."""
        event = build_event(artifact)
        client = open_client(artifact.store.settings.backend_timeout)
        try:
            emit(client, event)
        finally:
            client.close(0)
        return ArtifactResult(backend=self.name, ok=True, version=artifact.version,
                              uri=f"openlineage:{client.transport.kind}/run/{event.run.runId}",
                              size_bytes=artifact.size_bytes)


def export_store(store: ArtifactStore, refs: Iterable[str] | None = None) -> Iterator[ArtifactResult]:
    """Emit the event of every version (oldest first), or of ``refs``, through the configured
    transport; each outcome is also recorded on the version's ``openlineage`` delivery where it
    has one, so ``sync`` does not send it again. Stops after the first failure."""
    if refs is None:
        records = store.catalog.get_by_ids(store.catalog.all_version_ids())
        ordered = [r.ref for r in sorted(records, key=lambda r: (r.created_at, r.name, r.version))]
    else:
        ordered = list(refs)
    backend = OpenLineageBackend()
    open_client()  # fail before the first version on a missing configuration
    yield from store.delivery.deliver_each(backend, ordered)
