"""OpenLineage export: one valid ``COMPLETE`` RunEvent per committed version, through the outbox.

The events go through the real ``openlineage-python`` client to its file transport and to its
HTTP transport pointed at a small server on loopback that records what it receives. The
client ships no JSON Schema files (and nothing here may fetch the spec), so events are checked
against a JSON Schema built from the client's own attrs classes, which OpenLineage generates
from the spec: every non-optional field required, ``runId`` a UUID, times RFC 3339, URIs
absolute, each known facet by its own class and every other facet as a ``BaseFacet``.
"""

from __future__ import annotations

import enum
import json
import os
import socket
import subprocess
import sys
import threading
import types
import typing
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import attr
import jsonschema
import pytest
from dagster import asset, materialize
from openlineage.client.event_v2 import RunEvent
from openlineage.client.facet_v2 import (
    dataset_version_dataset,
    documentation_dataset,
    job_type_job,
    parent_run,
    processing_engine_run,
    tags_job,
    tags_run,
)
from openlineage.client.generated.base import BaseFacet
from prefect import flow
from support import free_port
from typer.testing import CliRunner
from urllib3.exceptions import MaxRetryError

from tracelet_core import ArtifactStore, Experiment, RunInfo, TraceletArtifact, TraceletSettings
from tracelet_core.backends.openlineage import (
    RUN_ID_NAMESPACE,
    TRACELET_FACET_SCHEMA,
    TraceletDatasetFacet,
    _DeadlineRetry,
    build_event,
    event_json,
    lineage_events,
)
from tracelet_core.cli import app
from tracelet_dagster import TraceletIOManager
from tracelet_prefect import tracelet_task

# -- the spec, from the client's classes ------------------------------------------------------
#: Facets the events carry, validated by their own classes (by key, where they sit).
KNOWN_FACETS: list[tuple[str, type]] = [
    ("parent", parent_run.ParentRunFacet),
    ("processing_engine", processing_engine_run.ProcessingEngineRunFacet),
    ("tags", tags_run.TagsRunFacet),
    ("tags", tags_job.TagsJobFacet),
    ("jobType", job_type_job.JobTypeJobFacet),
    ("version", dataset_version_dataset.DatasetVersionDatasetFacet),
    ("documentation", documentation_dataset.DocumentationDatasetFacet),
    ("tracelet", TraceletDatasetFacet),
]
FORMATS = {"runId": "uuid", "eventTime": "date-time", "producer": "uri", "schemaURL": "uri",
           "_producer": "uri", "_schemaURL": "uri"}


def spec_schema(root: type) -> dict[str, Any]:
    """A JSON Schema of ``root`` (an OpenLineage attrs class) and everything it holds."""
    defs: dict[str, Any] = {}

    def of_class(cls: type) -> dict[str, Any]:
        key = f"{cls.__module__}.{cls.__qualname__}"
        if key not in defs:
            defs[key] = {}
            hints = typing.get_type_hints(cls)
            properties: dict[str, Any] = {}
            required: list[str] = []
            for field in attr.fields(cls):
                hint = hints[field.name]
                args = typing.get_args(hint)
                optional = isinstance(hint, types.UnionType) and type(None) in args
                inner = next(a for a in args if a is not type(None)) if optional else hint
                properties[field.name] = {**of_type(inner), **({"format": FORMATS[field.name]}
                                                               if field.name in FORMATS else {})}
                if not optional:
                    required.append(field.name)
            defs[key] = {"type": "object", "properties": properties, "required": required}
        return {"$ref": f"#/$defs/{key}"}

    def of_type(hint: Any) -> dict[str, Any]:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if hint is str:
            return {"type": "string"}
        if hint is bool:
            return {"type": "boolean"}
        if hint is int:
            return {"type": "integer"}
        if hint is float:
            return {"type": "number"}
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return {"enum": [member.value for member in hint]}
        if origin is list:
            return {"type": "array", "items": of_type(args[0])}
        if origin is dict and isinstance(args[1], type) and issubclass(args[1], BaseFacet):
            known = {name: of_class(cls) for name, cls in KNOWN_FACETS if issubclass(cls, args[1])}
            return {"type": "object", "properties": known, "additionalProperties": of_class(args[1])}
        if origin is dict:
            return {"type": "object"}
        if attr.has(hint):
            return of_class(hint)
        return {}

    top = of_class(root)
    return {"$defs": defs, **top}


FORMAT_CHECKER = jsonschema.FormatChecker()


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or ("T" in value and datetime.fromisoformat(value).tzinfo is not None)


@FORMAT_CHECKER.checks("uri")
def _is_uri(value: object) -> bool:
    return not isinstance(value, str) or bool(urlparse(value).scheme and urlparse(value).netloc)


RUN_EVENT_VALIDATOR = jsonschema.Draft202012Validator(spec_schema(RunEvent), format_checker=FORMAT_CHECKER)
FACET_VALIDATOR = jsonschema.Draft202012Validator(TRACELET_FACET_SCHEMA, format_checker=FORMAT_CHECKER)


def assert_valid(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` is a valid RunEvent, and its ``tracelet`` facets match their schema."""
    RUN_EVENT_VALIDATOR.validate(event)
    for dataset in [*event.get("inputs", []), *event.get("outputs", [])]:
        FACET_VALIDATOR.validate(dataset["facets"]["tracelet"])
    return event


def test_the_schema_rejects_what_the_spec_rejects(store: ArtifactStore) -> None:
    logged = store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
    good = json.loads(event_json(build_event(logged)))
    assert_valid(good)
    broken: list[Callable[[dict[str, Any]], None]] = [
        lambda e: e["run"].update(runId="not-a-uuid"),
        lambda e: e.update(eventTime="yesterday"),
        lambda e: e.update(eventType="DONE"),
        lambda e: e["job"].pop("name"),
        lambda e: e["outputs"][0]["facets"]["version"].pop("_producer"),
        lambda e: e["outputs"][0]["facets"]["version"].pop("datasetVersion"),
        lambda e: e["outputs"][0]["facets"]["tracelet"].pop("digest"),
    ]
    for breaks in broken:
        event = json.loads(json.dumps(good))
        breaks(event)
        with pytest.raises(jsonschema.ValidationError):
            assert_valid(event)


# -- transports -------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def no_openlineage_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No OpenLineage configuration from the machine: none in the environment, none in the
    working directory (``openlineage.yml``) or the home folder."""
    for key in list(os.environ):
        if key.startswith("OPENLINEAGE"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def events_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The export on, to the client's file transport (one JSON event per line)."""
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv("TRACELET_OPENLINEAGE", "true")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(path))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")
    return path


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [assert_valid(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


class LineageServer:
    """An OpenLineage HTTP endpoint on loopback that records every event posted to it."""

    def __init__(self, port: int = 0) -> None:
        received: list[dict[str, Any]] = []
        self.received = received
        self.paths: list[str] = []
        paths = self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                paths.append(self.path)
                received.append(json.loads(body))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-lineage-server", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def lineage_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LineageServer]:
    server = LineageServer()
    monkeypatch.setenv("TRACELET_OPENLINEAGE", "true")
    monkeypatch.setenv("OPENLINEAGE_URL", server.url)
    yield server
    server.close()


def wait_for_abandoned_deliveries() -> None:
    """Join delivery attempts the outbox gave up on (bounded by the same time limit), so what
    a test starts next cannot receive them."""
    for thread in threading.enumerate():
        if thread.name.startswith("tracelet-deliver-openlineage"):
            thread.join()


def run_id_of(run: RunInfo) -> str:
    return str(uuid.uuid5(RUN_ID_NAMESPACE, run.key))


# -- the core API -----------------------------------------------------------------------------
def test_every_committed_version_emits_one_complete_event(store_dir: Path, events_file: Path) -> None:
    with ArtifactStore.open(store_dir) as store:
        raw = store.log(TraceletArtifact("data/raw", "dataset", description="the rows").add_object([1, 2], "rows"))
        with Experiment("train-model", store=store) as exp:
            exp.get_artifact("data/raw")
            exp.log_artifact(exp.create_artifact("model", "model").add_object({"w": 1}, "w"), aliases=["best"])
            exp.log_artifact(exp.create_artifact("metrics", "report").add_object({"acc": 0.9}, "m"))
        store.log(TraceletArtifact("data/raw", "dataset", description="the rows").add_object([1, 2], "rows"))

        first, model, metrics = read_events(events_file)  # the identical re-log sent nothing
        assert {r.backend: r.status for r in store.deliveries()} == {"openlineage": "delivered"}

    assert first["eventType"] == "COMPLETE"
    assert first["job"]["namespace"] == "tracelet" and first["job"]["name"] == "log:data/raw"
    assert first["inputs"] == []
    [output] = first["outputs"]
    assert (output["namespace"], output["name"]) == ("tracelet", "data/raw")
    assert output["facets"]["version"]["datasetVersion"] == "v1"
    assert output["facets"]["documentation"]["description"] == "the rows"
    tracelet = output["facets"]["tracelet"]
    assert (tracelet["ref"], tracelet["digest"], tracelet["type"]) == ("data/raw:v1", raw.digest, "dataset")

    assert (model["job"]["namespace"], model["job"]["name"]) == ("tracelet", "train-model")
    assert model["run"]["runId"] == metrics["run"]["runId"] == run_id_of(exp.run)  # one run, two outputs
    assert "parent" not in model["run"]["facets"]  # an experiment is its own top-level run
    assert model["outputs"][0]["facets"]["tracelet"]["aliases"] == ["best"]
    [read] = model["inputs"]
    version = read["facets"]["version"]["datasetVersion"]
    assert (read["namespace"], read["name"], version) == ("tracelet", "data/raw", "v1")
    assert read["facets"]["tracelet"]["digest"] == raw.digest


def test_sealed_drafts_are_exported_too(store_dir: Path, events_file: Path) -> None:
    with ArtifactStore.open(store_dir) as store:
        store.upsert(TraceletArtifact("shards", "dataset").add_object([1], "part-1"), group="g")
        store.upsert(TraceletArtifact("shards", "dataset").add_object([2], "part-2"), group="g")
        sealed = store.finish("shards", group="g", producer=RunInfo("tracelet", "r", name="merge"))
    [event] = read_events(events_file)
    assert event["job"]["name"] == "merge" and event["outputs"][0]["facets"]["tracelet"]["ref"] == sealed.ref


def test_openlineage_as_a_configured_backend_sends_each_event_once(store_dir: Path, events_file: Path) -> None:
    with ArtifactStore.open(store_dir) as store, Experiment("e", backend="openlineage", store=store) as exp:
        results = exp.log_artifact(exp.create_artifact("cfg", "config").add_object({"lr": 0.1}, "c"))
        assert results["openlineage"].ok and results["openlineage"].uri
        assert [d.status for d in store.deliveries()] == ["delivered"]
    assert len(read_events(events_file)) == 1


def test_run_ids_come_from_the_run_step_not_the_attempt(store: ArtifactStore) -> None:
    logged = store.log(TraceletArtifact("a", "custom").add_object(1, "x"),
                       producer=RunInfo("dagster", "0f9c1e52-5d0a-4a3c-9d59-3f1f3ad0a1b2", step="a", name="job"))
    retried = store.log(TraceletArtifact("b", "custom").add_object(2, "x"),
                        producer=RunInfo("dagster", "0f9c1e52-5d0a-4a3c-9d59-3f1f3ad0a1b2", step="a", name="job",
                                         extra={"attempt": 2}))
    other_step = store.log(TraceletArtifact("c", "custom").add_object(3, "x"),
                           producer=RunInfo("dagster", "0f9c1e52-5d0a-4a3c-9d59-3f1f3ad0a1b2", step="c", name="job"))
    ids = [build_event(v).run.runId for v in (logged, retried, other_step)]
    assert ids[0] == ids[1] != ids[2]
    assert [build_event(v).run.runId for v in (logged, retried, other_step)] == ids  # and on every replay


def test_the_http_transport_posts_each_event_to_the_lineage_server(
        store_dir: Path, lineage_server: LineageServer) -> None:
    with ArtifactStore.open(store_dir) as store:
        raw = store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
        features = store.log(TraceletArtifact("features", "dataset").add_object([2], "rows"), inputs=[raw])
        expected = [json.loads(event_json(e)) for e in lineage_events(store, features.ref)]

    assert lineage_server.paths == ["/api/v1/lineage", "/api/v1/lineage"]
    received = [assert_valid(e) for e in lineage_server.received]
    assert [e["outputs"][0]["name"] for e in received] == ["raw", "features"]
    # what the CLI prints is what was sent, less what the client adds on emit (its own tag)
    for sent in received:
        sent["run"]["facets"].pop("tags")
    assert received == expected


def test_a_lineage_server_that_is_down_fails_no_log_and_sync_delivers_once_later(
        store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()  # nothing listens there: connections are refused
    monkeypatch.setenv("TRACELET_OPENLINEAGE", "true")
    monkeypatch.setenv("TRACELET_BACKEND_TIMEOUT", "1")
    monkeypatch.setenv("OPENLINEAGE_URL", f"http://127.0.0.1:{port}")
    with ArtifactStore.open(store_dir) as store:
        logged = store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
        assert logged.ref == "raw:v1" and store.get("raw").load("rows") == [1]
        [row] = store.deliveries(logged.ref)
        assert (row.backend, row.status, row.attempts) == ("openlineage", "failed", 1)
        wait_for_abandoned_deliveries()

        server = LineageServer(port)
        try:
            [result] = store.sync()
            assert (result.backend, result.ok, result.version) == ("openlineage", True, "v1")
            assert store.sync() == []
            assert [e["outputs"][0]["facets"]["tracelet"]["ref"] for e in server.received] == ["raw:v1"]
        finally:
            server.close()
        assert store.deliveries(logged.ref)[0].status == "delivered"


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
            [row] = store.deliveries(logged.ref)
            assert row.status == "failed" and logged.version == "v1"
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
        logged = store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
        [row] = store.deliveries(logged.ref)
        assert row.status == "failed" and "OPENLINEAGE_URL" in (row.last_error or "")
        monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
        assert [r.ok for r in store.sync()] == [True]
    assert [e["outputs"][0]["name"] for e in read_events(events_file)] == ["raw"]


def test_without_the_extra_the_log_succeeds_and_names_what_to_install(
        store_dir: Path, events_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tracelet_core.backends.openlineage", None)  # as if not installed
    with ArtifactStore.open(store_dir) as store:
        logged = store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
        [row] = store.deliveries(logged.ref)
        assert row.status == "failed" and "pip install tracelet-artifacts[openlineage]" in (row.last_error or "")
    result = CliRunner().invoke(app, ["--store", str(store_dir), "lineage", "raw", "--format", "openlineage"])
    assert result.exit_code == 1 and "tracelet-artifacts[openlineage]" in result.stderr


def test_the_export_is_off_by_default(store: ArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(tmp_path / "events.jsonl"))
    assert TraceletSettings.load().openlineage is False
    store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
    assert store.deliveries() == [] and not (tmp_path / "events.jsonl").exists()


def test_importing_the_core_imports_no_openlineage_client() -> None:
    code = ("import sys, tracelet_core, tracelet_core.cli; "
            "assert not [m for m in sys.modules if m.startswith('openlineage')], 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- orchestrators ------------------------------------------------------------------------------
@asset(io_manager_key="tracelet")
def ol_raw() -> list[int]:
    return [1, 2, 3]


@asset(io_manager_key="tracelet")
def ol_features(ol_raw: list[int]) -> dict[str, float]:
    return {"mean": sum(ol_raw) / len(ol_raw)}


def test_dagster_materialize_emits_one_event_per_step_with_the_run_as_parent(
        store_dir: Path, events_file: Path) -> None:
    result = materialize([ol_raw, ol_features], resources={"tracelet": TraceletIOManager(store_uri=str(store_dir))})
    assert result.success

    raw_event, features_event = read_events(events_file)
    dagster_job = result.dagster_run.job_name
    for event, step in ((raw_event, "ol_raw"), (features_event, "ol_features")):
        assert (event["job"]["namespace"], event["job"]["name"]) == ("dagster", step)
        producer = RunInfo("dagster", result.run_id, step=step, name=dagster_job)
        assert event["run"]["runId"] == run_id_of(producer)
        parent = event["run"]["facets"]["parent"]
        assert parent["run"]["runId"] == result.run_id  # Dagster's own run id
        assert (parent["job"]["namespace"], parent["job"]["name"]) == ("dagster", dagster_job)
    assert [d["facets"]["tracelet"]["ref"] for d in features_event["inputs"]] == ["ol_raw:v1"]
    assert [d["facets"]["tracelet"]["ref"] for d in features_event["outputs"]] == ["ol_features:v1"]


@tracelet_task("ol/numbers", "dataset")
def ol_numbers(n: int) -> list[int]:
    return list(range(n))


@tracelet_task("ol/total", "report")
def ol_total(numbers: list[int]) -> int:
    return sum(numbers)


@flow
def ol_flow(n: int) -> object:
    return ol_total(ol_numbers(n))


def test_a_prefect_flow_emits_one_event_per_task_with_the_flow_run_as_parent(
        prefect_server: None, events_file: Path) -> None:
    total = ol_flow(4)

    numbers_event, total_event = read_events(events_file)
    assert (numbers_event["job"]["namespace"], numbers_event["job"]["name"]) == ("prefect", "ol_numbers")
    assert (total_event["job"]["namespace"], total_event["job"]["name"]) == ("prefect", "ol_total")
    producer = total.producer  # type: ignore[attr-defined]
    assert total_event["run"]["runId"] == run_id_of(producer)
    assert numbers_event["run"]["runId"] != total_event["run"]["runId"]
    parent = total_event["run"]["facets"]["parent"]
    assert parent["run"]["runId"] == numbers_event["run"]["facets"]["parent"]["run"]["runId"] == producer.run_id
    assert [d["facets"]["tracelet"]["ref"] for d in total_event["inputs"]] == ["ol/numbers:v1"]


# -- the CLI ----------------------------------------------------------------------------------
def test_lineage_format_openlineage_prints_the_events_of_a_version_and_its_upstream(
        store: ArtifactStore, store_dir: Path) -> None:
    raw = store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
    features = store.log(TraceletArtifact("features", "dataset").add_object([2], "rows"), inputs=[raw])
    store.log(TraceletArtifact("unrelated", "dataset").add_object([3], "rows"))

    result = CliRunner().invoke(app, ["--store", str(store_dir), "lineage", features.ref, "--format", "openlineage"])
    assert result.exit_code == 0, result.output
    events = [assert_valid(json.loads(line)) for line in result.stdout.splitlines()]
    assert [e["outputs"][0]["facets"]["tracelet"]["ref"] for e in events] == ["raw:v1", "features:v1"]
    assert [e["run"]["runId"] for e in events] == [build_event(v).run.runId for v in (raw, features)]


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
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(events))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")
    first = runner.invoke(app, ["--store", str(store_dir), "export-lineage", "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["exported"] == 2
    second = runner.invoke(app, ["--store", str(store_dir), "export-lineage"])
    assert second.exit_code == 0 and "exported 2 events" in second.stdout

    sent = read_events(events)
    assert [e["outputs"][0]["name"] for e in sent] == ["raw", "model", "raw", "model"]
    assert sent[:2] == sent[2:]  # the same runs, times and datasets: a replay changes nothing
    assert sent[1]["inputs"][0]["facets"]["tracelet"]["ref"] == "raw:v1"


def test_export_lineage_settles_pending_exports_so_sync_does_not_send_them_again(
        store_dir: Path, events_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENLINEAGE__TRANSPORT__TYPE")  # no transport yet: the export stays pending
    with ArtifactStore.open(store_dir) as store:
        store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
        assert [d.status for d in store.deliveries()] == ["failed"]
        monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
        result = CliRunner().invoke(app, ["--store", str(store_dir), "export-lineage"])
        assert result.exit_code == 0, result.output
        assert [d.status for d in store.deliveries()] == ["delivered"]
        assert store.sync() == []
    assert len(read_events(events_file)) == 1
