"""The output metadata a materialization carries into the Dagster UI.

Every logged output reports ``tracelet/ref``, ``tracelet/version``, ``tracelet/digest``,
``tracelet/uri``, ``tracelet/store``, ``tracelet/size_bytes``, ``tracelet/type``,
``tracelet/serializer``, ``tracelet/aliases``, ``tracelet/inputs`` (the exact versions the step
read), ``tracelet/new_version`` (false when unchanged content returned the existing version),
``tracelet/partition`` and a ``tracelet/preview``; DataFrames also ``dagster/row_count`` and
``dagster/column_schema``, which the UI charts and shows as the asset's columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import MetadataValue, TableColumn, TableSchema

from tracelet_core import ArtifactResult, LoggedArtifact

from . import _keys
from ._values import StoredValue


def plain_value(value: Any) -> Any:
    """The Python value of a metadata entry (Dagster wraps user metadata in ``MetadataValue``)."""
    return value.value if isinstance(value, MetadataValue) else value


def _store_value(store_uri: str) -> MetadataValue:
    return MetadataValue.path(store_uri) if "://" not in store_uri else MetadataValue.url(store_uri)


def version_metadata(logged: LoggedArtifact, stored: StoredValue, *, new_version: bool,
                     preview: str | None) -> dict[str, Any]:
    """Metadata describing one logged version."""
    metadata: dict[str, Any] = {
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
