"""``TraceletIOManager``: asset and op outputs become tracelet versions with exact lineage.

This module holds the whole flow of ``handle_output`` and ``load_input``; how a value becomes
entries (and is read back) is ``_values``. The resource and the sensors reuse its pieces.

Names
    An asset's artifact is its key path joined by ``/``; a key segment that is not a tracelet name
    segment (empty, starting with ``.`` or ``-``, other characters) is written ``_-<hex of its
    UTF-8 bytes>``, so every asset key Dagster accepts has a name. An op output is
    ``<job>/<op path>/<output>``; an op inside a graph-backed asset is named after its node
    (``<graph>.<op>/<output>``), never after the job that ran it (``materialize`` runs
    ``__ephemeral_asset_job__``).

Inputs of a version
    ``load_input`` (and ``TraceletResource.get``) record each version read as consumed by the
    reading step in the store's catalog (``RunInfo(dagster, run id, step key, partition)``).
    ``handle_output`` logs, as inputs, what that step read plus, for an op inside a graph (a
    graph-backed asset), what every step of the same graph upstream of it read. The catalog is
    the one record, so this holds across processes (multiprocess, dask) and needs no global.

Which version an input loads
    (1) a pin, ``AssetIn(metadata={"tracelet/version": ...})`` or the run tag ``tracelet/pins``;
    (2) the version the upstream step logged in this run (or the run this one re-executes): from
    what this IO manager logged in this process, else from the upstream asset's materialization
    in this run (one indexed query), else (op outputs of another process) from the upstream
    step's ``HANDLED_OUTPUT`` event; (3) the latest version (of the partition, when partitioned).

What an input receives (Dagster's ``UPathIOManager`` rules)
    A partitioned upstream read for one partition gives its value, for none ``None``, for several
    ``{partition key: value}``; missing partitions fail unless
    ``AssetIn(metadata={"allow_missing_partitions": True})``. An input annotated
    ``LoggedArtifact`` receives the version(s) instead of the value(s).

Errors
    A ``TraceletError`` fails the step with a Dagster ``Failure`` (the error chained); errors a
    retry cannot fix are not retried, the others follow the step's ``RetryPolicy``.
"""

from __future__ import annotations

import re
import threading
import typing
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetRecordsFilter,
    ConfigurableIOManager,
    DagsterEventType,
    DagsterInvariantViolationError,
    Failure,
    InputContext,
    MetadataValue,
    MultiPartitionKey,
    OutputContext,
    TableColumn,
    TableSchema,
)
from pydantic import Field, PrivateAttr

from tracelet_core import (
    ArtifactNotFoundError,
    ArtifactResult,
    ArtifactStore,
    ConfigurationError,
    IntegrityError,
    InvalidArtifactError,
    LoggedArtifact,
    RunInfo,
    TraceletArtifact,
    TraceletError,
    UnsafeDeserializationError,
)
from tracelet_core._delivery import configured_backends, log_and_deliver, started
from tracelet_core._names import validate_name
from tracelet_core._quarantine import quarantine_summary
from tracelet_core._reproduce import identical_original
from tracelet_core._values import StoredValue, add_value, inferred_type

from . import _keys
from ._openlineage import report_run
from ._ui import ESCAPED_SEGMENT as _ESCAPED_SEGMENT
from ._ui import ORCHESTRATOR, input_links, lineage_link, read_metadata
from ._values import SERIALIZER_HINT, load_value, preview_markdown

_MAPPING_SUFFIX = re.compile(r"\[[^\]]*\]$")


def plain_value(value: Any) -> Any:
    """The Python value of a metadata entry (Dagster wraps user metadata in ``MetadataValue``)."""
    return value.value if isinstance(value, MetadataValue) else value


# -- the store ------------------------------------------------------------------------------------
class StoreSlot:
    """The store a resource uses during one execution, from the core's store cache
    (``ArtifactStore.shared``: one store per process, URI, catalog URL and ``TRACELET_*`` settings),
    taken on first use and kept until teardown, so a run sees one store. Lock protected."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._store: ArtifactStore | None = None

    def get(self, store_uri: str | None, catalog_url: str | None) -> ArtifactStore:
        with self._lock:
            if self._store is None:
                self._store = ArtifactStore.shared(store_uri, catalog_url)
            return self._store

    def close(self) -> None:
        """Let go of the store (the cache keeps it open for the next run in this process)."""
        with self._lock:
            self._store = None


class StoreAccess:
    """What the IO manager and the resource share: ``store`` from their ``store_uri`` /
    ``catalog_url`` config (``None`` falls back to ``TRACELET_STORE_URI`` / ``TRACELET_CATALOG_URL``),
    let go after execution."""

    store_uri: str | None
    catalog_url: str | None
    _slot: StoreSlot

    @property
    def store(self) -> ArtifactStore:
        """This process's store, opened from the config on first use."""
        return self._slot.get(self.store_uri, self.catalog_url)

    def teardown_after_execution(self, context: Any) -> None:
        report_run(self, context)  # the run and its steps as OpenLineage runs (export on)
        self._slot.close()


# -- names ----------------------------------------------------------------------------------------
def _name_segment(segment: str) -> str:
    try:
        validate_name(segment)
    except InvalidArtifactError:
        return _ESCAPED_SEGMENT + segment.encode("utf-8").hex()
    return _ESCAPED_SEGMENT + segment.encode("utf-8").hex() if segment.startswith(_ESCAPED_SEGMENT) else segment


def asset_artifact_name(asset_path: Sequence[str]) -> str:
    """The artifact of an asset key: its segments joined by ``/`` (escaped where needed)."""
    return "/".join(_name_segment(segment) for segment in asset_path)


def _node_path(step_key: str) -> str:
    return _MAPPING_SUFFIX.sub("", step_key)


def _in_asset_graph(step_context: Any, step_key: str) -> bool:
    """True when ``step_key`` is an op of an asset's computation (a graph-backed asset)."""
    step = step_context.execution_plan.step_dict_by_key.get(step_key)
    return step is not None and step_context.job_def.asset_layer.get_assets_def_for_node(step.node_handle) is not None


def op_output_artifact_name(job_name: str, step_key: str, output_name: str, *, in_asset: bool = False) -> str:
    """``<job>/<op path>/<output>`` (``<op path>/<output>`` inside an asset's graph); the mapping
    key of a mapped step (``op[k]``) is dropped."""
    if in_asset:
        return f"{_node_path(step_key)}/{output_name}"
    return f"{job_name}/{_node_path(step_key)}/{output_name}"


def _step_context(context: InputContext | OutputContext) -> Any | None:
    try:
        return context.step_context
    except DagsterInvariantViolationError:  # a context built by hand (unit tests)
        return None


def output_artifact_name(context: OutputContext) -> str:
    if context.has_asset_key:
        return asset_artifact_name(context.asset_key.path)
    step_context = _step_context(context)
    in_asset = step_context is not None and _in_asset_graph(step_context, context.step_key)
    return op_output_artifact_name(context.job_name, context.step_key, context.name, in_asset=in_asset)


def input_artifact_name(context: InputContext) -> str:
    """The artifact an input reads: the upstream asset, the upstream op output, or, for an op
    input loaded through an input manager, the one its ``tracelet/name`` metadata names."""
    if context.has_asset_key:
        return asset_artifact_name(context.asset_key.path)
    named = plain_value(context.definition_metadata.get(_keys.NAME))
    if named:
        return validate_name(str(named))
    upstream = context.upstream_output
    if upstream is None:
        raise DagsterInvariantViolationError(
            f"tracelet can only load inputs that come from an asset or an op output, or that name "
            f"their artifact: In(input_manager_key=..., metadata={{'{_keys.NAME}': 'lake/events'}})")
    step_context = _step_context(context)
    in_asset = step_context is not None and _in_asset_graph(step_context, upstream.step_key)
    return op_output_artifact_name(upstream.job_name, upstream.step_key, upstream.name, in_asset=in_asset)


# -- steps and runs ---------------------------------------------------------------------------------
def run_partition(context: InputContext | OutputContext) -> str | None:
    """The partition key of the run (None for unpartitioned runs and partition ranges)."""
    return str(context.partition_key) if context.has_partition_key else None


def step_reader(run_id: str, step_key: str, job_name: str | None, partition: str | None) -> RunInfo:
    """The step as the catalog records its reads."""
    return RunInfo(orchestrator=ORCHESTRATOR, run_id=run_id, step=step_key, name=job_name, partition=partition)


def steps_feeding(context: OutputContext) -> list[str]:
    """This output's step and, for an op inside a graph, every step of that graph upstream of it."""
    step_context = _step_context(context)
    if step_context is None or step_context.node_handle.parent is None:
        return [context.step_key]
    steps = step_context.execution_plan.step_dict_by_key
    graph_prefix = str(step_context.node_handle).split(".")[0] + "."
    found: list[str] = []
    pending = [context.step_key]
    while pending:
        key = pending.pop()
        if key in found or key not in steps:
            continue
        found.append(key)
        for step_input in steps[key].step_inputs:
            pending.extend(dep for dep in step_input.dependency_keys if dep.startswith(graph_prefix))
    return found


def output_code_version(context: OutputContext) -> str | None:
    try:
        if context.has_asset_key:
            return context.asset_spec.code_version
        return context.op_def.output_def_named(context.name).code_version
    except DagsterInvariantViolationError:
        return None


def producer(context: OutputContext, partition: str | None) -> RunInfo:
    """The producing step; ``partition`` is the output's own partition (None when unpartitioned)."""
    return RunInfo(orchestrator=ORCHESTRATOR, run_id=context.run_id, step=context.step_key,
                   name=context.job_name, partition=partition, code_version=output_code_version(context))


def idempotency_key(context: OutputContext, partition: str | None) -> str:
    """Same run, step, output and partition: a retried step gets the version it already logged."""
    mapping = context.mapping_key or ""
    return f"dagster:{context.run_id}:{context.step_key}:{context.name}:{mapping}:{partition or ''}"


def partition_metadata(partition: str | None) -> dict[str, Any]:
    """Version metadata naming the partition; a multi-partition key is kept whole (``a|b``)."""
    if partition is None:
        return {}
    metadata: dict[str, Any] = {_keys.PARTITION: str(partition)}
    if isinstance(partition, MultiPartitionKey):
        metadata[_keys.PARTITION_DIMENSIONS] = dict(partition.keys_by_dimension)
    return metadata


# -- committing -------------------------------------------------------------------------------------
def commit(store: ArtifactStore, artifact: TraceletArtifact, *, producer: RunInfo, inputs: Sequence[str],
           aliases: Sequence[str], idempotency_key: str | None, partition: str | None,
           backends: Sequence[str]) -> tuple[LoggedArtifact, dict[str, ArtifactResult]]:
    """Log ``artifact`` and deliver it to the backends it routes to (the core's delivery, with
    the trackers' runs opened on the step): the version and one result per tracker plus
    ``"local"`` (none without backends); a failing tracker never fails the commit."""
    if not backends:
        logged = store.log(artifact, producer=producer, inputs=inputs, aliases=aliases,
                           idempotency_key=idempotency_key, partition=partition)
        return logged, {}
    trackers = configured_backends(backends)
    with started(trackers, producer.name or producer.run_id, producer.run_id):
        results = log_and_deliver(store, artifact, trackers, producer=producer,
                                  run_name=producer.name or producer.run_id, inputs=inputs, aliases=aliases,
                                  idempotency_key=idempotency_key, partition=partition)
    return results.logged, dict(results)


_NOT_RETRYABLE = (ArtifactNotFoundError, ConfigurationError, IntegrityError, InvalidArtifactError,
                  UnsafeDeserializationError)


def tracelet_failure(action: str, error: TraceletError) -> Failure:
    metadata: dict[str, str | list[str]] = {"tracelet/error": type(error).__name__}
    if isinstance(error, IntegrityError) and error.problems:
        metadata["tracelet/problems"] = list(error.problems)
    return Failure(description=f"tracelet could not {action}: {error}", metadata=metadata,
                   allow_retries=not isinstance(error, _NOT_RETRYABLE))


@contextmanager
def failing_step_on_tracelet_error(action: str) -> Iterator[None]:
    """Re-raise a ``TraceletError`` as a ``Failure`` saying what tracelet was doing."""
    try:
        yield
    except TraceletError as error:
        raise tracelet_failure(action, error) from error


# -- what the Dagster UI shows --------------------------------------------------------------------
def _store_value(store_uri: str) -> MetadataValue:
    return MetadataValue.path(store_uri) if "://" not in store_uri else MetadataValue.url(store_uri)


def quarantine_metadata(logged: LoggedArtifact) -> dict[str, Any]:
    """``tracelet/quarantined`` for a quarantined version (a step that logs content identical to
    a quarantined version gets it back, marked), else nothing."""
    summary = quarantine_summary(logged)
    return {} if summary is None else {_keys.QUARANTINED: MetadataValue.text(f"QUARANTINED {summary}")}


def version_metadata(logged: LoggedArtifact, stored: StoredValue, *, new_version: bool,
                     preview: str | None) -> dict[str, Any]:
    """Output metadata describing one logged version (and, when it is quarantined, why)."""
    metadata: dict[str, Any] = {**quarantine_metadata(logged),
        _keys.REF: MetadataValue.text(logged.ref),
        _keys.VERSION: MetadataValue.text(logged.version),
        _keys.DIGEST: MetadataValue.text(logged.digest),
        _keys.URI: MetadataValue.text(f"tracelet://{logged.ref}"),
        _keys.STORE: _store_value(logged.store.uri),
        _keys.SIZE: MetadataValue.int(logged.size_bytes),
        _keys.TYPE: MetadataValue.text(logged.type.value),
        _keys.SERIALIZER_USED: MetadataValue.text(stored.serializer or stored.kind),
        _keys.ALIASES: MetadataValue.json(logged.aliases),
        _keys.INPUTS: MetadataValue.json(logged.inputs),
        _keys.NEW_VERSION: MetadataValue.bool(new_version),
    }
    partition = logged.metadata.get(_keys.PARTITION)
    if partition is not None:
        metadata[_keys.PARTITION] = MetadataValue.text(str(partition))
    if preview:
        metadata[_keys.PREVIEW] = MetadataValue.md(preview)
    extra = logged.producer.extra if logged.producer is not None else {}
    git = extra.get("git")
    if isinstance(git, dict) and git.get("commit"):
        metadata[_keys.GIT_COMMIT] = MetadataValue.text(str(git["commit"]))
        if git.get("dirty") is not None:
            metadata[_keys.GIT_DIRTY] = MetadataValue.bool(bool(git["dirty"]))
    if extra.get("python"):
        metadata[_keys.PYTHON] = MetadataValue.text(str(extra["python"]))
    metadata.update(input_links(logged))
    return metadata


def range_metadata(logged: Mapping[str, LoggedArtifact]) -> dict[str, Any]:
    """Metadata for one output that logged a version per partition (single-run backfills)."""
    versions = list(logged.values())
    return {
        _keys.REFS: MetadataValue.json({partition: v.ref for partition, v in logged.items()}),
        _keys.SIZE: MetadataValue.int(sum(v.size_bytes for v in versions)),
        _keys.STORE: _store_value(versions[0].store.uri) if versions else MetadataValue.text(""),
    }


def backend_metadata(results: Mapping[str, ArtifactResult]) -> dict[str, Any]:
    if not results:
        return {}
    return {_keys.BACKENDS: MetadataValue.json({name: {"ok": r.ok, "version": r.version, "uri": r.uri,
                                                       "error": r.error} for name, r in results.items()})}


def table_metadata(obj: Any, taken: Mapping[str, Any]) -> dict[str, Any]:
    """``dagster/row_count`` and ``dagster/column_schema`` for a DataFrame, unless the asset
    reported its own."""
    if type(obj).__name__ != "DataFrame" or not hasattr(obj, "dtypes"):
        return {}
    metadata: dict[str, Any] = {}
    if "dagster/row_count" not in taken:
        metadata["dagster/row_count"] = MetadataValue.int(int(obj.shape[0]))
    if "dagster/column_schema" not in taken:
        columns = [TableColumn(name=str(name), type=str(dtype)) for name, dtype in obj.dtypes.items()]
        metadata["dagster/column_schema"] = MetadataValue.table_schema(TableSchema(columns=columns))
    return metadata


# -- which version an input loads -------------------------------------------------------------------
def parse_pins(tag_value: str | None) -> dict[str, str]:
    """``"raw:v3, team/features:production"`` -> ``{"raw": "v3", "team/features": "production"}``."""
    pins: dict[str, str] = {}
    for item in (tag_value or "").split(","):
        name, _, selector = item.strip().rpartition(":")
        if name and selector:
            pins[name] = selector
    return pins


def format_pins(pins: dict[str, str]) -> str:
    return ",".join(f"{name}:{selector}" for name, selector in pins.items())


def pin_for(context: InputContext, name: str) -> str | None:
    """The version or alias this input is pinned to, if any."""
    pinned = plain_value(context.definition_metadata.get(_keys.PIN))
    if pinned:
        return str(pinned)
    step_context = _step_context(context)
    tags = dict(step_context.dagster_run.tags) if step_context is not None else {}
    return parse_pins(tags.get(_keys.PINS_TAG)).get(name)


def reproducing(context: OutputContext) -> str | None:
    """The ref a run reproduces (run tag ``tracelet/reproduce``), else ``None``. Such a run
    logs as usual but moves no alias, and gives that version back for identical content."""
    step_context = _step_context(context)
    return None if step_context is None else step_context.dagster_run.tags.get(_keys.REPRODUCE_TAG)


UpstreamOutput = tuple[str, str, str, "str | None"]  # run id, step key, output name, mapping key
LoggedRefs = dict["str | None", str]  # {partition or None: ref}


def _upstream_output(context: InputContext) -> UpstreamOutput | None:
    """The upstream output when a step of this run (or of the run it re-executes) produced it;
    None for assets loaded from earlier runs."""
    upstream = context.upstream_output
    if upstream is None:
        return None
    try:
        return upstream.run_id, upstream.step_key, upstream.name, upstream.mapping_key
    except DagsterInvariantViolationError:  # assets outside this run have no producing step
        return None


def _refs_in(metadata: Mapping[str, Any]) -> LoggedRefs:
    plain = {key: plain_value(value) for key, value in metadata.items()}
    if isinstance(plain.get(_keys.REFS), dict):
        return {str(k): str(v) for k, v in plain[_keys.REFS].items()}
    if plain.get(_keys.REF):
        partition = plain.get(_keys.PARTITION)
        return {None if partition is None else str(partition): str(plain[_keys.REF])}
    return {}


_MAX_RUN_MATERIALIZATIONS = 1_000


def _refs_of_run(records: Sequence[Any], run_id: str) -> LoggedRefs:
    found: LoggedRefs = {}
    for record in reversed(records):  # oldest first, so the newest of the run wins
        if record.run_id == run_id and record.asset_materialization is not None:
            found.update(_refs_in(record.asset_materialization.metadata))
    return found


def _refs_materialized(context: InputContext, run_id: str, partitions: Sequence[str]) -> LoggedRefs:
    """The refs the upstream asset's materializations in run ``run_id`` report: from its newest
    materializations (one indexed query); when a newer run slipped in, from those since the run
    was created."""
    instance = context.instance
    wanted: set[str | None] = set(partitions) or {None}
    subset = list(partitions) or None
    newest = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=subset), limit=len(wanted)).records
    found = _refs_of_run(newest, run_id)
    if wanted <= set(found):
        return found
    run = instance.get_run_record_by_id(run_id)
    if run is None:
        return found
    since_run = AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=subset,
                                   after_timestamp=run.create_timestamp.timestamp())
    return _refs_of_run(instance.fetch_materializations(since_run, limit=_MAX_RUN_MATERIALIZATIONS).records, run_id)


def _refs_handled(context: InputContext, upstream: UpstreamOutput) -> LoggedRefs:
    """The refs in the upstream step's ``HANDLED_OUTPUT`` event (op outputs logged in another process)."""
    run_id, step_key, output_name, mapping_key = upstream
    records = context.instance.all_logs(run_id, of_type=DagsterEventType.HANDLED_OUTPUT)
    for record in reversed(records):  # newest first: the last attempt's handling wins
        event = record.dagster_event
        if event is None or event.step_key != step_key:
            continue
        data: Any = event.event_specific_data
        if data.output_name == output_name and plain_value(data.metadata.get(_keys.MAPPING_KEY)) == mapping_key:
            return _refs_in(data.metadata)
    return {}


class LoggedOutputs:
    """What this IO manager logged in this process, per upstream output, for O(1) lookups."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[UpstreamOutput, LoggedRefs] = {}

    def add(self, output: UpstreamOutput, partition: str | None, ref: str) -> None:
        with self._lock:
            self._refs.setdefault(output, {})[partition] = ref

    def get(self, output: UpstreamOutput) -> LoggedRefs | None:
        with self._lock:
            found = self._refs.get(output)
            return dict(found) if found is not None else None

    def forget_run(self, run_id: str) -> None:
        with self._lock:
            for key in [k for k in self._refs if k[0] == run_id]:
                del self._refs[key]


# -- the IO manager -------------------------------------------------------------------------------
def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return [str(item) for item in value]


@dataclass(frozen=True)
class OutputSettings:
    """What the asset or op asks of its version: type, aliases, serializer, description."""

    artifact_type: str | None
    aliases: list[str]
    serializer: str
    description: str | None

    @classmethod
    def from_context(cls, context: OutputContext, default_serializer: str) -> OutputSettings:
        declared = {**context.definition_metadata,
                    **{k: plain_value(v) for k, v in context.output_metadata.items()}}
        description = declared.get(_keys.DESCRIPTION)
        if description is None and context.has_asset_key:
            description = context.asset_spec.description
        type_ = declared.get(_keys.TYPE)
        return cls(artifact_type=str(type_) if type_ else None, aliases=_as_list(declared.get(_keys.ALIASES)),
                   serializer=str(declared.get(_keys.SERIALIZER) or default_serializer), description=description)


def _wants_version_handle(context: InputContext) -> bool:
    """True when the input is annotated ``LoggedArtifact`` (or ``dict[str, LoggedArtifact]``)."""
    try:
        annotation = context.dagster_type.typing_type
    except DagsterInvariantViolationError:
        return False
    if annotation is LoggedArtifact:
        return True
    args = typing.get_args(annotation)
    return bool(args) and args[-1] is LoggedArtifact


Selected = LoggedArtifact | dict[str, LoggedArtifact] | None


class TraceletIOManager(StoreAccess, ConfigurableIOManager):
    """Stores each output as a versioned, content-addressed tracelet artifact.

    Artifact name = the asset key path joined by ``/`` (op outputs: ``<job>/<op>/<output>``).
    Definition metadata ``tracelet/type``, ``tracelet/aliases``, ``tracelet/serializer`` and
    ``tracelet/description`` shape the version; ``AssetIn(metadata={"tracelet/version": ...})``
    pins what an input loads.
    """

    store_uri: str | None = Field(
        default=None, description="Folder or fsspec URL of the store (default: TRACELET_STORE_URI).")
    catalog_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the catalog (default: TRACELET_CATALOG_URL, or "
                                  "SQLite inside a local store).")
    backends: list[str] = Field(
        default_factory=list, description="Trackers every logged version is routed to (mlflow, wandb, ...).")
    allow_pickle: bool | None = Field(
        default=None, description="Allow storing and loading pickled values, e.g. sklearn models (default: "
                                  "TRACELET_ALLOW_PICKLE, false). Only for stores you trust.")
    serializer: str = Field(
        default="auto", description="Serializer for plain objects: auto (by type), json, json-tagged, yaml, "
                                    "numpy, parquet, torch or pickle. Models always use their framework's format.")

    lineage_pages: str | None = Field(
        default=None, description="Folder to write each logged version's HTML lineage page to "
                                  "(<name>/<version>.html), linked from its materialization as tracelet/lineage.")
    lineage_url: str | None = Field(
        default=None, description="URL the lineage_pages folder is served at: links use it instead of the path.")

    _slot: StoreSlot = PrivateAttr(default_factory=StoreSlot)
    _logged: LoggedOutputs = PrivateAttr(default_factory=LoggedOutputs)

    def teardown_after_execution(self, context: Any) -> None:
        if context.run is not None:
            self._logged.forget_run(context.run.run_id)
        super().teardown_after_execution(context)

    @property
    def _pickle_allowed(self) -> bool:
        return self.store.settings.allow_pickle if self.allow_pickle is None else self.allow_pickle

    # -- outputs ----------------------------------------------------------------------------------
    def handle_output(self, context: OutputContext, obj: Any) -> None:
        name = output_artifact_name(context)
        partitions = list(context.asset_partition_keys) if context.has_asset_partitions else []
        with failing_step_on_tracelet_error(f"log {name}"):
            if isinstance(obj, LoggedArtifact):
                context.add_output_metadata({**self._logged_elsewhere(name, obj), **self._lineage(obj)})
                return
            inputs = self._step_reads(context)
            if len(partitions) > 1:
                self._log_partition_range(context, name, obj, partitions, inputs)
                return
            _logged, metadata = self._log_value(context, name, obj, partitions[0] if partitions else None, inputs)
            context.add_output_metadata(metadata)

    def _step_reads(self, context: OutputContext) -> list[str]:
        """The refs this step (and the steps of its graph upstream of it) recorded reading."""
        partition = run_partition(context)
        refs: dict[str, None] = {}
        for step_key in steps_feeding(context):
            reader = step_reader(context.run_id, step_key, context.job_name, partition)
            refs.update(dict.fromkeys(v.ref for v in self.store.consumed(reader)))
        return list(refs)

    def _log_partition_range(self, context: OutputContext, name: str, obj: Any, partitions: list[str],
                             inputs: list[str]) -> None:
        """A single-run backfill: ``obj`` maps each partition key to its value."""
        values = {str(k): v for k, v in obj.items()} if isinstance(obj, Mapping) else None
        if values is None or set(values) != set(map(str, partitions)):
            raise Failure(description=(
                f"{name}: this step covers {len(partitions)} partitions; return a dict "
                "{partition key: value} with exactly those keys so each partition gets its own version"),
                allow_retries=False)
        logged = {str(p): self._log_value(context, name, values[str(p)], p, inputs)[0] for p in partitions}
        context.add_output_metadata(range_metadata(logged))

    def _log_value(self, context: OutputContext, name: str, obj: Any, partition: str | None,
                   inputs: list[str]) -> tuple[LoggedArtifact, dict[str, Any]]:
        """Log one value as one version; the version and the output metadata describing it."""
        settings = OutputSettings.from_context(context, self.serializer)
        made_by = producer(context, partition)
        artifact = TraceletArtifact(name, settings.artifact_type or inferred_type(obj), settings.description)
        stored = add_value(artifact, obj, serializer=settings.serializer, allow_pickle=self._pickle_allowed,
                           serializer_hint=SERIALIZER_HINT)
        self._describe(context, artifact, stored.to_metadata(), partition)
        preview = self._preview(context, obj, stored)
        rerun_of = reproducing(context)
        same = identical_original(self.store, artifact, rerun_of)
        logged, results = (same, {}) if same is not None else commit(
            self.store, artifact, producer=made_by, inputs=inputs, aliases=[] if rerun_of else settings.aliases,
            backends=self.backends, idempotency_key=idempotency_key(context, partition),
            partition=None if partition is None else str(partition))
        self._logged.add((context.run_id, context.step_key, context.name, context.mapping_key),
                         None if partition is None else str(partition), logged.ref)
        new_version = logged.producer is not None and logged.producer.key == made_by.key
        metadata = version_metadata(logged, stored, new_version=new_version, preview=preview)
        if context.mapping_key is not None:
            metadata[_keys.MAPPING_KEY] = MetadataValue.text(context.mapping_key)
        return logged, {**metadata, **backend_metadata(results), **table_metadata(obj, context.output_metadata),
                        **self._lineage(logged)}

    def _lineage(self, logged: LoggedArtifact) -> dict[str, Any]:
        return lineage_link(logged, self.lineage_pages, self.lineage_url)

    @staticmethod
    def _preview(context: OutputContext, obj: Any, stored: StoredValue) -> str | None:
        """A markdown preview; one that cannot be drawn is reported in the step's log, not raised
        (the value is stored either way)."""
        try:
            return preview_markdown(obj, stored, stored.source)
        except Exception as error:  # noqa: BLE001 - reported below; a preview never fails a step
            context.log.warning(f"tracelet: no preview for {type(obj).__name__}: {type(error).__name__}: {error}")
            return None

    @staticmethod
    def _logged_elsewhere(name: str, logged: LoggedArtifact) -> dict[str, Any]:
        """An asset that logged its own version (``return tracelet_store.log(...)``) is that
        version: nothing is logged twice, the materialization points at it."""
        if logged.name != name:
            raise Failure(description=(
                f"the step returned {logged.ref}, but this output is the artifact {name!r}; log it under "
                f"{name!r} or return the value itself"), allow_retries=False)
        stored = StoredValue("version", logged.name, next((o.serializer for o in logged.objects), None))
        return version_metadata(logged, stored, new_version=False, preview=None)

    @staticmethod
    def _describe(context: OutputContext, artifact: TraceletArtifact, value: dict[str, Any],
                  partition: str | None) -> None:
        """Version metadata (the value's format, the asset key and the partition's dimensions);
        the partition itself is recorded by the store with the version."""
        artifact.metadata[_keys.VALUE] = value
        if context.has_asset_key:
            artifact.metadata[_keys.ASSET_KEY] = list(context.asset_key.path)
        artifact.metadata.update(partition_metadata(partition))

    # -- inputs -----------------------------------------------------------------------------------
    def load_input(self, context: InputContext) -> Any:
        name = input_artifact_name(context)
        with failing_step_on_tracelet_error(f"load {name}"):
            selected = self._select_versions(context, name)
            self._note_reads(context, selected)
            if _wants_version_handle(context) or selected is None:
                return selected
            entry = plain_value(context.definition_metadata.get(_keys.ENTRY))
            if isinstance(selected, dict):
                return {key: load_value(v, allow_pickle=self.allow_pickle, entry=entry) for key, v in selected.items()}
            return load_value(selected, allow_pickle=self.allow_pickle, entry=entry)

    def _upstream_refs(self, context: InputContext, partitions: Sequence[str]) -> LoggedRefs:
        """``{partition or None: ref}`` the upstream step logged in this run (or the run it re-executes)."""
        upstream = _upstream_output(context)
        if upstream is None:
            return {}
        logged_here = self._logged.get(upstream)
        if logged_here is not None:
            return logged_here
        try:
            if context.has_asset_key:
                return _refs_materialized(context, upstream[0], partitions)
            return _refs_handled(context, upstream)
        except DagsterInvariantViolationError:  # a hand-built context without an instance
            return {}

    def _select_versions(self, context: InputContext, name: str) -> Selected:
        store = self.store
        pin = pin_for(context, name)
        if pin is not None:
            return store.get(name, pin)
        if not (context.has_asset_key and context.has_asset_partitions):
            ref = self._upstream_refs(context, []).get(None)
            return store.get(ref) if ref else store.get(name)
        keys = [str(k) for k in context.asset_partition_keys]
        if not keys:
            return None
        logged_upstream = self._upstream_refs(context, keys)
        found = {k: store.get(logged_upstream[k]) for k in keys if k in logged_upstream}
        for key in (k for k in keys if k not in found):
            try:
                found[key] = store.get(name, partition=key)
            except ArtifactNotFoundError:
                continue
        absent = [k for k in keys if k not in found]
        if absent and not plain_value(context.definition_metadata.get(_keys.ALLOW_MISSING_PARTITIONS, False)):
            shown = ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else "")
            raise ArtifactNotFoundError(f"artifact {name!r} has no version for partition(s) {shown}")
        if len(keys) == 1:
            return found.get(keys[0])
        return {k: found[k] for k in keys if k in found}

    def _note_reads(self, context: InputContext, selected: Selected) -> None:
        """Record the reads as consumed by this step (what it logs lists them), show them."""
        versions = list(selected.values()) if isinstance(selected, dict) else [selected] if selected else []
        refs = [v.ref for v in versions]
        step_context = _step_context(context)
        if step_context is not None and refs:
            reader = step_reader(step_context.run_id, step_context.step.key, context.job_name,
                                 run_partition(context))
            self.store.record_consumption(reader, refs)
        if isinstance(selected, LoggedArtifact) and context.has_asset_key:
            step_key = step_context.step.key if step_context is not None else None
            run_id = step_context.run_id if step_context is not None else None
            context.add_input_metadata(read_metadata(selected, run_id, step_key))
        elif refs:
            context.log.info(f"tracelet: loaded {', '.join(refs)}")

