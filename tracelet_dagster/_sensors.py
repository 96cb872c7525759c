"""Artifacts made outside Dagster, seen from Dagster: a source asset and a sensor.

``tracelet_source_asset(name)`` is an observable source asset (an ``AssetSpec``, key = the name
split on ``/``, observed by a function) loaded through the tracelet IO manager; observing it
reports the latest version's digest as its ``DataVersion``, so Dagster marks downstream assets
stale when a new version arrives.

``tracelet_sensor(name, alias=None, job=...)`` requests one run per new version of ``name`` (or
per move of ``alias``). Its cursor holds the newest version number seen (or the alias's target
and how often it moved), so a version is never requested twice and none is skipped between
ticks; the first tick requests the current version only. Each run is tagged
``tracelet/pins=<name>:vN``: the IO manager loads exactly that version, even if a newer one
lands before the run starts. The run key (``<ref>`` or ``<name>@<alias>#<move>``) makes Dagster
drop a request it has already launched.

Both read the store through the resource at ``resource_key`` (a ``TraceletIOManager`` or a
``TraceletResource``), so it is configured once, in ``Definitions(resources=...)``.
"""


import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    AssetsDefinition,
    AssetSpec,
    BetaWarning,
    DataVersion,
    DefaultSensorStatus,
    Failure,
    ObserveResult,
    PartitionsDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    multi_observable_source_asset,
    sensor,
)

from tracelet_core import ArtifactNotFoundError, ArtifactStore, LoggedArtifact, TraceletArtifact
from tracelet_core._quarantine import quarantine_summary

from . import _keys
from ._io_manager import format_pins

JobTarget = Any  # a JobDefinition, GraphDefinition or UnresolvedAssetJobDefinition


def _checked_name(name: str) -> str:
    """``name`` if it is a valid artifact name (raises ``InvalidArtifactError`` otherwise)."""
    return TraceletArtifact(name).name


def _store_of(resources: Any, resource_key: str) -> ArtifactStore:
    store: ArtifactStore = getattr(resources, resource_key).store
    return store


def _version_metadata(logged: LoggedArtifact) -> dict[str, Any]:
    metadata: dict[str, Any] = {_keys.REF: logged.ref, _keys.VERSION: logged.version, _keys.DIGEST: logged.digest,
                                _keys.URI: f"tracelet://{logged.ref}", _keys.SIZE: logged.size_bytes}
    summary = quarantine_summary(logged)
    if summary is not None:
        metadata[_keys.QUARANTINED] = f"QUARANTINED {summary}"
    return metadata


# -- source asset -----------------------------------------------------------------------------------
def _op_name(name: str) -> str:
    return "observe_" + "".join(ch if ch.isalnum() else "_" for ch in name)


def tracelet_source_asset(name: str, *, resource_key: str = "tracelet", description: str | None = None,
                          group_name: str | None = None,
                          partitions_def: PartitionsDefinition | None = None) -> AssetsDefinition:
    """An observable source asset (an ``AssetSpec`` observed by tracelet) for the artifact
    ``name``, loaded with the IO manager at ``resource_key``; its data version is the latest
    version's digest. With ``partitions_def``, each partition's data version is the digest of
    that partition's newest version (versions logged with ``partition=``); partitions with no
    version are not reported."""
    key = AssetKey(_checked_name(name).split("/"))
    spec = AssetSpec(key, description=description or f"tracelet artifact {name}, logged outside Dagster",
                     group_name=group_name, metadata={_keys.NAME: name},
                     partitions_def=partitions_def, skippable=partitions_def is not None)
    spec = spec.with_io_manager_key(resource_key)

    def observe(context: AssetExecutionContext) -> Iterator[ObserveResult | AssetObservation]:
        store = _store_of(context.resources, resource_key)
        if partitions_def is not None:
            yield from _observed_partitions(context, store, name, key, partitions_def)
            return
        try:
            latest = store.get(name)
        except ArtifactNotFoundError as error:
            raise Failure(description=f"tracelet artifact {name!r} has no versions yet",
                          allow_retries=False) from error
        yield ObserveResult(asset_key=key, data_version=DataVersion(latest.digest),
                            metadata=_version_metadata(latest))

    # Dagster marks observable source assets beta; tracelet_source_asset is ours and stable,
    # so the warning would only tell users about our implementation.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        decorate = multi_observable_source_asset(specs=[spec], name=_op_name(name),
                                                 required_resource_keys={resource_key})
    observed: AssetsDefinition = decorate(observe)
    return observed


def _observed_partitions(context: AssetExecutionContext, store: ArtifactStore, name: str, key: AssetKey,
                         partitions_def: PartitionsDefinition) -> Iterator[AssetObservation]:
    """One observation per partition that has a version (the run's partitions, else all)."""
    if context.has_partition_key_range or context.has_partition_key:
        keys = list(context.partition_keys)
    else:
        keys = list(partitions_def.get_partition_keys(dynamic_partitions_store=context.instance))
    seen = 0
    for partition in keys:
        try:
            latest = store.get(name, partition=partition)
        except ArtifactNotFoundError:
            continue
        seen += 1
        yield AssetObservation(asset_key=key, partition=partition, metadata=_version_metadata(latest),
                               tags={_keys.DATA_VERSION_TAG: latest.digest})
    if not seen:
        raise Failure(description=f"tracelet artifact {name!r} has no versions in these partitions yet",
                      allow_retries=False)


# -- sensor -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SensorCursor:
    """The newest version seen (versions mode), or the alias's target and move count."""

    version: int = 0
    moves: int = 0

    @classmethod
    def parse(cls, text: str | None) -> "SensorCursor | None":
        if not text:
            return None
        data = json.loads(text)
        return cls(version=int(data.get("version", 0)), moves=int(data.get("moves", 0)))

    def dump(self) -> str:
        return json.dumps({"version": self.version, "moves": self.moves}, sort_keys=True)


def _run_request(logged: LoggedArtifact, run_key: str) -> RunRequest:
    return RunRequest(run_key=run_key, tags={_keys.PINS_TAG: format_pins({logged.name: logged.version}),
                                             _keys.REF: logged.ref, _keys.DIGEST: logged.digest})


def new_version_requests(versions: Sequence[LoggedArtifact], cursor: SensorCursor | None
                         ) -> "tuple[list[RunRequest], SensorCursor | None]":
    """One run per version newer than the cursor (only the newest when there is no cursor)."""
    fresh = [v for v in versions if v.version_number > cursor.version] if cursor else list(versions[-1:])
    if not fresh:
        return [], cursor
    return [_run_request(v, v.ref) for v in fresh], SensorCursor(version=fresh[-1].version_number)


def alias_move_requests(target: LoggedArtifact, alias: str, cursor: SensorCursor | None
                        ) -> "tuple[list[RunRequest], SensorCursor | None]":
    """One run when ``alias`` points somewhere other than the cursor says."""
    if cursor is not None and cursor.version == target.version_number:
        return [], cursor
    moves = cursor.moves + 1 if cursor else 1
    request = _run_request(target, f"{target.name}@{alias}#{moves}:{target.version}")
    return [request], SensorCursor(version=target.version_number, moves=moves)


def tracelet_sensor(name: str, alias: str | None = None, job: JobTarget = None, *, resource_key: str = "tracelet",
                    sensor_name: str | None = None, minimum_interval_seconds: int | None = None,
                    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED) -> SensorDefinition:
    """A sensor requesting a run of ``job`` per new version of ``name`` (or per move of ``alias``)."""
    _checked_name(name)
    if job is None:
        raise ValueError("tracelet_sensor needs job=: the job to run for each new version")
    what = f"{name}@{alias}" if alias else name
    default_name = "tracelet_" + what.replace("/", "__").replace("@", "_at_").replace("-", "_").replace(".", "_")

    @sensor(job=job, name=sensor_name or default_name, minimum_interval_seconds=minimum_interval_seconds,
            default_status=default_status, required_resource_keys={resource_key},
            description=f"Runs {getattr(job, 'name', 'the job')} for each new version of tracelet artifact {what}")
    def _tracelet_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        store = _store_of(context.resources, resource_key)
        cursor = SensorCursor.parse(context.cursor)
        try:
            if alias is None:
                requests, new_cursor = new_version_requests(store.versions(name), cursor)
            else:
                requests, new_cursor = alias_move_requests(store.get(name, alias), alias, cursor)
        except ArtifactNotFoundError as error:
            return SkipReason(f"nothing to run yet: {error}")
        if not requests:
            return SkipReason(f"no new version of {what} since {name}:v{cursor.version if cursor else 0}")
        return SensorResult(run_requests=requests, cursor=new_cursor.dump() if new_cursor else None)

    return _tracelet_sensor
