"""Partitions: one version per partition, keys kept intact, each partition reads its own."""

from typing import Any

import pytest
from dagster import (
    AssetExecutionContext,
    AssetIn,
    DagsterInstance,
    DailyPartitionsDefinition,
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    asset,
    materialize,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from tracelet_core import ArtifactStore

pytest_plugins = ["dagster_fixtures"]

colors = StaticPartitionsDefinition(["red", "green", "blue|teal", "navy/dark"])
days = DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-04")
regions_by_day = MultiPartitionsDefinition({"day": days, "region": StaticPartitionsDefinition(["eu/west", "us"])})
files = DynamicPartitionsDefinition(name="files")


@asset(io_manager_key="tracelet", partitions_def=colors)
def paint(context: AssetExecutionContext) -> dict[str, str]:
    return {"color": "same for every partition"} if context.partition_key != "red" else {"color": "red"}


@asset(io_manager_key="tracelet", partitions_def=colors)
def brush(context: AssetExecutionContext, paint: dict[str, str]) -> str:
    return f"{context.partition_key}:{paint['color']}"


@asset(io_manager_key="tracelet")
def palette(paint: dict[str, dict[str, str]]) -> list[str]:
    return sorted(paint)


def _partition(store: ArtifactStore, ref: str) -> Any:
    return store.get(ref).metadata.get("tracelet/partition")


def test_static_partitions_get_one_version_each_and_read_their_own(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    for key in ["green", "blue|teal", "red"]:
        materialize([paint, brush], partition_key=key, resources=dagster_resources)

    assert [_partition(store, v.ref) for v in store.versions("paint")] == ["green", "blue|teal", "red"]
    assert store.get("paint:v2").load("value") == store.get("paint:v1").load("value")  # equal, yet two versions
    assert store.get("paint:v2").producer.partition == "blue|teal"
    assert store.get("brush:v2").load("value") == "blue|teal:same for every partition"
    assert store.get("brush:v2").inputs == ["paint:v2"]


def test_a_partition_rematerialized_unchanged_keeps_its_version(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    materialize([paint], partition_key="green", resources=dagster_resources)
    materialize([paint], partition_key="green", resources=dagster_resources)

    assert [v.ref for v in store.versions("paint")] == ["paint:v1"]


def test_a_partitioned_input_reads_the_newest_version_of_its_own_partition(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    materialize([paint], partition_key="green", resources=dagster_resources)
    materialize([paint], partition_key="red", resources=dagster_resources)
    materialize([paint, brush], partition_key="green", selection=["brush"], resources=dagster_resources)

    assert store.get("brush:v1").inputs == ["paint:v1"]
    assert store.get("brush:v1").load("value") == "green:same for every partition"


def test_an_unpartitioned_asset_reads_every_partition_as_a_dict(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    for key in colors.get_partition_keys():
        materialize([paint], partition_key=key, resources=dagster_resources)
    materialize([paint, palette], selection=["palette"], resources=dagster_resources)

    assert store.get("palette:v1").load("value") == sorted(colors.get_partition_keys())
    assert sorted(store.get("palette:v1").inputs) == ["paint:v1", "paint:v2", "paint:v3", "paint:v4"]


def test_missing_partitions_fail_the_read_unless_allowed(dagster_resources: dict[str, object],
                                                         store: ArtifactStore) -> None:
    @asset(io_manager_key="tracelet", ins={"paint": AssetIn(metadata={"allow_missing_partitions": True})})
    def partial(paint: dict[str, dict[str, str]]) -> list[str]:
        return sorted(paint)

    materialize([paint], partition_key="red", resources=dagster_resources)
    failed = materialize([paint, palette], selection=["palette"], resources=dagster_resources, raise_on_error=False)
    assert not failed.success
    [failure] = [e for e in failed.all_events if e.is_step_failure]
    assert "has no version for partition(s) green, blue|teal, navy/dark" in failure.step_failure_data.error.message

    materialize([paint, partial], selection=["partial"], resources=dagster_resources)
    assert store.get("partial:v1").load("value") == ["red"]


@asset(io_manager_key="tracelet", partitions_def=days)
def daily(context: AssetExecutionContext) -> dict[str, str]:
    return {"day": context.partition_key}


@asset(io_manager_key="tracelet", partitions_def=days)
def daily_batch(context: AssetExecutionContext) -> dict[str, list[str]]:
    return {key: [key] for key in context.partition_keys}


@asset(io_manager_key="tracelet")
def days_seen(daily_batch: dict[str, list[str]]) -> list[str]:
    return [day for values in daily_batch.values() for day in values]


def test_time_window_partitions(dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    materialize([daily], partition_key="2024-01-02", resources=dagster_resources)

    logged = store.get("daily:v1")
    assert (_partition(store, "daily:v1"), logged.load("value")) == ("2024-01-02", {"day": "2024-01-02"})


def test_a_single_run_backfill_logs_one_version_per_partition(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    tags = {ASSET_PARTITION_RANGE_START_TAG: "2024-01-01", ASSET_PARTITION_RANGE_END_TAG: "2024-01-03"}
    result = materialize([daily_batch], tags=tags, resources=dagster_resources)

    assert [(_partition(store, v.ref), v.load("value")) for v in store.versions("daily_batch")] == [
        ("2024-01-01", ["2024-01-01"]), ("2024-01-02", ["2024-01-02"]), ("2024-01-03", ["2024-01-03"])]
    [materialization, *_] = result.asset_materializations_for_node("daily_batch")
    assert materialization.metadata["tracelet/refs"].value == {
        "2024-01-01": "daily_batch:v1", "2024-01-02": "daily_batch:v2", "2024-01-03": "daily_batch:v3"}
    materialize([daily_batch, days_seen], selection=["days_seen"], resources=dagster_resources)
    assert store.get("days_seen:v1").load("value") == ["2024-01-01", "2024-01-02", "2024-01-03"]


def test_a_single_run_backfill_must_return_a_value_per_partition(dagster_resources: dict[str, object]) -> None:
    @asset(io_manager_key="tracelet", partitions_def=days)
    def not_split() -> list[int]:
        return [1, 2, 3]

    tags = {ASSET_PARTITION_RANGE_START_TAG: "2024-01-01", ASSET_PARTITION_RANGE_END_TAG: "2024-01-02"}
    failed = materialize([not_split], tags=tags, resources=dagster_resources, raise_on_error=False)
    [failure] = [e for e in failed.all_events if e.is_step_failure]
    assert "return a dict {partition key: value}" in failure.step_failure_data.error.message


@asset(io_manager_key="tracelet", partitions_def=regions_by_day)
def sales(context: AssetExecutionContext) -> dict[str, str]:
    key = context.partition_key
    assert isinstance(key, MultiPartitionKey)
    return dict(key.keys_by_dimension)


@asset(io_manager_key="tracelet", partitions_def=regions_by_day)
def sales_report(sales: dict[str, str]) -> str:
    return f"{sales['region']} on {sales['day']}"


def test_multi_partition_keys_are_stored_intact(dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    key = MultiPartitionKey({"day": "2024-01-02", "region": "eu/west"})
    other = MultiPartitionKey({"day": "2024-01-02", "region": "us"})
    materialize([sales, sales_report], partition_key=key, resources=dagster_resources)
    materialize([sales, sales_report], partition_key=other, resources=dagster_resources)

    logged = store.get("sales:v1")
    assert (logged.metadata["tracelet/partition"], logged.producer.partition) == (
        "2024-01-02|eu/west", "2024-01-02|eu/west")
    assert logged.metadata["tracelet/partition_dimensions"] == {"day": "2024-01-02", "region": "eu/west"}
    assert logged.partition == "2024-01-02|eu/west"  # the store's own record of the partition
    assert store.get("sales", partition="2024-01-02|us").ref == "sales:v2"
    assert store.get("sales_report:v1").load("value") == "eu/west on 2024-01-02"
    assert store.get("sales_report:v2").inputs == ["sales:v2"]


@asset(io_manager_key="tracelet", partitions_def=files)
def parsed(context: AssetExecutionContext) -> int:
    return len(context.partition_key)


def test_dynamic_partitions(dagster_resources: dict[str, object], store: ArtifactStore,
                            dagster_instance: DagsterInstance) -> None:
    dagster_instance.add_dynamic_partitions("files", ["a.csv", "report 2024.csv"])
    for key in ["a.csv", "report 2024.csv"]:
        materialize([parsed], partition_key=key, resources=dagster_resources, instance=dagster_instance)

    assert [(_partition(store, v.ref), v.load("value")) for v in store.versions("parsed")] == [
        ("a.csv", 5), ("report 2024.csv", 15)]


@pytest.mark.parametrize("partition_key", ["red", "navy/dark"])
def test_each_version_names_its_partition_in_the_materialization(
        partition_key: str, dagster_resources: dict[str, object]) -> None:
    result = materialize([paint], partition_key=partition_key, resources=dagster_resources)

    [materialization] = result.asset_materializations_for_node("paint")
    assert materialization.partition == partition_key
    assert materialization.metadata["tracelet/partition"].value == partition_key
