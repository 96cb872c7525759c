"""What the Prefect UI and automations see: markdown artifacts and events, read back from the server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from backend_support import FolderBackend
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import Artifact
from prefect.events import Event
from prefect.settings import PREFECT_UI_URL

from tracelet_core import ArtifactStore, LoggedArtifact, register_backend
from tracelet_core._trackers import unregister_backend
from tracelet_prefect import _flow_end as flow_end
from tracelet_prefect import log_artifact, tracelet_task
from tracelet_prefect._ui import artifact_key

ReadArtifacts = Callable[[str], list[Artifact]]


@tracelet_task("ui/Raw_data.v1", "dataset")
def raw(rows: int) -> list[int]:
    return list(range(rows))


@tracelet_task("ui/report", "report")
def report(data: list[int]) -> dict[str, int]:
    return {"rows": len(data)}


@flow
def pipeline(rows: int) -> tuple[LoggedArtifact, LoggedArtifact]:
    data = raw(rows)
    return data, report(data)


def in_flow_run(flow_run_id: str, resource_id: str, event: str) -> Callable[[Event], bool]:
    def match(candidate: Event) -> bool:
        return (candidate.event == event and candidate.resource.id == resource_id
                and any(r.id == f"prefect.flow-run.{flow_run_id}" for r in candidate.related))

    return match


def test_artifact_keys_follow_prefect_rules() -> None:
    assert artifact_key("ui/Raw_data.v1") == "ui-raw-data-v1"
    assert artifact_key("team/model") == "team-model"


def test_every_new_version_publishes_a_markdown_artifact(store: ArtifactStore,
                                                         prefect_artifacts: ReadArtifacts) -> None:
    before = len(prefect_artifacts("ui-report"))
    data, first = pipeline(3)
    _, unchanged = pipeline(3)
    _, second = pipeline(4)

    assert unchanged == first and second.ref == "ui/report:v2"
    published = prefect_artifacts("ui-report")[before:]
    assert len(published) == 2  # v1 and v2; the unchanged run published nothing
    markdown = str(published[0].data)
    assert published[0].description == "tracelet ui/report:v1"
    assert str(published[0].task_run_id) == first.producer.step  # type: ignore[union-attr]
    producer = first.producer
    assert producer is not None
    ui = (PREFECT_UI_URL.value() or "").rstrip("/")  # links open the UI's own pages
    for expected in ("### ui/report:v1", "| type | report |", f"`{first.digest}`", "| inputs | `ui/Raw_data.v1:v1` |",
                     "| backends | local ok |", "new version", "#### Lineage",
                     f"| produced by | task run [report]({ui}/runs/task-run/{producer.step}) in "
                     f"[flow run of pipeline]({ui}/runs/flow-run/{producer.run_id}) |",
                     f"| input | `ui/Raw_data.v1:v1`: [ui/Raw_data.v1 history]({ui}/artifacts/key/ui-raw-data-v1) |"):
        assert expected in markdown
    assert "mermaid" not in markdown and "graph LR" not in markdown  # Prefect renders no Mermaid
    assert "### ui/report:v2" in str(published[1].data)
    assert [a.description for a in prefect_artifacts("ui-raw-data-v1")][-2:] == [
        "tracelet ui/Raw_data.v1:v1", "tracelet ui/Raw_data.v1:v2"]
    assert data.ref == "ui/Raw_data.v1:v1"


def test_every_new_version_emits_an_event_and_an_asset_materialization(store: ArtifactStore,
                                                                       event_log: Any) -> None:
    data, summary = pipeline(5)
    run_id = str(summary.producer.run_id)  # type: ignore[union-attr]

    [logged] = event_log.wait(in_flow_run(run_id, "tracelet.artifact.ui/report", "tracelet.artifact.logged"))
    labels = dict(logged.resource.items())
    assert {k: labels[k] for k in ("prefect.resource.name", "tracelet.ref", "tracelet.version", "tracelet.digest",
                                   "tracelet.type")} == {
        "prefect.resource.name": "ui/report", "tracelet.ref": summary.ref, "tracelet.version": summary.version,
        "tracelet.digest": summary.digest, "tracelet.type": "report"}
    payload: dict[str, Any] = logged.payload
    assert (payload["ref"], payload["created"], payload["inputs"], payload["backends"]) == (
        summary.ref, True, [data.ref], {"local": True})
    assert payload["producer"]["step"] == summary.producer.step  # type: ignore[union-attr]
    related = {r.id: r.role for r in logged.related}
    assert related["tracelet.artifact.ui/Raw_data.v1"] == "tracelet-input"
    assert related[f"prefect.task-run.{summary.producer.step}"] == "task-run"  # type: ignore[union-attr]

    [asset] = event_log.wait(in_flow_run(run_id, "tracelet://ui/report", "prefect.asset.materialization.succeeded"))
    assert asset.payload["tracelet.ref"] == summary.ref
    roles = {r.id: r.role for r in asset.related}
    assert roles["tracelet://ui/Raw_data.v1"] == "asset" and roles["tracelet"] == "asset-materialized-by"
    event_log.wait(in_flow_run(run_id, "tracelet://ui/Raw_data.v1", "prefect.asset.referenced"))


def test_moving_an_alias_publishes_too(store: ArtifactStore, event_log: Any,
                                       prefect_artifacts: ReadArtifacts) -> None:
    @flow
    def promote() -> LoggedArtifact:
        _, summary = pipeline(6)
        return log_artifact(summary, aliases=["production"])

    promoted = promote()
    assert promoted.aliases == ["production"] and store.get("ui/report:production") == promoted
    run_id = str(promoted.producer.run_id)  # type: ignore[union-attr]

    def alias_event(candidate: Event) -> bool:
        return (candidate.resource.id == "tracelet.artifact.ui/report"
                and candidate.payload.get("aliases_set") == ["production"]
                and candidate.payload.get("ref") == promoted.ref)

    [moved] = event_log.wait(alias_event)
    assert moved.resource["tracelet.alias.production"] == "true" and moved.payload["created"] is False
    event_log.wait(in_flow_run(run_id, "tracelet://ui/report", "prefect.asset.materialization.succeeded"))
    assert "alias production set on an existing version" in str(prefect_artifacts("ui-report")[-1].data)


def test_publishing_failures_never_fail_a_committed_version(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    import tracelet_prefect._ui as ui

    async def refuse(items: list[Any]) -> list[BaseException | None]:
        raise ConnectionError("injected: the Prefect API is unreachable")

    monkeypatch.setattr(ui, "_create_artifacts", refuse)
    data, _ = pipeline(7)
    assert ui.drain(60)
    assert store.get(data.ref).load() == list(range(7))
    assert (f"{data.ref} is committed, but publishing its markdown artifact to Prefect failed: "
            "ConnectionError: injected") in caplog.text


def flow_run_artifacts(flow_run_id: str) -> list[Artifact]:
    """The markdown artifacts of one flow run, read once through Prefect's client (no drain,
    no polling: what the server lists at this moment)."""
    async def query() -> list[Artifact]:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])))

    return asyncio.run(query())


@tracelet_task("ui/part", "dataset")
def part(index: int) -> list[int]:
    return [index, index * index]


@tracelet_task("ui/summary", "report")
def summary(parts: list[list[int]]) -> int:
    return sum(p[1] for p in parts)


@flow
def sixty(offset: int) -> LoggedArtifact:
    parts = part.map([offset + i for i in range(60)])
    return summary(parts)


def test_every_markdown_artifact_and_event_is_published_when_the_flow_returns(store: ArtifactStore,
                                                                              event_log: Any) -> None:
    total = sixty(1000)
    run_id = str(total.producer.run_id)  # type: ignore[union-attr]

    published = flow_run_artifacts(run_id)  # right after the flow returned: no wait
    assert not flow_end.wrapped()  # Prefect's engine is wrapped only while a flow run has tracelet work
    assert len(total.inputs) == 60
    expected = sorted(f"tracelet {ref}" for ref in [*total.inputs, total.ref])
    assert sorted(a.description or "" for a in published) == expected
    # the events were sent before the run ended; the server stores them on its own schedule
    logged = event_log.wait(lambda e: e.event == "tracelet.artifact.logged"
                            and any(r.id == f"prefect.flow-run.{run_id}" for r in e.related), count=61)
    assert {e.resource["tracelet.ref"] for e in logged} == {*total.inputs, total.ref}


@pytest.fixture
def gated_tracker(tmp_path: Path) -> Iterator[tuple[Path, threading.Event]]:
    """A folder tracker registered as ``folder`` whose deliveries wait until the event is set."""
    root, gate = tmp_path / "tracker", threading.Event()
    register_backend("folder", lambda root=str(root): FolderBackend(root, block=gate))
    yield root, gate
    gate.set()
    unregister_backend("folder")


def test_a_task_returns_once_committed_and_its_flow_run_ends_once_delivered(
        store: ArtifactStore, gated_tracker: tuple[Path, threading.Event]) -> None:
    root, gate = gated_tracker

    @tracelet_task("ui/gated", "model", backends=["folder"])
    def train() -> dict[str, int]:
        return {"w": 1}

    seen: dict[str, Any] = {}

    @flow
    def pipeline() -> LoggedArtifact:
        model = train()  # returned while its delivery waits for the gate
        seen["while the tracker is busy"] = [d.status for d in store.delivery.deliveries(version_id=model._record.id)]
        seen["held by the tracker"] = (root / "ui/gated" / model.version).exists()
        gate.set()
        return model

    model = pipeline()
    assert seen == {"while the tracker is busy": ["pending"], "held by the tracker": False}
    # the flow run ended after the delivery: the outbox row is done, the tracker holds it ...
    assert [d.status for d in store.delivery.deliveries(version_id=model._record.id)] == ["delivered"]
    assert (root / "ui/gated" / model.version / "tags.json").is_file()
    # ... and the markdown, published once it was delivered, says so
    [markdown] = [a for a in flow_run_artifacts(str(model.producer.run_id))  # type: ignore[union-attr]
                  if a.key == "ui-gated"]
    assert "| backends | local ok, folder ok |" in str(markdown.data)


def test_a_tracker_that_cannot_start_in_the_background_leaves_its_delivery_to_sync(
        store: ArtifactStore, tmp_path: Path) -> None:
    class Unstartable(FolderBackend):
        def start(self, experiment_name: str, run_id: str) -> None:
            raise ConnectionError("injected: the tracker refuses new runs")

    root = tmp_path / "tracker"
    register_backend("folder", lambda root=str(root): Unstartable(root))
    try:
        @tracelet_task("ui/unstarted", "model", backends=["folder"])
        def train() -> dict[str, int]:
            return {"w": 2}

        @flow
        def pipeline() -> LoggedArtifact:
            return train()

        model = pipeline()
        [row] = store.delivery.deliveries(version_id=model._record.id)
        assert row.status == "failed" and "the tracker refuses new runs" in (row.last_error or "")
        register_backend("folder", lambda root=str(root): FolderBackend(root), clobber=True)
        assert [r.ok for r in store.sync()] == [True]
        assert (root / "ui/unstarted" / model.version / "tags.json").is_file()
    finally:
        unregister_backend("folder")
