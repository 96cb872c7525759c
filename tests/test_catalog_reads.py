"""The SQLite hot reads (``get`` by version, alias or latest, ``get_by_ids``, one-hop
lineage in plain SQL) and the record ``log`` builds without reading back return exactly
what the general SQLAlchemy path (``_hydrate``) returns."""

from __future__ import annotations

from dataclasses import replace

import pytest
from support import MakeFile

from tracelet_core import ArtifactNotFoundError, ArtifactStore, RunInfo, TraceletArtifact
from tracelet_core._catalog import Catalog, VersionRecord


def general_get(catalog: Catalog, name: str, selector: str, partition: str | None = None) -> VersionRecord:
    with catalog._read() as conn:
        artifact_id = catalog._artifact_id(conn, name)
        row = catalog._version_row(conn, artifact_id, name, selector, partition)
        return catalog._hydrate(conn, [row], {artifact_id: name})[0]


@pytest.fixture
def history(store: ArtifactStore, make_file: MakeFile) -> list[VersionRecord]:
    raw = store.log(TraceletArtifact("lake/raw").add_file(make_file("raw.csv", "a\n1\n")))
    other = store.log(TraceletArtifact("lake/Other").add_file(make_file("o.csv", "b\n2\n")))
    run = RunInfo("dagster", "run-1", step="train", name="nightly", extra={"k": [1, 2]})
    model = store.log(
        TraceletArtifact("model", "model", description="d", metadata={"acc": 0.9, "tags": ["x"]})
        .add_file(make_file("w/Z.bin", b"z"), "weights/Z.bin").add_file(make_file("w/a.bin", b"a"), "weights/a.bin")
        .add_object({"lr": 0.1}, "config").add_reference("s3://bucket/data.parquet", size_bytes=10, name="ref"),
        producer=run, inputs=[raw, other], aliases=["prod", "best"], partition="2024-01-01")
    again = store.log(TraceletArtifact("model", "model").add_file(make_file("w2.bin", b"2")),
                      partition="2024-01-02", aliases=["best"])
    return [raw._record, other._record, model._record, again._record]


@pytest.mark.parametrize("selector", ["latest", "v1", "v2", "prod", "best"])
def test_hot_get_matches_the_general_path(store: ArtifactStore, history: list[VersionRecord], selector: str) -> None:
    assert store.catalog.get("model", selector) == general_get(store.catalog, "model", selector)


def test_hot_get_of_a_partition_and_by_ids(store: ArtifactStore, history: list[VersionRecord]) -> None:
    catalog = store.catalog
    assert catalog.get("model", "latest", "2024-01-01") == general_get(catalog, "model", "latest", "2024-01-01")
    ids = [r.id for r in reversed(history)] + [10**6]
    assert catalog.get_by_ids(ids) == [general_get(catalog, r.name, f"v{r.version}") for r in reversed(history)]


def test_the_record_log_returns_is_what_get_reads_back(store: ArtifactStore, history: list[VersionRecord]) -> None:
    raw, other, model, again = history
    for record in (raw, other, again):
        assert record == general_get(store.catalog, record.name, f"v{record.version}")
    assert model.aliases == ["best", "prod"]  # "best" moved on to v2 later
    assert replace(model, aliases=["prod"]) == general_get(store.catalog, "model", "v1")


def test_hot_get_errors_match(store: ArtifactStore, history: list[VersionRecord]) -> None:
    for name, selector, message in [("nope", "latest", "no artifact named 'nope'"),
                                    ("model", "v9", "no version or alias 'v9'"),
                                    ("model", "staging", "no version or alias 'staging'")]:
        with pytest.raises(ArtifactNotFoundError, match=message):
            store.catalog.get(name, selector)
    with pytest.raises(ArtifactNotFoundError, match="for partition '2030'"):
        store.catalog.get("model", "latest", "2030")


def test_one_hop_lineage_in_both_directions(store: ArtifactStore, history: list[VersionRecord]) -> None:
    up = store.lineage("model:v1", depth=1)
    assert sorted(up.artifact_refs) == ["lake/Other:v1", "lake/raw:v1", "model:v1"]
    down = store.lineage("lake/raw:v1", "downstream", depth=1)
    assert "model:v1" in down.artifact_refs
