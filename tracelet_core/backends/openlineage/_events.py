"""What the OpenLineage events say: runs, jobs and datasets built from tracelet's records.

* A **run** (:class:`LineageRun`) is an orchestrator run (the Dagster run, the Prefect flow
  run: job = the Dagster job name / the flow name, its id the orchestrator's own run id), a
  step run inside one (job ``<job>.<step key>`` / ``<flow>.<task>``, its ``parent`` the
  orchestrator run), an ``Experiment`` (job = its name), or a version logged outside any
  tracked step (a run of its own). Run ids are UUIDs derived from the producer (``RunInfo``
  without attempt or partition), so retries and replays give the same id.
* A **dataset** is one artifact in one store: namespace = the store's location
  (``file://<absolute path>``, ``s3://bucket/prefix``), name = the artifact name, facets
  ``version`` (``vN``), ``schema`` (columns of stored tables), ``documentation`` and
  ``tracelet`` (ref, digest, type, aliases, partition, size).
* **Events**: ``START`` / ``COMPLETE`` / ``FAIL`` run events (``errorMessage`` on a failure) and
  DatasetEvents for alias changes, all from the client's own classes, serialized once
  (:func:`payload`) and sent as stored.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attr
from openlineage.client.constants import __version__ as client_version
from openlineage.client.event_v2 import (
    DatasetEvent,
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
    StaticDataset,
)
from openlineage.client.facet_v2 import (
    DatasetFacet,
    dataset_version_dataset,
    documentation_dataset,
    error_message_run,
    job_type_job,
    parent_run,
    processing_engine_run,
    schema_dataset,
)
from openlineage.client.serde import Serde

from ... import __version__
from ..._model import RunInfo

if TYPE_CHECKING:
    from ..._logged import LoggedArtifact
    from ..._store import ArtifactStore

#: Who made the events (OpenLineage's ``producer``): this package, at this version.
PRODUCER = f"https://pypi.org/project/tracelet-artifacts/{__version__}/"
#: The job namespace of versions logged by an ``Experiment`` or without a producer.
DEFAULT_NAMESPACE = "tracelet"
#: Where the run ids come from: ``uuid5(RUN_ID_NAMESPACE, <source>)``.
RUN_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://pypi.org/project/tracelet-artifacts/")
#: Orchestrators whose ``RunInfo.step`` is a run id (a Prefect task run), not a step name;
#: their step's name is ``RunInfo.extra["task_name"]`` (``RunInfo.name`` is the flow's).
STEP_IS_A_RUN_ID = frozenset({"prefect"})
#: Serializers whose entries are tables with a readable schema.
TABLE_SERIALIZERS = frozenset({"parquet"})

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


# -- runs and jobs ------------------------------------------------------------------------------
def _uuid(source: str) -> str:
    return str(uuid.uuid5(RUN_ID_NAMESPACE, source))


@dataclass(frozen=True)
class LineageRun:
    """One OpenLineage run: its id, its job, its parent, and the catalog run (``RunInfo.key``
    without partition) whose versions are its outputs and inputs (``None``: it logs none)."""

    run_id: str
    namespace: str
    job: str
    job_type: str = "JOB"
    parent: LineageRun | None = None
    source: str | None = None


def orchestrator_run(orchestrator: str, run_id: str, job: str) -> LineageRun:
    """The Dagster run or Prefect flow run: its id is the orchestrator's own where that is a
    UUID, so events of other OpenLineage integrations of that run line up."""
    try:
        lineage_id = str(uuid.UUID(run_id))
    except ValueError:
        lineage_id = _uuid(f"{orchestrator}/{run_id}")
    return LineageRun(lineage_id, orchestrator, job)


def step_name(producer: RunInfo) -> str:
    """The step's own name: Dagster's step key, Prefect's task name, an experiment's name."""
    if producer.orchestrator in STEP_IS_A_RUN_ID:
        return str(producer.extra.get("task_name") or producer.name or producer.step or producer.run_id)
    return producer.step or producer.name or producer.run_id


def step_run(producer: RunInfo, parent_job: str | None = None) -> LineageRun:
    """The run of a producing step (or of an experiment, which has no step and no parent).
    ``parent_job`` names the orchestrator run's job where the producer does not (a Prefect
    task run knows its task, not its flow)."""
    source = RunInfo(producer.orchestrator, producer.run_id, producer.step).key
    if producer.step is None:
        return LineageRun(_uuid(source), producer.orchestrator, step_name(producer), source=source)
    # the job's name (Dagster) or the flow's (Prefect; a task run recorded without its flow has none)
    named = producer.name if producer.orchestrator not in STEP_IS_A_RUN_ID or producer.extra.get("task_name") else None
    job = parent_job or named
    parent = orchestrator_run(producer.orchestrator, producer.run_id, job or producer.orchestrator)
    qualified = f"{job}.{step_name(producer)}" if job else step_name(producer)
    return LineageRun(_uuid(source), producer.orchestrator, qualified, "TASK", parent, source)


def version_run(version: LoggedArtifact) -> LineageRun:
    """The run of a version logged outside any tracked step: a run of its own, named after its
    producer where it has one (``log:<artifact name>`` without)."""
    producer = version.producer
    own = _uuid(f"version/{version.ref}/{version.digest}")
    if producer is None:
        return LineageRun(own, DEFAULT_NAMESPACE, f"log:{version.name}")
    return replace(step_run(producer), run_id=own, source=None)


# -- datasets ---------------------------------------------------------------------------------
def dataset_namespace(store: ArtifactStore) -> str:
    """The store's location: ``file://<absolute path>`` or its object-store URL."""
    uri = store.uri
    return uri.rstrip("/") if "://" in uri else Path(uri).resolve().as_uri()


def table_schema(version: LoggedArtifact) -> schema_dataset.SchemaDatasetFacet | None:
    """The columns (name, type) of the tables a version holds, or ``None`` for no table."""
    tables = [o for o in version.objects if o.serializer in TABLE_SERIALIZERS]
    if not tables:
        return None
    import pyarrow.parquet as pq  # Deferred: only for versions holding tables

    prefix = len(tables) > 1
    fields = []
    for table in tables:
        assert table.digest is not None
        with version.store.blobs.open_blob(table.digest, label=table.path) as handle:
            columns = pq.read_schema(handle)  # the footer only, not the table
        fields += [schema_dataset.SchemaDatasetFacetFields(
            name=f"{table.name}.{column.name}" if prefix else column.name, type=str(column.type))
            for column in columns]
    return schema_dataset.SchemaDatasetFacet(fields=fields, producer=PRODUCER)


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
    schema = table_schema(version)
    if schema is not None:
        facets["schema"] = schema
    if version.description:
        facets["documentation"] = documentation_dataset.DocumentationDatasetFacet(
            description=version.description, producer=PRODUCER)
    return facets


# -- events -----------------------------------------------------------------------------------
def event_time(at: float | datetime) -> str:
    when = at if isinstance(at, datetime) else datetime.fromtimestamp(at, timezone.utc)
    return when.astimezone(timezone.utc).isoformat()


def run_event(state: RunState, run: LineageRun, at: float | datetime, *,
              inputs: list[LoggedArtifact] | None = None, outputs: list[LoggedArtifact] | None = None,
              error: str | None = None) -> RunEvent:
    """One run event; ``error`` (a ``FAIL``) becomes the ``errorMessage`` run facet."""
    run_facets: dict[str, Any] = {"processing_engine": processing_engine_run.ProcessingEngineRunFacet(
        version=__version__, name="tracelet", openlineageAdapterVersion=client_version, producer=PRODUCER)}
    if run.parent is not None:
        parent = run.parent
        run_facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=parent.run_id), job=parent_run.Job(namespace=parent.namespace, name=parent.job),
            root=parent_run.Root(run=parent_run.RootRun(runId=parent.run_id),
                                 job=parent_run.RootJob(namespace=parent.namespace, name=parent.job)),
            producer=PRODUCER)
    if error is not None:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=error, programmingLanguage="python", producer=PRODUCER)
    job_facets: dict[str, Any] = {"jobType": job_type_job.JobTypeJobFacet(
        processingType="BATCH", integration=run.namespace.upper(), jobType=run.job_type, producer=PRODUCER)}
    return RunEvent(
        eventType=state, eventTime=event_time(at),
        run=Run(runId=run.run_id, facets=run_facets), job=Job(namespace=run.namespace, name=run.job, facets=job_facets),
        inputs=[InputDataset(namespace=dataset_namespace(v.store), name=v.name, facets=dataset_facets(v))
                for v in inputs or []],
        outputs=[OutputDataset(namespace=dataset_namespace(v.store), name=v.name, facets=dataset_facets(v))
                 for v in outputs or []],
        producer=PRODUCER)


def dataset_event(version: LoggedArtifact, at: float | datetime) -> DatasetEvent:
    """A ``DatasetEvent`` saying what a version is now (its aliases after a change)."""
    return DatasetEvent(eventTime=event_time(at), producer=PRODUCER, dataset=StaticDataset(
        namespace=dataset_namespace(version.store), name=version.name, facets=dataset_facets(version)))


def payload(event: RunEvent | DatasetEvent) -> dict[str, Any]:
    """One event as the client serializes it (a JSON object): what is stored and sent."""
    return dict(json.loads(Serde.to_json(event)))


def event_json(event: RunEvent | DatasetEvent | dict[str, Any]) -> str:
    """One event as one line of JSON."""
    return Serde.to_json(event)
