"""Lineage: runs produce and consume versions; graphs upstream and downstream."""

from __future__ import annotations

import pytest

from tracelet_core import (
    ArtifactStore,
    InvalidArtifactError,
    LoggedArtifact,
    RunInfo,
    TraceletArtifact,
)


def log_obj(store: ArtifactStore, name: str, value: object, producer: RunInfo | None = None,
            inputs: tuple[str | LoggedArtifact, ...] = ()) -> LoggedArtifact:
    return store.log(TraceletArtifact(name, "dataset").add_object(value, "v"), producer=producer, inputs=inputs)


@pytest.fixture
def pipeline(any_store: ArtifactStore) -> dict[str, LoggedArtifact]:
    """raw -> (features step) -> features -> (train step) -> model, plus a second raw version."""
    raw = log_obj(any_store, "raw", [1, 2, 3])
    labels = log_obj(any_store, "labels", [0, 1, 0])
    features = log_obj(any_store, "features", [2, 4, 6],
                       RunInfo("dagster", "run-1", step="features"), (raw,))
    model = log_obj(any_store, "model", {"w": 2},
                    RunInfo("dagster", "run-1", step="train"), (features, "labels:latest"))
    log_obj(any_store, "raw", [9, 9])  # raw:v2, not used by anything
    return {"raw": raw, "labels": labels, "features": features, "model": model}


def test_inputs_are_pinned_to_exact_versions(any_store: ArtifactStore, pipeline: dict[str, LoggedArtifact]) -> None:
    model = any_store.get("model")
    assert model.inputs == ["features:v1", "labels:v1"]
    assert model.producer == RunInfo("dagster", "run-1", step="train")


def test_upstream_graph_follows_runs_back_to_the_sources(any_store: ArtifactStore,
                                                         pipeline: dict[str, LoggedArtifact]) -> None:
    graph = any_store.lineage("model:v1")
    assert set(graph.artifact_refs) == {"model:v1", "features:v1", "labels:v1", "raw:v1"}
    edges = {(e.source, e.target, e.relation) for e in graph.edges}
    assert edges == {
        ("run:dagster/run-1/train", "model:v1", "produced"),
        ("features:v1", "run:dagster/run-1/train", "consumed"),
        ("labels:v1", "run:dagster/run-1/train", "consumed"),
        ("run:dagster/run-1/features", "features:v1", "produced"),
        ("raw:v1", "run:dagster/run-1/features", "consumed"),
    }
    assert graph.nodes["run:dagster/run-1/train"]["kind"] == "run"
    shallow = any_store.lineage("model:v1", depth=1)
    assert set(shallow.artifact_refs) == {"model:v1", "features:v1", "labels:v1"}
    assert set(any_store.lineage("model:v1", depth=0).nodes) == {"model:v1"}


def test_downstream_graph_finds_everything_made_from_a_version(any_store: ArtifactStore,
                                                               pipeline: dict[str, LoggedArtifact]) -> None:
    graph = any_store.lineage("raw:v1", direction="downstream")
    assert set(graph.artifact_refs) == {"raw:v1", "features:v1", "model:v1"}
    assert set(any_store.lineage("raw:v2", direction="downstream").artifact_refs) == {"raw:v2"}


def test_consumption_without_output_still_shows_downstream(any_store: ArtifactStore,
                                                           pipeline: dict[str, LoggedArtifact]) -> None:
    any_store.record_consumption(RunInfo("prefect", "flow-7", step="evaluate"), ["model:v1"])
    graph = any_store.lineage("model:v1", direction="downstream")
    assert ("model:v1", "run:prefect/flow-7/evaluate", "consumed") in {
        (e.source, e.target, e.relation) for e in graph.edges}


def test_inputs_without_a_producer_link_versions_directly(any_store: ArtifactStore) -> None:
    a = log_obj(any_store, "a", 1)
    b = log_obj(any_store, "b", 2, inputs=(a,))
    graph = any_store.lineage(b)
    assert [(e.source, e.target, e.relation) for e in graph.edges] == [("a:v1", "b:v1", "input")]


def test_graph_renders_as_dict_mermaid_and_dot(any_store: ArtifactStore,
                                               pipeline: dict[str, LoggedArtifact]) -> None:
    graph = any_store.lineage("model:v1")
    as_dict = graph.to_dict()
    assert as_dict["root"] == "model:v1" and as_dict["direction"] == "upstream"
    assert {n["id"] for n in as_dict["nodes"]} == set(graph.nodes)
    assert len(as_dict["edges"]) == 5
    mermaid = graph.to_mermaid()
    assert mermaid.startswith("graph LR\n")
    assert '["model:v1 (dataset)"]' in mermaid and mermaid.count("-->") == 5
    dot = graph.to_dot()
    assert dot.startswith("digraph lineage {")
    assert '"raw:v1" -> "run:dagster/run-1/features" [label="consumed"];' in dot


def test_lineage_rejects_bad_arguments(any_store: ArtifactStore, pipeline: dict[str, LoggedArtifact]) -> None:
    with pytest.raises(InvalidArtifactError):
        any_store.lineage("model:v1", direction="sideways")
    with pytest.raises(InvalidArtifactError):
        any_store.lineage("model:v1", depth=-1)
