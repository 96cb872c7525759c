"""Definitions the production tests run out of process: through a real ``dagster-daemon`` (sensor
runs with run retries, backfills, declarative automation) and ``execute_job`` re-execution.

The store comes from ``TRACELET_STORE_URI`` (the daemon, its code server and every run it
launches inherit the test's environment). ``TRACELET_TEST_FAIL_ONCE`` names a folder of markers:
a flaky asset fails the first time it runs (its marker is absent) after a newer version of its
upstream was logged from outside, so a re-run that reads "the latest" would be caught.
"""

import os
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
    DynamicOut,
    DynamicOutput,
    JobDefinition,
    Out,
    StaticPartitionsDefinition,
    asset,
    define_asset_job,
    in_process_executor,
    job,
    multiprocess_executor,
    op,
)

from tracelet_core import ArtifactStore, TraceletArtifact
from tracelet_dagster import TraceletIOManager, tracelet_sensor, tracelet_source_asset

FAIL_ONCE = "TRACELET_TEST_FAIL_ONCE"


def first_attempt(name: str) -> bool:
    """True the first time ``name`` asks (its marker is created then)."""
    marker = Path(os.environ[FAIL_ONCE]) / name
    if marker.exists():
        return False
    marker.touch()
    return True


def flaky_consumer(name: str, upstream_name: str) -> AssetsDefinition:
    """An asset reading ``upstream_name`` that, on its first attempt, logs a newer version of it
    from outside and fails."""

    @asset(name=name, io_manager_key="tracelet", ins={"upstream": AssetIn(key=upstream_name)})
    def consume(upstream: Any) -> dict[str, Any]:
        if first_attempt(name):
            store = ArtifactStore.shared()
            newer = TraceletArtifact(upstream_name, store.get(upstream_name).type.value)
            store.log(newer.add_object({"logged": "meanwhile"}, "value", "json"))
            raise RuntimeError(f"{name}: the first attempt fails")
        return {"trained_on": upstream}

    return consume


# -- retrain when a new dataset version is logged (sensor run, retried by the daemon) ----------
dataset = tracelet_source_asset("prod/dataset")


@asset(io_manager_key="tracelet", ins={"rows": AssetIn(key=["prod", "dataset"])})
def features(rows: list[int]) -> list[int]:
    return [row * 10 for row in rows]


model = flaky_consumer("model", "features")
retrain = define_asset_job("retrain", selection=[features, model], tags={"dagster/max_retries": "1"})
on_new_dataset = tracelet_sensor("prod/dataset", job=retrain, minimum_interval_seconds=1,
                                 default_status=DefaultSensorStatus.RUNNING)

# -- a daemon backfill of partitioned assets ------------------------------------------------------
regions = StaticPartitionsDefinition(["eu", "us"])


@asset(io_manager_key="tracelet", partitions_def=regions)
def region_rows(context: AssetExecutionContext) -> list[str]:
    return [f"{context.partition_key}-{i}" for i in range(3)]


@asset(io_manager_key="tracelet", partitions_def=regions)
def region_summary(region_rows: list[str]) -> str:
    return ",".join(region_rows)


# -- declarative automation downstream of a source asset logged from outside ---------------------
clicks = tracelet_source_asset("prod/clicks")


@asset(io_manager_key="tracelet", ins={"clicks": AssetIn(key=["prod", "clicks"])},
       automation_condition=AutomationCondition.eager())
def click_total(clicks: list[int]) -> int:
    return sum(clicks)


automation = AutomationConditionSensorDefinition(
    "click_automation", target=[click_total], default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=1)

# -- re-execution from failure (execute_job, no daemon) -------------------------------------------


@asset(io_manager_key="tracelet")
def reexec_base() -> dict[str, int]:
    return {"rows": 3}


reexec_model = flaky_consumer("reexec_model", "reexec_base")
reexec_job = define_asset_job("reexec_job", selection=[reexec_base, reexec_model], executor_def=in_process_executor)


# -- dynamic outputs, .map() and .collect(), each step in its own process --------------------------
@op(out=DynamicOut(io_manager_key="tracelet"))
def split() -> Any:
    for number in (2, 3):
        yield DynamicOutput(number, mapping_key=f"n{number}")


@op(out=Out(io_manager_key="tracelet"))
def square(number: int) -> int:
    return number * number


@op(out=Out(io_manager_key="tracelet"))
def total(squares: list[int]) -> int:
    return sum(squares)


@job(executor_def=multiprocess_executor, resource_defs={"tracelet": TraceletIOManager()})
def fanout() -> None:
    total(split().map(square).collect())


defs = Definitions(
    assets=[dataset, features, model, region_rows, region_summary, clicks, click_total, reexec_base, reexec_model],
    jobs=[retrain, reexec_job, fanout], sensors=[on_new_dataset, automation],
    resources={"tracelet": TraceletIOManager()}, executor=in_process_executor)  # one process per run


def fanout_job() -> JobDefinition:
    return fanout


def reexecuted_job() -> JobDefinition:
    return defs.resolve_job_def("reexec_job")
