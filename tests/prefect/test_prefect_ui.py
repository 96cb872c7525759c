"""What the Prefect UI and automations see: markdown artifacts and events, read back from the server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prefect import flow
from prefect.client.schemas.objects import Artifact
from prefect.events import Event
from prefect.settings import PREFECT_UI_URL

from tracelet_core import ArtifactStore, LoggedArtifact
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
                     f"[flow run]({ui}/runs/flow-run/{producer.run_id}) |",
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
