"""Quarantine, release and impact: marks on a bad version and on what was built from it, reads
refused with ``QuarantinedError``, the one-query impact report, lineage and page marks, the CLI,
the status-event outbox, and marks kept by ``reindex``.

The store-level tests run on both catalogs (``any_store``); ``reindex`` on each storage kind.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import StoreLocation
from typer.testing import CliRunner

from tracelet_core import (
    ArtifactResult,
    ArtifactStore,
    Backend,
    Experiment,
    ImpactReport,
    InvalidArtifactError,
    LoggedArtifact,
    QuarantinedError,
    RunInfo,
    TraceletArtifact,
    TraceletError,
    register_backend,
)
from tracelet_core._lineage_html import render_svg
from tracelet_core._trackers import unregister_backend
from tracelet_core.cli import app


def log_value(store: ArtifactStore, name: str, value: object, **kwargs: object) -> LoggedArtifact:
    return store.log(TraceletArtifact(name, "dataset").add_object(value, "value", serializer="json"),
                     **kwargs)  # type: ignore[arg-type]


def pipeline(store: ArtifactStore) -> dict[str, LoggedArtifact]:
    """raw:v1 -> features:v1 -> model:v1 (alias production) and report:v1; raw:v2 unrelated."""
    raw = log_value(store, "raw", [1, 2, 3])
    other = log_value(store, "raw", [4])
    train = RunInfo("prefect", "flow-1", step="train")
    features = log_value(store, "features", {"x": 1}, inputs=[raw], producer=RunInfo("prefect", "flow-1", "feat"))
    model = log_value(store, "model", {"w": 2}, inputs=[features], producer=train, aliases=["production"])
    report = log_value(store, "report", "ok", inputs=[model])
    store.record_consumption(RunInfo("dagster", "run-9", step="serve"), [model])
    return {"raw": raw, "other": other, "features": features, "model": model, "report": report}


def test_impact_is_everything_built_from_a_version(any_store: ArtifactStore) -> None:
    made = pipeline(any_store)
    report = any_store.impact("raw:v1")
    assert isinstance(report, ImpactReport)
    assert report.versions == ["features:v1", "model:v1", "report:v1"]
    assert report.aliases == {"model:production": "model:v1"}
    assert sorted((r.orchestrator, r.step) for r in report.runs) == [
        ("dagster", "serve"), ("prefect", "feat"), ("prefect", "train")]
    assert any_store.impact("raw:v2").versions == [] and any_store.impact("raw:v2").runs == []
    assert any_store.impact("model:production").aliases == {"model:production": "model:v1"}
    assert made["report"].quarantine is None
    assert json.loads(json.dumps(report.to_dict()))["versions"] == report.versions


def test_quarantine_marks_downstream_and_refuses_reads(any_store: ArtifactStore, tmp_path: Path) -> None:
    made = pipeline(any_store)
    report = any_store.quarantine("raw:v1", "mislabelled rows 10-90")
    assert report.ref == "raw:v1" and report.versions == ["features:v1", "model:v1", "report:v1"]
    model = any_store.get("model:production")  # still listed and gettable, alias not moved
    assert model.ref == "model:v1" and model.aliases == ["production"]
    assert model.quarantine is not None and model.quarantine["source"] == "raw:v1"
    assert model.quarantine["reason"] == "mislabelled rows 10-90" and model.quarantine["at"].endswith("+00:00")
    with pytest.raises(QuarantinedError, match=r"model:v1 is quarantined \(built from raw:v1.*mislabelled rows 10-90"):
        model.load()
    with pytest.raises(QuarantinedError, match="raw:v1 is quarantined: mislabelled"):
        any_store.get("raw:v1").download(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(QuarantinedError):
        made["features"].path("value.json")
    assert model.load(allow_quarantined=True) == {"w": 2}
    assert any_store.get("raw:v2").load() == [4]  # a sibling version is untouched
    assert isinstance(QuarantinedError("x"), TraceletError)
    assert [v.ref for v in any_store.versions("raw")] == ["raw:v1", "raw:v2"]

    assert sorted(any_store.release("raw:v1")) == ["features:v1", "model:v1", "raw:v1", "report:v1"]
    assert any_store.get("model:v1").quarantine is None and any_store.get("model:v1").load() == {"w": 2}


def test_quarantine_of_one_version_only_and_bad_input(any_store: ArtifactStore) -> None:
    pipeline(any_store)
    report = any_store.quarantine("features:v1", "leak", downstream=False)
    assert report.versions == ["model:v1", "report:v1"]  # what it found, not what it marked
    assert any_store.get("features:v1").quarantine is not None
    assert any_store.get("model:v1").quarantine is None
    with pytest.raises(InvalidArtifactError, match="reason"):
        any_store.quarantine("raw:v1", "  ")
    with pytest.raises(TraceletError):
        any_store.quarantine("raw:v7", "no such version")
    assert any_store.get("raw:v1").quarantine is None  # nothing changed


def test_a_version_marked_from_two_sources_stays_until_both_release(any_store: ArtifactStore) -> None:
    pipeline(any_store)
    any_store.quarantine("raw:v1", "bad raw")
    any_store.quarantine("model:v1", "bad model")
    assert any_store.release("raw:v1") == ["features:v1", "raw:v1"]  # model, report still marked by model:v1
    assert any_store.get("report:v1").quarantine == {**any_store.get("report:v1").quarantine,  # type: ignore[dict-item]
                                                     "source": "model:v1", "reason": "bad model"}
    assert any_store.release("model:v1") == ["model:v1", "report:v1"]


def test_lineage_and_the_page_mark_quarantined_and_deleted_nodes(any_store: ArtifactStore) -> None:
    made = pipeline(any_store)
    any_store.quarantine("features:v1", "leak")
    log_value(any_store, "raw", [5])
    any_store.delete("raw:v2")
    graph = any_store.lineage(made["report"])
    nodes = {n["id"]: n for n in graph.to_dict()["nodes"]}
    assert nodes["features:v1"]["quarantined"] is True and nodes["model:v1"]["quarantined"] is True
    assert "quarantined" not in nodes["raw:v1"]
    svg = render_svg(graph)
    assert 'class="node version quarantined" data-id="features:v1"' in svg
    assert 'class="node version" data-id="raw:v1"' in svg
    down = any_store.lineage(any_store.get("raw:v1"), direction="downstream")
    assert {n["id"] for n in down.to_dict()["nodes"] if n.get("quarantined")} == {
        "features:v1", "model:v1", "report:v1"}
    deleted_graph = any_store.lineage(any_store._including_deleted("raw:v2"))
    assert 'class="node version root deleted"' in render_svg(deleted_graph)


class TaggingBackend(Backend):
    """A tracker kept in a JSON file: ``log`` records a version, ``set_status`` its status tag."""

    name = "tagfile"

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def config(self) -> dict[str, str]:
        return {"path": str(self.path)}

    def _read(self) -> dict[str, dict[str, str]]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def log(self, artifact: LoggedArtifact) -> ArtifactResult:
        held = self._read()
        held.setdefault(artifact.ref, {})
        self.path.write_text(json.dumps(held))
        return ArtifactResult(backend=self.name, ok=True, version=artifact.ref)

    def fetch(self, name: str, version: str, dest: Path) -> object:  # type: ignore[override]
        raise NotImplementedError

    def set_status(self, artifact: LoggedArtifact, status: str) -> ArtifactResult:
        held = self._read()
        held.setdefault(artifact.ref, {})["tracelet.status"] = status
        self.path.write_text(json.dumps(held))
        return ArtifactResult(backend=self.name, ok=True, version=artifact.ref)


@pytest.fixture
def tagfile(tmp_path: Path) -> Path:
    register_backend("tagfile", TaggingBackend, clobber=True)
    yield tmp_path / "tracker.json"
    unregister_backend("tagfile")


def test_trackers_hear_of_quarantine_release_and_delete(any_store: ArtifactStore, tagfile: Path) -> None:
    tracker = TaggingBackend(str(tagfile))
    with Experiment("e", backend=[tracker], store=any_store) as exp:
        for i in range(3):
            exp.log_artifact(exp.create_artifact("data", "dataset").add_object(i, "v", serializer="json"))
        held = any_store.versions("data")
        exp.log_artifact(exp.create_artifact("derived", "dataset").add_object(9, "v", serializer="json"),
                         inputs=[held[0]])
    downstream = any_store.get("derived:v1")
    assert downstream.inputs == [held[0].ref]
    assert json.loads(tagfile.read_text()) == {v.ref: {} for v in [*held, downstream]}
    any_store.quarantine(held[0].ref, "bad")
    tags = json.loads(tagfile.read_text())
    assert tags[held[0].ref] == {"tracelet.status": "quarantined"} == tags[downstream.ref]
    any_store.release(held[0].ref)
    assert json.loads(tagfile.read_text())[downstream.ref] == {"tracelet.status": "active"}
    any_store.delete(held[1].ref)
    assert json.loads(tagfile.read_text())[held[1].ref] == {"tracelet.status": "deleted"}
    any_store.prune("data", keep_last=1, dry_run=False)
    assert json.loads(tagfile.read_text())[held[0].ref] == {"tracelet.status": "deleted"}
    assert any_store.catalog.status_events() == []  # every event delivered


def test_reindex_keeps_quarantine_marks(blob_location: StoreLocation, tmp_path: Path) -> None:
    with blob_location.open(catalog_url=f"sqlite:///{tmp_path / 'lost.db'}") as store:
        pipeline(store)
        store.quarantine("features:v1", "leak found")
    with blob_location.open(catalog_url=f"sqlite:///{tmp_path / 'new.db'}") as fresh:
        report = fresh.reindex()
        assert report.skipped == [] and len(report) == 5
        assert fresh.get("model:v1").quarantine is not None
        assert fresh.get("model:v1").quarantine["source"] == "features:v1"  # type: ignore[index]
        assert fresh.get("raw:v1").quarantine is None
        with pytest.raises(QuarantinedError, match="leak found"):
            fresh.get("report:v1").load()


def test_cli_quarantine_impact_release(store_dir: Path) -> None:
    runner = CliRunner()
    with ArtifactStore.open(store_dir) as store:
        pipeline(store)
    base = ["--store", str(store_dir)]
    impact = runner.invoke(app, [*base, "impact", "raw:v1", "--json"])
    assert impact.exit_code == 0, impact.output
    assert json.loads(impact.stdout)["aliases"] == {"model:production": "model:v1"}
    text_impact = runner.invoke(app, [*base, "impact", "raw:v1"])
    assert "alias model:production -> model:v1" in text_impact.stdout and "  report:v1" in text_impact.stdout
    done = runner.invoke(app, [*base, "quarantine", "features:v1", "--reason", "leak"])
    assert done.exit_code == 0, done.output
    assert "quarantined 3 versions: features:v1, model:v1, report:v1" in done.stdout
    listing = runner.invoke(app, [*base, "ls"])
    assert "model:v1 (quarantined)" in listing.stdout and "raw:v2 (quarantined)" not in listing.stdout
    assert "v1 (quarantined)" in runner.invoke(app, [*base, "versions", "features"]).stdout
    shown = runner.invoke(app, [*base, "show", "model:v1"])
    assert "QUARANTINED since" in shown.stdout and "built from features:v1" in shown.stdout
    shown_json = json.loads(runner.invoke(app, [*base, "show", "model:v1", "--json"]).stdout)
    assert shown_json["quarantine"]["reason"] == "leak"
    missing = runner.invoke(app, [*base, "quarantine", "features:v1"])
    assert missing.exit_code == 2  # --reason is required
    released = runner.invoke(app, [*base, "release", "features:v1", "--json"])
    assert json.loads(released.stdout) == {"released": ["features:v1", "model:v1", "report:v1"]}
    assert "(quarantined)" not in runner.invoke(app, [*base, "ls"]).stdout


def test_a_quarantine_whose_commit_fails_leaves_no_mark(store: ArtifactStore) -> None:
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    pipeline(store)
    store.quarantine("model:v1", "kept in the file", downstream=False)

    def fail(_conn: object) -> None:
        raise OperationalError("COMMIT", {}, ConnectionError("the connection dropped at commit"))

    event.listen(store.catalog.engine, "commit", fail)
    try:
        with pytest.raises(TraceletError):
            store.quarantine("raw:v1", "never committed")
    finally:
        event.remove(store.catalog.engine, "commit", fail)
    assert store.get("raw:v1").quarantine is None and store.get("features:v1").quarantine is None
    assert store.blobs.read_quarantine_marks("raw") == [] and store.blobs.read_quarantine_marks("features") == []
    assert [(m["version"], m["reason"]) for m in store.blobs.read_quarantine_marks("model")] == [
        (1, "kept in the file")]
