"""Real Prefect flows as OpenLineage runs: the flow run, and a START and one COMPLETE/FAIL per
tracelet task run, posted to a loopback lineage server; every event checked against the spec."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openlineage_support import LineageServer, assert_valid, refs, serving_lineage, states_by_job, terminal
from prefect import flow

from tracelet_core import ArtifactStore, LoggedArtifact
from tracelet_core.backends.openlineage import lineage_events, step_run
from tracelet_prefect import tracelet_task

#: attempts of ``ol_flaky`` per test (it fails its first attempt)
ATTEMPTS: dict[str, int] = {}


@tracelet_task("ol/numbers", "dataset")
def ol_numbers(n: int) -> list[int]:
    return list(range(n))


@tracelet_task("ol/total", "report")
def ol_total(numbers: list[int]) -> int:
    return sum(numbers)


@tracelet_task("ol/broken", "report")
def ol_broken(numbers: list[int]) -> int:
    raise ValueError(f"bad numbers: {len(numbers)}")


@tracelet_task("ol/flaky", "report", retries=1)
def ol_flaky(numbers: list[int], key: str) -> int:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] == 1:
        raise ConnectionError("first attempt fails")
    return len(numbers)


@tracelet_task("ol/async-total", "report")
async def ol_async_total(numbers: list[int]) -> int:
    return sum(numbers)


@flow(name="ol-async")
async def ol_async_flow(n: int) -> Any:
    return await ol_async_total(ol_numbers(n))


@flow(name="ol-nightly")
def ol_failing_flow(n: int) -> Any:
    numbers = ol_numbers(n)
    ol_total(numbers)
    return ol_broken(numbers)


@flow(name="ol-hourly")
def ol_passing_flow(n: int, key: str) -> Any:
    numbers = ol_numbers(n)
    return ol_total(numbers), ol_flaky(numbers, key)


@pytest.fixture
def lineage_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LineageServer]:
    with serving_lineage(monkeypatch, tmp_path) as server:
        yield server


def test_a_failing_task_fails_its_run_and_the_flow_run_while_its_sibling_completes(
        lineage_server: LineageServer) -> None:
    state = ol_failing_flow(3, return_state=True)
    assert state.is_failed()

    events = [assert_valid(e) for e in lineage_server.received]
    assert states_by_job(events) == {
        "ol-nightly": ["START", "FAIL"],
        "ol-nightly.ol_numbers": ["START", "COMPLETE"],
        "ol-nightly.ol_total": ["START", "COMPLETE"],
        "ol-nightly.ol_broken": ["START", "FAIL"],
    }
    assert events[0]["job"]["name"] == "ol-nightly" and events[-1]["job"]["name"] == "ol-nightly"
    flow_run = terminal(events, "ol-nightly")
    flow_run_id = str(state.state_details.flow_run_id)
    assert flow_run["run"]["runId"] == flow_run_id  # Prefect's own flow run id
    assert flow_run["job"]["namespace"] == "prefect" and "errorMessage" in flow_run["run"]["facets"]

    broken = terminal(events, "ol-nightly.ol_broken")
    assert broken["run"]["facets"]["errorMessage"]["message"] == "ValueError: bad numbers: 3"
    total = terminal(events, "ol-nightly.ol_total")
    assert (refs(total["inputs"]), refs(total["outputs"])) == (["ol/numbers:v1"], ["ol/total:v1"])
    for event in (broken, total, terminal(events, "ol-nightly.ol_numbers")):
        parent = event["run"]["facets"]["parent"]
        assert (parent["run"]["runId"], parent["job"]["name"]) == (flow_run_id, "ol-nightly")
    with ArtifactStore.open() as store:
        logged = store.get("ol/total:v1")
        assert total["run"]["runId"] == step_run(logged.producer, "ol-nightly").run_id  # type: ignore[arg-type]
        replayed = lineage_events(store, "ol/total:v1")  # what the CLI prints: the same runs
    wanted = {"ol-nightly", "ol-nightly.ol_numbers", "ol-nightly.ol_total"}
    assert replayed == [e for e in events if e["job"]["name"] in wanted]


def test_a_retried_task_ends_once_and_a_passing_flow_completes(lineage_server: LineageServer) -> None:
    total, flaky = ol_passing_flow(2, "retried")
    assert isinstance(flaky, LoggedArtifact) and ATTEMPTS["retried"] == 2
    events = [assert_valid(e) for e in lineage_server.received]
    assert states_by_job(events) == {
        "ol-hourly": ["START", "COMPLETE"],
        "ol-hourly.ol_numbers": ["START", "COMPLETE"],
        "ol-hourly.ol_total": ["START", "COMPLETE"],
        "ol-hourly.ol_flaky": ["START", "COMPLETE"],  # the failed first attempt ended nothing
    }
    assert refs(terminal(events, "ol-hourly.ol_flaky")["outputs"]) == [flaky.ref]
    assert refs(terminal(events, "ol-hourly.ol_total")["outputs"]) == [total.ref]


# Prefect's own async flow engine leaves a connection to the server open when asyncio.run()
# closes the loop (as in test_prefect_tasks.py, with or without tracelet).
@pytest.mark.filterwarnings("ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
def test_an_async_task_in_an_async_flow_is_a_run_too(lineage_server: LineageServer) -> None:
    total = asyncio.run(ol_async_flow(3))
    events = [assert_valid(e) for e in lineage_server.received]
    assert states_by_job(events) == {
        "ol-async": ["START", "COMPLETE"],
        "ol-async.ol_numbers": ["START", "COMPLETE"],
        "ol-async.ol_async_total": ["START", "COMPLETE"],
    }
    done = terminal(events, "ol-async.ol_async_total")
    assert (refs(done["inputs"]), refs(done["outputs"])) == (["ol/numbers:v1"], [total.ref])
    gc.collect()  # Prefect's leftover socket is collected here, under this test's filters, not in the next test
