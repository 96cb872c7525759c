"""Artifacts logged outside Dagster: the observable source asset and the sensor with its cursor."""

from typing import Any

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    RunRequest,
    asset,
    build_sensor_context,
    define_asset_job,
)

from tracelet_core import ArtifactStore, LoggedArtifact, TraceletArtifact
from tracelet_dagster import TraceletIOManager, tracelet_sensor, tracelet_source_asset

pytest_plugins = ["dagster_fixtures"]

dataset = tracelet_source_asset("lake/dataset")


@asset(io_manager_key="tracelet", deps=[])
def dataset_rows(dataset: list[int]) -> int:
    return len(dataset)


retrain = define_asset_job("retrain", selection=[dataset_rows])
on_new_version = tracelet_sensor("lake/dataset", job=retrain)
on_production = tracelet_sensor("lake/dataset", alias="production", job=retrain)


def _log(store: ArtifactStore, rows: list[int]) -> LoggedArtifact:
    return store.log(TraceletArtifact("lake/dataset", "dataset").add_object(rows, "value", "json"))


def _tick(sensor: Any, dagster_instance: DagsterInstance, tracelet_io: TraceletIOManager,
          cursor: str | None) -> tuple[list[RunRequest], str | None, str | None]:
    with build_sensor_context(instance=dagster_instance, cursor=cursor, resources={"tracelet": tracelet_io}) as context:
        data = sensor.evaluate_tick(context)
    return list(data.run_requests or []), data.cursor, data.skip_message


def test_the_sensor_requests_each_new_version_once_and_misses_none(
        dagster_instance: DagsterInstance, tracelet_io: TraceletIOManager, store: ArtifactStore) -> None:
    requests, cursor, skipped = _tick(on_new_version, dagster_instance, tracelet_io, None)
    assert (requests, cursor) == ([], None) and "nothing to run yet" in (skipped or "")

    _log(store, [1])
    _log(store, [1, 2])
    requests, cursor, _ = _tick(on_new_version, dagster_instance, tracelet_io, None)
    assert [r.run_key for r in requests] == ["lake/dataset:v2"]  # first tick: the current version only

    requests, cursor, skipped = _tick(on_new_version, dagster_instance, tracelet_io, cursor)
    assert requests == [] and "no new version" in (skipped or "")

    _log(store, [1, 2, 3])
    _log(store, [1, 2, 3, 4])
    requests, cursor, _ = _tick(on_new_version, dagster_instance, tracelet_io, cursor)
    assert [r.run_key for r in requests] == ["lake/dataset:v3", "lake/dataset:v4"]
    assert [r.tags["tracelet/pins"] for r in requests] == ["lake/dataset:v3", "lake/dataset:v4"]
    assert _tick(on_new_version, dagster_instance, tracelet_io, cursor)[0] == []


def test_the_alias_sensor_requests_a_run_per_move(dagster_instance: DagsterInstance, tracelet_io: TraceletIOManager,
                                                  store: ArtifactStore) -> None:
    _log(store, [1])
    _log(store, [2])
    assert _tick(on_production, dagster_instance, tracelet_io, None)[0] == []  # no alias yet

    keys = []
    cursor = None
    for target in ["v1", "v2", "v1"]:
        store.set_alias(f"lake/dataset:{target}", "production")
        requests, cursor, _ = _tick(on_production, dagster_instance, tracelet_io, cursor)
        assert [r.tags["tracelet/pins"] for r in requests] == [f"lake/dataset:{target}"]
        keys.append(requests[0].run_key)
        assert _tick(on_production, dagster_instance, tracelet_io, cursor)[0] == []  # unmoved: nothing
    assert len(set(keys)) == 3  # moving back to v1 is a new move, not a duplicate


def test_a_requested_run_loads_the_version_that_triggered_it(
        dagster_instance: DagsterInstance, tracelet_io: TraceletIOManager, store: ArtifactStore) -> None:
    _log(store, [1, 2, 3])
    [request], _, _ = _tick(on_new_version, dagster_instance, tracelet_io, None)
    _log(store, [9])  # lands before the requested run starts

    defs = Definitions(assets=[dataset, dataset_rows], jobs=[retrain], resources={"tracelet": tracelet_io})
    defs.resolve_job_def("retrain").execute_in_process(instance=dagster_instance, tags=request.tags)

    assert store.get("dataset_rows:v1").load("value") == 3
    assert store.get("dataset_rows:v1").inputs == ["lake/dataset:v1"]


def _observe(dagster_instance: DagsterInstance, tracelet_io: TraceletIOManager, raise_on_error: bool = True) -> Any:
    defs = Definitions(assets=[dataset], jobs=[define_asset_job("observe", selection=[dataset])],
                       resources={"tracelet": tracelet_io})
    return defs.resolve_job_def("observe").execute_in_process(instance=dagster_instance, raise_on_error=raise_on_error)


def test_observing_the_source_asset_reports_the_latest_digest_as_data_version(
        dagster_instance: DagsterInstance, tracelet_io: TraceletIOManager, store: ArtifactStore) -> None:
    assert not _observe(dagster_instance, tracelet_io, raise_on_error=False).success  # nothing logged yet

    logged = _log(store, [1, 2])
    result = _observe(dagster_instance, tracelet_io)

    [observation] = result.asset_observations_for_node("observe_lake_dataset")
    assert observation.asset_key == AssetKey(["lake", "dataset"])
    assert observation.tags["dagster/data_version"] == logged.digest
    assert observation.metadata["tracelet/ref"].value == "lake/dataset:v1"
    _log(store, [3])
    assert _observe(dagster_instance, tracelet_io).asset_observations_for_node("observe_lake_dataset")[0].tags[
        "dagster/data_version"] == store.get("lake/dataset:v2").digest


def test_names_that_are_not_artifact_names_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid artifact name"):
        tracelet_source_asset("bad name")
    with pytest.raises(ValueError, match="needs job="):
        tracelet_sensor("lake/dataset")
