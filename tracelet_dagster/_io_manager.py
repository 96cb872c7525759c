"""``TraceletIOManager``: asset and op outputs become tracelet versions with exact lineage.

``handle_output`` logs one version per output (per partition) with the producing step as
``RunInfo`` and, as inputs, the exact versions the same step attempt loaded (noted by
``load_input``, see ``_reads``); it reports ``tracelet/ref``, ``tracelet/digest``,
``tracelet/uri`` and more as output metadata (see ``_metadata``). ``load_input`` picks the
version as ``_lookup`` describes and reads it back as ``_values`` describes, verifying digests
before deserialising. tracelet errors fail the step as ``Failure`` with the error chained.
"""

from __future__ import annotations

import tempfile
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import (
    ConfigurableIOManager,
    DagsterInvariantViolationError,
    Failure,
    InputContext,
    MetadataValue,
    OutputContext,
)
from pydantic import Field, PrivateAttr

from tracelet_core import ArtifactNotFoundError, LoggedArtifact, TraceletArtifact

from . import _keys, _lookup, _steps
from ._delivery import commit
from ._failures import failing_step_on_tracelet_error
from ._metadata import backend_metadata, plain_value, range_metadata, table_metadata, version_metadata
from ._preview import preview_markdown
from ._reads import STEP_READS
from ._stores import StoreAccess, StoreSlot
from ._values import StoredValue, add_value, inferred_type, load_value


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
        default=None, description="Allow loading pickled entries, e.g. sklearn models (default: "
                                  "TRACELET_ALLOW_PICKLE, false). Only for stores you trust.")
    serializer: str = Field(
        default="auto", description="Serializer for plain objects: auto (by type), json, yaml, numpy, "
                                    "parquet, torch or pickle. Models always use their framework's format.")

    _slot: StoreSlot = PrivateAttr(default_factory=StoreSlot)

    # -- outputs ----------------------------------------------------------------------------------
    def handle_output(self, context: OutputContext, obj: Any) -> None:
        name = _steps.output_artifact_name(context)
        partitions = _steps.output_partitions(context)
        with failing_step_on_tracelet_error(f"log {name}"):
            if isinstance(obj, LoggedArtifact):
                context.add_output_metadata(self._logged_elsewhere(name, obj))
                return
            if len(partitions) > 1:
                self._log_partition_range(context, name, obj, partitions)
                return
            _logged, metadata = self._log_value(context, name, obj, partitions[0] if partitions else None)
            context.add_output_metadata(metadata)

    def _log_partition_range(self, context: OutputContext, name: str, obj: Any, partitions: list[str]) -> None:
        """A single-run backfill: ``obj`` maps each partition key to its value."""
        values = {str(k): v for k, v in obj.items()} if isinstance(obj, Mapping) else None
        if values is None or set(values) != set(map(str, partitions)):
            raise Failure(description=(
                f"{name}: this step covers {len(partitions)} partitions; return a dict "
                "{partition key: value} with exactly those keys so each partition gets its own version"),
                allow_retries=False)
        logged = {str(p): self._log_value(context, name, values[str(p)], p)[0] for p in partitions}
        context.add_output_metadata(range_metadata(logged))

    def _log_value(self, context: OutputContext, name: str, obj: Any,
                   partition: str | None) -> tuple[LoggedArtifact, dict[str, Any]]:
        """Log one value as one version; the version and the output metadata describing it."""
        settings = OutputSettings.from_context(context, self.serializer)
        producer = _steps.producer(context, partition or _steps.run_partition(context))
        inputs = STEP_READS.refs(self.store.uri, _steps.output_attempt(context))
        with tempfile.TemporaryDirectory(prefix="tracelet-dagster-") as scratch:
            artifact = TraceletArtifact(name, settings.artifact_type or inferred_type(obj), settings.description)
            stored = add_value(artifact, obj, settings.serializer, Path(scratch))
            self._describe(context, artifact, stored.to_metadata(), partition)
            preview = preview_markdown(obj, stored, stored.source)
            logged, results = commit(self.store, artifact, producer=producer, inputs=inputs,
                                     aliases=settings.aliases, backends=self.backends,
                                     idempotency_key=_steps.idempotency_key(context, partition),
                                     partition=None if partition is None else str(partition))
        new_version = logged.producer is not None and logged.producer.key == producer.key
        metadata = version_metadata(logged, stored, new_version=new_version, preview=preview)
        if context.mapping_key is not None:
            metadata[_keys.MAPPING_KEY] = MetadataValue.text(context.mapping_key)
        return logged, {**metadata, **backend_metadata(results), **table_metadata(obj, context.output_metadata)}

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
        if partition is not None:
            described = _steps.partition_metadata(partition)
            artifact.metadata.update(described)

    # -- inputs -----------------------------------------------------------------------------------
    def load_input(self, context: InputContext) -> Any:
        name = _steps.input_artifact_name(context)
        with failing_step_on_tracelet_error(f"load {name}"):
            selected = self._select_versions(context, name)
            versions = list(selected.values()) if isinstance(selected, dict) else [selected]
            self._note_reads(context, versions, single=not isinstance(selected, dict))
            if _wants_version_handle(context):
                return selected
            entry = plain_value(context.definition_metadata.get(_keys.ENTRY))
            if isinstance(selected, dict):
                return {key: load_value(v, allow_pickle=self.allow_pickle, entry=entry) for key, v in selected.items()}
            return load_value(selected, allow_pickle=self.allow_pickle, entry=entry)

    def _select_versions(self, context: InputContext, name: str) -> LoggedArtifact | dict[str, LoggedArtifact]:
        store = self.store
        pin = _lookup.pin_for(context, name)
        if pin is not None:
            return store.get(name, pin)
        logged_upstream = _lookup.refs_logged_upstream(context)
        if not (context.has_asset_key and context.has_asset_partitions):
            ref = logged_upstream.get(None)
            return store.get(ref) if ref else store.get(name)
        keys = [str(k) for k in context.asset_partition_keys]
        found = {k: store.get(logged_upstream[k]) for k in keys if k in logged_upstream}
        missing = [k for k in keys if k not in found]
        if missing:
            found.update(_lookup.newest_per_partition(store, name, missing))
        absent = [k for k in keys if k not in found]
        if absent and not plain_value(context.definition_metadata.get(_keys.ALLOW_MISSING_PARTITIONS, False)):
            shown = ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else "")
            raise ArtifactNotFoundError(f"artifact {name!r} has no version for partition(s) {shown}")
        if len(keys) == 1 and context.has_partition_key and keys[0] in found:
            return found[keys[0]]
        return {k: found[k] for k in keys if k in found}

    def _note_reads(self, context: InputContext, versions: list[LoggedArtifact], *, single: bool) -> None:
        """Remember the reads for this step's outputs, record them as consumed, show them."""
        refs = [v.ref for v in versions]
        attempt = _steps.input_attempt(context)
        if attempt is not None and refs:
            STEP_READS.add(self.store.uri, attempt, refs)
            self.store.record_consumption(_steps.consumer(context, attempt), refs)
        one_partition = not context.has_asset_partitions or len(context.asset_partition_keys) == 1
        if single and context.has_asset_key and one_partition:
            context.add_input_metadata({_keys.REF: versions[0].ref, _keys.DIGEST: versions[0].digest})
        elif refs:
            context.log.info(f"tracelet: loaded {', '.join(refs)}")
