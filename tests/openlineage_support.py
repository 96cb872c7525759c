"""What the OpenLineage tests share: the spec's schema checks, transports, a lineage server.

The client ships no JSON Schema files (and nothing here may fetch the spec), so events are
checked against a JSON Schema built from the client's own attrs classes, which OpenLineage
generates from the spec (``OpenLineage.json`` and the facet files): every non-optional field
required, ``eventType`` one of the spec's states, ``runId`` a UUID, times RFC 3339 with a zone,
URIs absolute, each facet tracelet sends by its own class (``errorMessage``, ``schema``,
``parent``...) and every other facet as the spec's base facet. ``RunEvent`` and
``DatasetEvent`` each have their own validator; ``assert_valid`` picks by shape.
"""

from __future__ import annotations

import enum
import json
import os
import threading
import types
import typing
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import attr
import jsonschema
import pytest
from openlineage.client.event_v2 import DatasetEvent, RunEvent
from openlineage.client.facet_v2 import (
    dataset_version_dataset,
    documentation_dataset,
    error_message_run,
    job_type_job,
    parent_run,
    processing_engine_run,
    schema_dataset,
    tags_job,
    tags_run,
)
from openlineage.client.generated.base import BaseFacet

from tracelet_core.backends.openlineage import TRACELET_FACET_SCHEMA, TraceletDatasetFacet

# -- the spec, from the client's classes ------------------------------------------------------
#: Facets the events carry, validated by their own classes (by key, where they sit).
KNOWN_FACETS: list[tuple[str, type]] = [
    ("parent", parent_run.ParentRunFacet),
    ("errorMessage", error_message_run.ErrorMessageRunFacet),
    ("schema", schema_dataset.SchemaDatasetFacet),
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
DATASET_EVENT_VALIDATOR = jsonschema.Draft202012Validator(spec_schema(DatasetEvent), format_checker=FORMAT_CHECKER)
FACET_VALIDATOR = jsonschema.Draft202012Validator(TRACELET_FACET_SCHEMA, format_checker=FORMAT_CHECKER)


def assert_valid(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` is a valid RunEvent or DatasetEvent, and its ``tracelet`` facets match their
    schema."""
    if "dataset" in event:
        DATASET_EVENT_VALIDATOR.validate(event)
        datasets = [event["dataset"]]
    else:
        RUN_EVENT_VALIDATOR.validate(event)
        datasets = [*event.get("inputs", []), *event.get("outputs", [])]
    for dataset in datasets:
        FACET_VALIDATOR.validate(dataset["facets"]["tracelet"])
    return event


# -- transports -------------------------------------------------------------------------------
def no_openlineage_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No OpenLineage configuration from the machine: none in the environment, none in the
    working directory (``openlineage.yml``) or the home folder."""
    for key in list(os.environ):
        if key.startswith("OPENLINEAGE"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


def export_to_file(monkeypatch: pytest.MonkeyPatch, path: Path) -> Path:
    """The export on, to the client's file transport (one JSON event per line)."""
    monkeypatch.setenv("TRACELET_OPENLINEAGE", "true")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(path))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")
    return path


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event in a file transport's file, each checked against the spec."""
    if not path.exists():
        return []
    return [assert_valid(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def run_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if "run" in e]


def states_by_job(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """job name -> the event types its runs sent, in order (one run per job in these tests;
    asserted: a job with two run ids fails)."""
    states: dict[str, list[str]] = defaultdict(list)
    ids: dict[str, set[str]] = defaultdict(set)
    for event in run_events(events):
        states[event["job"]["name"]].append(event["eventType"])
        ids[event["job"]["name"]].add(event["run"]["runId"])
    assert all(len(i) == 1 for i in ids.values()), dict(ids)
    return dict(states)


def terminal(events: list[dict[str, Any]], job: str) -> dict[str, Any]:
    """The one terminal event of ``job``'s run."""
    [end] = [e for e in run_events(events) if e["job"]["name"] == job and e["eventType"] in ("COMPLETE", "FAIL")]
    return end


def start(events: list[dict[str, Any]], job: str) -> dict[str, Any]:
    [begun] = [e for e in run_events(events) if e["job"]["name"] == job and e["eventType"] == "START"]
    return begun


def refs(datasets: list[dict[str, Any]]) -> list[str]:
    return [d["facets"]["tracelet"]["ref"] for d in datasets]


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


@contextmanager
def serving_lineage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LineageServer]:
    """The export on, to a loopback lineage server (``OPENLINEAGE_URL``), no other configuration."""
    no_openlineage_config(monkeypatch, tmp_path)
    server = LineageServer()
    monkeypatch.setenv("TRACELET_OPENLINEAGE", "true")
    monkeypatch.setenv("OPENLINEAGE_URL", server.url)
    try:
        yield server
    finally:
        server.close()


def wait_for_abandoned_deliveries() -> None:
    """Join delivery attempts the outbox gave up on (bounded by the same time limit), so what
    a test starts next cannot receive them."""
    for thread in threading.enumerate():
        if thread.name.startswith("tracelet-deliver-openlineage"):
            thread.join()
