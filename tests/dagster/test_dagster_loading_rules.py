"""Inputs follow Dagster's ``UPathIOManager``: one upstream partition gives its value, none gives
``None``, several a dict keyed by partition; partition mappings of every kind; the producer's
partition is the output's own."""

import warnings
from typing import Any

from dagster import (
    AllPartitionMapping,
    AssetExecutionContext,
    AssetIn,
    BetaWarning,
    DailyPartitionsDefinition,
    HourlyPartitionsDefinition,
    LastPartitionMapping,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    StaticPartitionMapping,
    StaticPartitionsDefinition,
    TimeWindowPartitionMapping,
    asset,
    materialize,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from tracelet_core import ArtifactStore, LoggedArtifact

pytest_plugins = ["dagster_fixtures"]

letters = StaticPartitionsDefinition(["a", "b"])
days = DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-05")
hours = HourlyPartitionsDefinition(start_date="2024-01-01-00:00", end_date="2024-01-02-00:00")


@asset(io_manager_key="tracelet", partitions_def=letters)
def letter(context: AssetExecutionContext) -> str:
    return context.partition_key.upper()


@asset(io_manager_key="tracelet", ins={"letter": AssetIn(partition_mapping=LastPartitionMapping())})
def last_letter(letter: str) -> str:
    return letter * 2


@asset(io_manager_key="tracelet", ins={"letter": AssetIn(partition_mapping=LastPartitionMapping())})
def last_letter_version(letter: LoggedArtifact) -> str:
    return letter.ref


def test_one_upstream_partition_gives_its_value(dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    for key in ["a", "b"]:
        materialize([letter], partition_key=key, resources=dagster_resources)
    materialize([letter, last_letter, last_letter_version], selection=["last_letter", "last_letter_version"],
                resources=dagster_resources)

    assert store.get("last_letter:v1").load("value") == "BB"
    assert store.get("last_letter:v1").inputs == ["letter:v2"]
    assert store.get("last_letter_version:v1").load("value") == "letter:v2"


@asset(io_manager_key="tracelet", partitions_def=days,
       ins={"running": AssetIn(partition_mapping=TimeWindowPartitionMapping(start_offset=-1, end_offset=-1))})
def running(context: AssetExecutionContext, running: list[str] | None) -> list[str]:
    return [*(running or []), context.partition_key]


def test_no_upstream_partition_gives_none(dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    for key in ["2024-01-01", "2024-01-02"]:
        materialize([running], partition_key=key, resources=dagster_resources)

    first, second = store.versions("running")
    assert (first.load("value"), first.inputs) == (["2024-01-01"], [])
    assert (second.load("value"), second.inputs) == (["2024-01-01", "2024-01-02"], ["running:v1"])


@asset(io_manager_key="tracelet", partitions_def=days)
def day(context: AssetExecutionContext) -> str:
    return context.partition_key


@asset(io_manager_key="tracelet", partitions_def=days,
       ins={"day": AssetIn(partition_mapping=TimeWindowPartitionMapping(start_offset=-1))})
def two_days(day: dict[str, str]) -> list[str]:
    return sorted(day.values())


@asset(io_manager_key="tracelet", partitions_def=days,
       ins={"day": AssetIn(partition_mapping=TimeWindowPartitionMapping(start_offset=-1),
                           metadata={"allow_missing_partitions": True})})
def up_to_two_days(day: dict[str, str]) -> list[str]:
    return sorted(day)


def test_a_window_of_upstream_partitions_gives_a_dict_and_missing_ones_fail_unless_allowed(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    for key in ["2024-01-01", "2024-01-02"]:
        materialize([day], partition_key=key, resources=dagster_resources)
    materialize([day, two_days], selection=["two_days"], partition_key="2024-01-02", resources=dagster_resources)
    assert store.get("two_days:v1").load("value") == ["2024-01-01", "2024-01-02"]
    assert store.get("two_days:v1").inputs == ["day:v1", "day:v2"]

    failed = materialize([day, two_days], selection=["two_days"], partition_key="2024-01-04",
                         resources=dagster_resources, raise_on_error=False)
    assert not failed.success
    materialize([day, up_to_two_days], selection=["up_to_two_days"], partition_key="2024-01-03",
                resources=dagster_resources)
    assert store.get("up_to_two_days:v1").load("value") == ["2024-01-02"]


@asset(io_manager_key="tracelet", partitions_def=hours)
def hourly(context: AssetExecutionContext) -> dict[str, int]:
    return {key: int(key[-5:-3]) for key in context.partition_keys}  # one value per hour of the range


@asset(io_manager_key="tracelet", partitions_def=days)
def daily_total(hourly: dict[str, int]) -> int:
    return sum(hourly.values())


def test_a_coarser_downstream_reads_every_finer_upstream_partition(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    tags = {ASSET_PARTITION_RANGE_START_TAG: "2024-01-01-00:00", ASSET_PARTITION_RANGE_END_TAG: "2024-01-01-23:00"}
    materialize([hourly], tags=tags, resources=dagster_resources)  # one run, one version per hour
    materialize([hourly, daily_total], selection=["daily_total"], partition_key="2024-01-01",
                resources=dagster_resources)

    assert len(store.versions("hourly")) == 24
    assert store.get("daily_total:v1").load("value") == sum(range(24))
    assert len(store.get("daily_total:v1").inputs) == 24


@asset(io_manager_key="tracelet", partitions_def=StaticPartitionsDefinition(["x", "y"]),
       ins={"letter": AssetIn(partition_mapping=StaticPartitionMapping({"a": "x", "b": "y"}))})
def mapped_letter(letter: str) -> str:
    return letter.lower()


@asset(io_manager_key="tracelet", ins={"letter": AssetIn(partition_mapping=AllPartitionMapping())})
def all_letters(letter: dict[str, str]) -> str:
    return "".join(letter[key] for key in sorted(letter))


def test_static_and_all_partition_mappings(dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    for key in ["a", "b"]:
        materialize([letter], partition_key=key, resources=dagster_resources)
    materialize([letter, mapped_letter], selection=["mapped_letter"], partition_key="y", resources=dagster_resources)
    assert (store.get("mapped_letter:v1").load("value"), store.get("mapped_letter:v1").inputs) == ("b", ["letter:v2"])

    materialize([letter, all_letters], selection=["all_letters"], resources=dagster_resources)
    assert store.get("all_letters:v1").load("value") == "AB"


grid = MultiPartitionsDefinition({"day": DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-03"),
                                  "letter": letters})


@asset(io_manager_key="tracelet", partitions_def=grid)
def cell(context: AssetExecutionContext) -> str:
    return str(context.partition_key)


with warnings.catch_warnings():
    warnings.simplefilter("ignore", BetaWarning)  # Dagster marks this mapping beta
    along_letter = MultiToSingleDimensionPartitionMapping(partition_dimension_name="letter")


@asset(io_manager_key="tracelet", partitions_def=letters, ins={"cell": AssetIn(partition_mapping=along_letter)})
def cells_of_letter(cell: dict[str, str]) -> list[str]:
    return sorted(cell.values())


def test_a_multi_partition_read_along_one_dimension(dagster_resources: dict[str, object],
                                                    store: ArtifactStore) -> None:
    for key in grid.get_partition_keys():
        materialize([cell], partition_key=key, resources=dagster_resources)
    materialize([cell, cells_of_letter], selection=["cells_of_letter"], partition_key="a", resources=dagster_resources)

    assert store.get("cells_of_letter:v1").load("value") == ["2024-01-01|a", "2024-01-02|a"]


@asset(io_manager_key="tracelet")
def settings() -> dict[str, Any]:
    return {"threshold": 3}


@asset(io_manager_key="tracelet", partitions_def=letters)
def scored_letter(context: AssetExecutionContext, settings: dict[str, Any]) -> str:
    return f"{context.partition_key}:{settings['threshold']}"


def test_an_unpartitioned_asset_in_a_partitioned_run_has_no_producer_partition(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    result = materialize([settings, scored_letter], partition_key="a", resources=dagster_resources)

    logged = store.get("settings:v1")
    assert logged.producer is not None and logged.producer.run_id == result.run_id
    assert (logged.producer.partition, logged.partition) == (None, None)
    assert "tracelet/partition" not in logged.metadata
    scored = store.get("scored_letter:v1")
    assert scored.producer is not None and (scored.producer.partition, scored.partition) == ("a", "a")
    assert scored.inputs == ["settings:v1"]
