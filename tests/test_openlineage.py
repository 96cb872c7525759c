"""OpenLineage export of core runs: a START and one COMPLETE/FAIL per run, through its queue.

The events go through the real ``openlineage-python`` client to its file transport and to its
HTTP transport pointed at a small server on loopback standing in for Marquez's
``/api/v1/lineage``; every event is checked against the spec's schema (``openlineage_support``).
Dagster and Prefect runs are tested in ``tests/dagster`` and ``tests/prefect``.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import pytest
import urllib3.util.connection
from openlineage.client.event_v2 import RunState
from openlineage_support import (
    LineageServer,
    assert_valid,
    export_to_file,
    no_openlineage_config,
    read_events,
    refs,
    run_events,
    serving_lineage,
    start,
    states_by_job,
    terminal,
    wait_for_abandoned_deliveries,
)
from support import free_port
from typer.testing import CliRunner
from urllib3.exceptions import MaxRetryError

from tracelet_core import ArtifactStore, Experiment, RunInfo, TraceletArtifact, TraceletSettings
from tracelet_core.backends.openlineage import (
    RUN_ID_NAMESPACE,
    _DeadlineRetry,
    dataset_event,
    event_json,
    lineage_events,
    own_run_events,
    payload,
    run_event,
    step_run,
    version_run,
)
from tracelet_core.cli import app


@pytest.fixture(autouse=True)
def no_openlineage_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_openlineage_config(monkeypatch, tmp_path)


@pytest.fixture
def events_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return export_to_file(monkeypatch, tmp_path / "events.jsonl")


@pytest.fixture
def lineage_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LineageServer]:
    with serving_lineage(monkeypatch, tmp_path) as server:
        yield server


def queue(store: ArtifactStore) -> list[tuple[str, str, int]]:
    """``(event type, status, attempts)`` of every queued event, oldest first."""
    return [(r["payload"].get("eventType", "DATASET"), r["status"], r["attempts"])
            for r in store.catalog.lineage_queue(statuses=None)]


# -- the spec ---------------------------------------------------------------------------------
def test_the_schema_rejects_what_the_spec_rejects(store: ArtifactStore) -> None:
    logged = store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
    started, good = (payload(e) for e in own_run_events(logged))
    failed = payload(run_event(RunState.FAIL, version_run(logged), 0.0, error="ValueError: x"))
    described = payload(dataset_event(logged, 0.0))
    for event in (started, good, failed, described):
        assert_valid(event)
    broken: list[tuple[dict[str, Any], Callable[[dict[str, Any]], None]]] = [
        (good, lambda e: e["run"].update(runId="not-a-uuid")),
        (good, lambda e: e.update(eventTime="yesterday")),
        (good, lambda e: e.update(eventType="DONE")),
        (good, lambda e: e["job"].pop("name")),
        (good, lambda e: e["outputs"][0]["facets"]["version"].pop("_producer")),
        (good, lambda e: e["outputs"][0]["facets"]["version"].pop("datasetVersion")),
        (good, lambda e: e["outputs"][0]["facets"]["tracelet"].pop("digest")),
        (failed, lambda e: e["run"]["facets"]["errorMessage"].pop("message")),
        (failed, lambda e: e["run"]["facets"]["errorMessage"].pop("programmingLanguage")),
        (described, lambda e: e["dataset"].pop("namespace")),
        (described, lambda e: e.pop("dataset")),
    ]
    for source, breaks in broken:
        event = json.loads(json.dumps(source))
        breaks(event)
        with pytest.raises(jsonschema.ValidationError):
            assert_valid(event)


# -- core runs --------------------------------------------------------------------------------
def test_core_runs_start_once_and_end_once_with_all_they_logged_and_read(
        store_dir: Path, events_file: Path, catalog_url: str) -> None:
    table = pd.DataFrame({"id": [1, 2], "city": ["Oslo", "Lima"]})
    with ArtifactStore.open(store_dir, catalog_url=catalog_url) as store:  # SQLite, PostgreSQL
        raw = store.log(TraceletArtifact("data/raw", "dataset", description="the rows")
                        .add_object(table, "rows", serializer="parquet"))
        with Experiment("train-model", store=store) as exp:
            exp.get_artifact("data/raw")
            model = exp.log_artifact(exp.create_artifact("model", "model").add_object({"w": 1}, "w")).logged
            metrics = exp.log_artifact(exp.create_artifact("metrics", "report").add_object({"acc": 0.9}, "m")).logged
        store.log(TraceletArtifact("data/raw", "dataset", description="the rows")
                  .add_object(table, "rows", serializer="parquet"))  # identical: no new run
        with pytest.raises(ValueError, match="boom"), Experiment("broken", store=store):
            raise ValueError("boom")
        assert {status for _type, status, _n in queue(store)} == {"delivered"}

    events = read_events(events_file)
    assert states_by_job(events) == {"log:data/raw": ["START", "COMPLETE"], "train-model": ["START", "COMPLETE"],
                                     "broken": ["START", "FAIL"]}
    own = terminal(events, "log:data/raw")
    [output] = own["outputs"]
    assert (output["namespace"], output["name"]) == (store_dir.resolve().as_uri(), "data/raw")
    assert output["facets"]["version"]["datasetVersion"] == "v1"
    assert output["facets"]["documentation"]["description"] == "the rows"
    id_column, city_column = output["facets"]["schema"]["fields"]  # as the stored table's schema says
    assert (id_column["name"], id_column["type"], city_column["name"]) == ("id", "int64", "city")
    assert city_column["type"] in {"string", "large_string"}  # pandas' str dtype, per its version
    assert (output["facets"]["tracelet"]["ref"], output["facets"]["tracelet"]["digest"]) == ("data/raw:v1", raw.digest)

    began, done = start(events, "train-model"), terminal(events, "train-model")
    assert began["run"]["runId"] == done["run"]["runId"] == step_run(exp.run).run_id
    assert began["eventTime"] <= done["eventTime"] and began["outputs"] == began["inputs"] == []
    assert refs(done["outputs"]) == [model.ref, metrics.ref]  # one run, one COMPLETE, both outputs
    assert refs(done["inputs"]) == ["data/raw:v1"]
    assert "schema" in done["inputs"][0]["facets"] and "parent" not in done["run"]["facets"]

    failed = terminal(events, "broken")
    assert failed["run"]["facets"]["errorMessage"]["message"] == "ValueError: boom"
    assert failed["run"]["facets"]["errorMessage"]["programmingLanguage"] == "python"


def test_two_stores_never_share_a_dataset(tmp_path: Path, events_file: Path, s3_env: str, catalog_url: str) -> None:
    local = tmp_path / "one"
    with ArtifactStore.open(local) as store:
        store.log(TraceletArtifact("demo/raw", "dataset").add_object(["local"], "rows"))
    settings = TraceletSettings(cache_dir=str(tmp_path / "cache"))
    with ArtifactStore.open(s3_env, catalog_url=catalog_url, settings=settings) as store:  # SQLite, PostgreSQL
        assert store.settings.openlineage
        store.log(TraceletArtifact("demo/raw", "dataset").add_object(["remote"], "rows"))
    outputs = [d for e in run_events(read_events(events_file)) for d in e["outputs"]]
    assert [(d["namespace"], d["name"]) for d in outputs] == [(local.resolve().as_uri(), "demo/raw"),
                                                              (s3_env, "demo/raw")]  # s3://bucket/store
    assert outputs[0]["facets"]["tracelet"]["digest"] != outputs[1]["facets"]["tracelet"]["digest"]


def test_an_alias_change_sends_a_dataset_event_with_the_aliases(store_dir: Path, events_file: Path) -> None:
    with ArtifactStore.open(store_dir) as store:
        store.log(TraceletArtifact("model", "model").add_object({"w": 1}, "w"), aliases=["best"])
        store.log(TraceletArtifact("model", "model").add_object({"w": 2}, "w"))
        store.set_alias("model:v1", "production")
        store.set_alias("model:v2", "production")
    datasets = [e for e in read_events(events_file) if "dataset" in e]
    assert [(e["dataset"]["name"], e["dataset"]["facets"]["tracelet"]["ref"]) for e in datasets] == [
        ("model", "model:v1"), ("model", "model:v1"), ("model", "model:v1"), ("model", "model:v2")]
    # what each says is the version as it is now (sent right after each change, in order)
    assert [e["dataset"]["facets"]["tracelet"]["aliases"] for e in datasets] == [
        ["best"], ["best", "production"], ["best"], ["production"]]


def test_sealed_drafts_are_a_run_of_their_producer(store_dir: Path, events_file: Path) -> None:
    with ArtifactStore.open(store_dir) as store:
        store.upsert(TraceletArtifact("shards", "dataset").add_object([1], "part-1"), group="g")
        store.upsert(TraceletArtifact("shards", "dataset").add_object([2], "part-2"), group="g")
        sealed = store.finish("shards", group="g", producer=RunInfo("tracelet", "r", name="merge"))
    events = read_events(events_file)
    assert states_by_job(events) == {"merge": ["START", "COMPLETE"]}
    assert refs(terminal(events, "merge")["outputs"]) == [sealed.ref]


def test_openlineage_as_a_configured_backend_sends_each_version_as_a_dataset_event(
        store_dir: Path, events_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRACELET_OPENLINEAGE")  # the backend alone, no run export
    with ArtifactStore.open(store_dir) as store, Experiment("e", backend="openlineage", store=store) as exp:
        results = exp.log_artifact(exp.create_artifact("cfg", "config").add_object({"lr": 0.1}, "c"))
        assert results["openlineage"].ok and results["openlineage"].uri == "openlineage:dataset/cfg:v1"
        assert [d.status for d in store.deliveries()] == ["delivered"]
    [event] = read_events(events_file)
    assert (event["dataset"]["name"], event["dataset"]["facets"]["tracelet"]["ref"]) == ("cfg", "cfg:v1")


def test_run_ids_come_from_the_run_step_not_the_attempt_and_job_names_are_qualified() -> None:
    dagster_run = "0f9c1e52-5d0a-4a3c-9d59-3f1f3ad0a1b2"
    first = step_run(RunInfo("dagster", dagster_run, step="a", name="job"))
    retried = step_run(RunInfo("dagster", dagster_run, step="a", name="job", partition="p", extra={"attempt": 2}))
    other = step_run(RunInfo("dagster", dagster_run, step="c", name="job"))
    assert first.run_id == retried.run_id != other.run_id
    assert first.run_id == str(uuid.uuid5(RUN_ID_NAMESPACE, f"dagster/{dagster_run}/a"))
    assert (first.namespace, first.job, first.job_type) == ("dagster", "job.a", "TASK")
    assert first.parent is not None and (first.parent.run_id, first.parent.job) == (dagster_run, "job")
    task = step_run(RunInfo("prefect", str(uuid.uuid4()), step=str(uuid.uuid4()), name="export_orders"), "nightly")
    assert task.job == "nightly.export_orders" and task.parent is not None and task.parent.job == "nightly"
    experiment = step_run(RunInfo("tracelet", "abc", name="train"))
    assert (experiment.job, experiment.parent) == ("train", None)


# -- delivery ---------------------------------------------------------------------------------
def test_the_http_transport_posts_each_event_and_the_cli_replays_the_same_runs(
        store_dir: Path, lineage_server: LineageServer) -> None:
    with ArtifactStore.open(store_dir) as store:
        raw = store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
        with Experiment("featurize", store=store) as exp:
            exp.log_artifact(exp.create_artifact("features", "dataset").add_object([2], "rows"), inputs=[raw])
        replayed = lineage_events(store, "features:v1")

    assert lineage_server.paths == ["/api/v1/lineage"] * 4
    received = [assert_valid(e) for e in lineage_server.received]
    assert states_by_job(received) == {"log:raw": ["START", "COMPLETE"], "featurize": ["START", "COMPLETE"]}
    assert replayed == received  # what the CLI prints is what was sent

    result = CliRunner().invoke(app, ["--store", str(store_dir), "lineage", "features", "--format", "openlineage"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == received


def test_a_refused_connection_is_given_up_at_once_and_sync_delivers_in_order_later(
        store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()  # nothing listens there: connections are refused
    connects: list[Any] = []
    real_connect = urllib3.util.connection.create_connection

    def counted(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        connects.append(address)
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counted)
    monkeypatch.setenv("TRACELET_OPENLINEAGE", "true")
    monkeypatch.setenv("OPENLINEAGE_URL", f"http://127.0.0.1:{port}")
    with ArtifactStore.open(store_dir) as store:
        logged = store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
        assert logged.ref == "raw:v1" and store.get("raw").load("rows") == [1]
        assert connects == [("127.0.0.1", port)]  # one attempt, no retries against a refusal
        assert queue(store) == [("START", "failed", 1), ("COMPLETE", "pending", 0)]  # its end waits
        wait_for_abandoned_deliveries()

        server = LineageServer(port)
        try:
            results = store.sync()
            assert [(r.backend, r.ok) for r in results] == [("openlineage", True)] * 2
            assert store.sync() == []
            assert [e["eventType"] for e in server.received] == ["START", "COMPLETE"]
        finally:
            server.close()
        assert queue(store) == [("START", "delivered", 2), ("COMPLETE", "delivered", 1)]


def test_a_lineage_server_that_never_answers_is_given_up_on_within_the_timeout(
        store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as black_hole:  # accepts connections (the kernel does) but never answers
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(16)
        monkeypatch.setenv("TRACELET_OPENLINEAGE", "true")
        monkeypatch.setenv("TRACELET_BACKEND_TIMEOUT", "0.5")
        monkeypatch.setenv("OPENLINEAGE_URL", f"http://127.0.0.1:{black_hole.getsockname()[1]}")
        with ArtifactStore.open(store_dir) as store:
            logged = store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
            assert logged.version == "v1" and queue(store) == [("START", "failed", 1), ("COMPLETE", "pending", 0)]
            wait_for_abandoned_deliveries()  # and the attempt itself stops: the deadline holds


def test_retries_stop_at_the_deadline_however_many_the_transport_allows() -> None:
    error = ConnectionRefusedError("refused")
    unbounded = _DeadlineRetry(total=5)
    assert unbounded.increment("POST", "/api/v1/lineage", error=error).total == 4
    past = _DeadlineRetry(total=5)
    past.deadline = 0.0  # long gone
    with pytest.raises(MaxRetryError):
        past.increment("POST", "/api/v1/lineage", error=error)
    assert past.new(total=3).deadline == 0.0  # urllib3 copies retries per attempt: the deadline stays


def test_without_a_transport_the_log_succeeds_and_says_what_to_configure(
        store_dir: Path, events_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENLINEAGE__TRANSPORT__TYPE")
    with ArtifactStore.open(store_dir) as store:
        store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
        [first, _second] = store.catalog.lineage_queue()
        assert first["status"] == "failed" and "OPENLINEAGE_URL" in (first["last_error"] or "")
        monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
        assert [r.ok for r in store.sync()] == [True, True]
    assert states_by_job(read_events(events_file)) == {"log:raw": ["START", "COMPLETE"]}


def test_without_the_extra_the_log_succeeds_and_names_what_to_install(
        store_dir: Path, events_file: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "tracelet_core.backends.openlineage", None)  # as if not installed
    with caplog.at_level(logging.WARNING, "tracelet.delivery"), ArtifactStore.open(store_dir) as store:
        logged = store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
        assert logged.version == "v1" and store.catalog.lineage_queue(statuses=None) == []
    assert "pip install tracelet-artifacts[openlineage]" in caplog.text
    result = CliRunner().invoke(app, ["--store", str(store_dir), "lineage", "raw", "--format", "openlineage"])
    assert result.exit_code == 1 and "tracelet-artifacts[openlineage]" in result.stderr


def test_the_export_is_off_by_default(store: ArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(tmp_path / "events.jsonl"))
    assert TraceletSettings.load().openlineage is False
    with Experiment("e", store=store) as exp:
        exp.log_artifact(exp.create_artifact("raw", "dataset").add_object([1], "rows"))
    assert store.deliveries() == [] and store.catalog.lineage_queue(statuses=None) == []
    assert not (tmp_path / "events.jsonl").exists()


def test_importing_the_core_imports_no_openlineage_client() -> None:
    code = ("import sys, tracelet_core, tracelet_core.cli; "
            "assert not [m for m in sys.modules if m.startswith('openlineage')], 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the CLI: versions logged while the export was off ----------------------------------------
def test_lineage_format_openlineage_builds_the_runs_of_a_version_and_its_upstream(
        store: ArtifactStore, store_dir: Path) -> None:
    raw = store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
    features = store.log(TraceletArtifact("features", "dataset").add_object([2], "rows"), inputs=[raw],
                         producer=RunInfo("tracelet", "r1", name="featurize"))
    store.log(TraceletArtifact("unrelated", "dataset").add_object([3], "rows"))

    result = CliRunner().invoke(app, ["--store", str(store_dir), "lineage", features.ref, "--format", "openlineage"])
    assert result.exit_code == 0, result.output
    events = [assert_valid(json.loads(line)) for line in result.stdout.splitlines()]
    assert states_by_job(events) == {"log:raw": ["START", "COMPLETE"], "featurize": ["START", "COMPLETE"]}
    assert terminal(events, "log:raw")["run"]["runId"] == version_run(raw).run_id
    done = terminal(events, "featurize")
    assert done["run"]["runId"] == step_run(features.producer).run_id  # type: ignore[arg-type]
    assert (refs(done["inputs"]), refs(done["outputs"])) == (["raw:v1"], ["features:v1"])
    assert [event_json(e) for e in events] == [line for line in result.stdout.splitlines()]


def test_export_lineage_replays_the_store_idempotently(
        store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with ArtifactStore.open(store_dir) as store:  # logged before any lineage server was connected
        raw = store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
        store.log(TraceletArtifact("model", "model").add_object({"w": 1}, "w"), inputs=[raw],
                  producer=RunInfo("tracelet", "r1", name="train"))
    runner = CliRunner()
    failed = runner.invoke(app, ["--store", str(store_dir), "export-lineage"])
    assert failed.exit_code == 1 and "OPENLINEAGE_URL" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1

    events = tmp_path / "replay.jsonl"
    export_to_file(monkeypatch, events)
    monkeypatch.delenv("TRACELET_OPENLINEAGE")
    first = runner.invoke(app, ["--store", str(store_dir), "export-lineage", "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["exported"] == 4
    second = runner.invoke(app, ["--store", str(store_dir), "export-lineage"])
    assert second.exit_code == 0 and "exported 4 events" in second.stdout

    sent = read_events(events)
    assert [(e["job"]["name"], e["eventType"]) for e in sent[:4]] == [
        ("log:raw", "START"), ("log:raw", "COMPLETE"), ("train", "START"), ("train", "COMPLETE")]
    assert sent[:4] == sent[4:]  # the same runs, times and datasets: a replay changes nothing
    assert refs(sent[3]["inputs"]) == ["raw:v1"]


def test_export_lineage_settles_queued_events_so_sync_does_not_send_them_again(
        store_dir: Path, events_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENLINEAGE__TRANSPORT__TYPE")  # no transport yet: the events stay queued
    with ArtifactStore.open(store_dir) as store:
        store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
        assert [status for _type, status, _n in queue(store)] == ["failed", "pending"]
        monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
        result = CliRunner().invoke(app, ["--store", str(store_dir), "export-lineage"])
        assert result.exit_code == 0, result.output
        assert [status for _type, status, _n in queue(store)] == ["delivered", "delivered"]
        assert store.sync() == []
    assert [e["eventType"] for e in read_events(events_file)] == ["START", "COMPLETE"]
