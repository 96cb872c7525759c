"""A real Dagster materialize as OpenLineage runs: the run, and a START and one COMPLETE/FAIL
per step, posted to a loopback lineage server; every event checked against the spec."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dagster import (
    AssetOut,
    DagsterInstance,
    Output,
    StaticPartitionsDefinition,
    asset,
    build_reconstructable_job,
    execute_job,
    materialize,
    multi_asset,
)
from openlineage_support import LineageServer, assert_valid, refs, serving_lineage, states_by_job

from tracelet_core import ArtifactStore, RunInfo
from tracelet_core.backends.openlineage import lineage_events, step_run

pytest_plugins = ["dagster_fixtures"]

HERE = Path(__file__).resolve().parent


@asset(io_manager_key="tracelet")
def ol_raw() -> pd.DataFrame:
    return pd.DataFrame({"id": [1, 2, 3], "amount": [9.5, 3.0, 4.25]})


@asset(io_manager_key="tracelet")
def ol_bad(ol_raw: pd.DataFrame) -> int:
    raise ValueError(f"boom after {len(ol_raw)} rows")


@asset(io_manager_key="tracelet")
def ol_after_bad(ol_bad: int) -> int:
    return ol_bad + 1


@asset(io_manager_key="tracelet")
def ol_ok(ol_raw: pd.DataFrame) -> dict[str, float]:
    return {"total": float(ol_raw["amount"].sum())}


@multi_asset(outs={"ol_left": AssetOut(io_manager_key="tracelet"), "ol_right": AssetOut(io_manager_key="tracelet")})
def ol_pair(ol_raw: pd.DataFrame) -> Iterator[Output[Any]]:
    yield Output(ol_raw.head(1), output_name="ol_left")
    yield Output(ol_raw.tail(1), output_name="ol_right")


@asset(io_manager_key="tracelet", partitions_def=StaticPartitionsDefinition(["north", "south"]))
def ol_regional(context) -> list[str]:  # unannotated: Dagster cannot read a postponed annotation
    return [context.partition_key]


@pytest.fixture
def lineage_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LineageServer]:
    with serving_lineage(monkeypatch, tmp_path) as server:
        yield server


def test_a_failing_asset_fails_its_step_and_the_run_while_its_sibling_completes(
        lineage_server: LineageServer, dagster_resources: dict[str, object], store_dir: Path) -> None:
    result = materialize([ol_raw, ol_bad, ol_after_bad, ol_ok, ol_pair], resources=dagster_resources,
                         raise_on_error=False)
    assert not result.success
    job = result.dagster_run.job_name

    events = [assert_valid(e) for e in lineage_server.received]
    assert states_by_job(events) == {
        job: ["START", "FAIL"],
        f"{job}.ol_raw": ["START", "COMPLETE"],
        f"{job}.ol_bad": ["START", "FAIL"],
        f"{job}.ol_ok": ["START", "COMPLETE"],
        f"{job}.ol_pair": ["START", "COMPLETE"],
    }  # ol_after_bad never ran: no run; each event sent once though two resources reported
    ends = {e["job"]["name"]: e for e in events if e["eventType"] != "START"}
    starts = {e["job"]["name"]: e for e in events if e["eventType"] == "START"}

    run = ends[job]
    assert run["run"]["runId"] == result.run_id  # Dagster's own run id
    assert run["run"]["facets"]["errorMessage"]["message"] == "1 step(s) failed: ol_bad"
    assert starts[job]["eventTime"] <= starts[f"{job}.ol_raw"]["eventTime"]
    for step in ("ol_raw", "ol_bad", "ol_ok", "ol_pair"):
        event = ends[f"{job}.{step}"]
        assert event["run"]["runId"] == step_run(RunInfo("dagster", result.run_id, step=step, name=job)).run_id
        parent = event["run"]["facets"]["parent"]
        assert (parent["run"]["runId"], parent["job"]["name"]) == (result.run_id, job)
        assert starts[f"{job}.{step}"]["eventTime"] < event["eventTime"]  # the step's real start and end

    raw = ends[f"{job}.ol_raw"]
    assert refs(raw["outputs"]) == ["ol_raw:v1"] and raw["inputs"] == []
    assert [f["name"] for f in raw["outputs"][0]["facets"]["schema"]["fields"]] == ["id", "amount"]
    assert raw["outputs"][0]["namespace"] == store_dir.resolve().as_uri()
    bad = ends[f"{job}.ol_bad"]
    assert bad["run"]["facets"]["errorMessage"]["message"] == "ValueError: boom after 3 rows"
    assert (refs(bad["inputs"]), bad["outputs"]) == (["ol_raw:v1"], [])  # what it read before raising
    assert (refs(ends[f"{job}.ol_ok"]["inputs"]), refs(ends[f"{job}.ol_ok"]["outputs"])) == (["ol_raw:v1"],
                                                                                            ["ol_ok:v1"])
    assert sorted(refs(ends[f"{job}.ol_pair"]["outputs"])) == ["ol_left:v1", "ol_right:v1"]  # one COMPLETE, both

    with ArtifactStore.open(store_dir) as store:  # the CLI's replay gives the runs that were sent
        replayed = lineage_events(store, "ol_ok:v1")
    wanted = {job, f"{job}.ol_raw", f"{job}.ol_ok"}
    assert replayed == [e for e in events if e["job"]["name"] in wanted]


def test_a_successful_run_completes(lineage_server: LineageServer, dagster_resources: dict[str, object]) -> None:
    result = materialize([ol_raw, ol_ok], resources=dagster_resources)
    job = result.dagster_run.job_name
    events = [assert_valid(e) for e in lineage_server.received]
    assert states_by_job(events) == {job: ["START", "COMPLETE"], f"{job}.ol_raw": ["START", "COMPLETE"],
                              f"{job}.ol_ok": ["START", "COMPLETE"]}
    assert [e["eventType"] for e in events][-1] == "COMPLETE" and events[-1]["job"]["name"] == job


def test_a_partition_run_lists_the_partition_version_with_its_partition(
        lineage_server: LineageServer, dagster_resources: dict[str, object]) -> None:
    result = materialize([ol_regional], partition_key="south", resources=dagster_resources)
    job = result.dagster_run.job_name
    events = [assert_valid(e) for e in lineage_server.received]
    assert states_by_job(events) == {job: ["START", "COMPLETE"], f"{job}.ol_regional": ["START", "COMPLETE"]}
    [output] = [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] != job][0]["outputs"]
    assert (output["facets"]["tracelet"]["ref"], output["facets"]["tracelet"]["partition"]) == ("ol_regional:v1",
                                                                                              "south")


def test_the_multiprocess_executor_reports_each_step_from_its_own_process(
        lineage_server: LineageServer, dagster_instance: DagsterInstance, store_dir: Path) -> None:
    job = build_reconstructable_job("openlineage_jobs", "define_lineage_job", reconstructor_working_directory=str(HERE))
    config = {"resources": {"tracelet": {"config": {"store_uri": str(store_dir)}}},
              "execution": {"config": {"max_concurrent": 1}}}
    with execute_job(job, instance=dagster_instance, run_config=config, raise_on_error=False) as result:
        assert not result.success
        run_id = result.run_id
    events = [assert_valid(e) for e in lineage_server.received]
    assert states_by_job(events) == {
        "lineage_mp": ["START", "FAIL"],  # sent by the last step process: no planned step was left
        "lineage_mp.mp_source": ["START", "COMPLETE"],
        "lineage_mp.mp_odds": ["START", "FAIL"],
    }  # mp_merged never ran: downstream of the failure
    assert {e["run"]["runId"] for e in events if e["job"]["name"] == "lineage_mp"} == {run_id}
