"""The catalog's reads (``get`` by version, alias or latest, ``get_by_ids``, one-hop lineage)
and the record ``log`` builds without reading back (SQLite) return exactly what listing the
name's versions (another statement) finds, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace

import pytest
from support import MakeFile

from tracelet_core import ArtifactNotFoundError, ArtifactStore, RunInfo, TraceletArtifact
from tracelet_core._catalog import Catalog, VersionRecord
from tracelet_core._names import LATEST, version_number


def general_get(catalog: Catalog, name: str, selector: str, partition: str | None = None) -> VersionRecord:
    """The version ``selector`` names, found by listing every version of ``name``."""
    listed = catalog.versions(name, partition if selector == LATEST else None)
    number = version_number(selector)
    found = [r for r in listed if r.version == number or selector in r.aliases] if selector != LATEST else listed[-1:]
    assert len(found) == 1, f"{name}:{selector} is {found}"
    return found[0]


@pytest.fixture
def history(any_store: ArtifactStore, make_file: MakeFile) -> list[VersionRecord]:
    raw = any_store.log(TraceletArtifact("lake/raw").add_file(make_file("raw.csv", "a\n1\n")))
    other = any_store.log(TraceletArtifact("lake/Other").add_file(make_file("o.csv", "b\n2\n")))
    run = RunInfo("dagster", "run-1", step="train", name="nightly", extra={"k": [1, 2]})
    model = any_store.log(
        TraceletArtifact("model", "model", description="d", metadata={"acc": 0.9, "tags": ["x"]})
        .add_file(make_file("w/Z.bin", b"z"), "weights/Z.bin").add_file(make_file("w/a.bin", b"a"), "weights/a.bin")
        .add_object({"lr": 0.1}, "config").add_reference("s3://bucket/data.parquet", size_bytes=10, name="ref"),
        producer=run, inputs=[raw, other], aliases=["prod", "best"], partition="2024-01-01")
    again = any_store.log(TraceletArtifact("model", "model").add_file(make_file("w2.bin", b"2")),
                      partition="2024-01-02", aliases=["best"])
    return [raw._record, other._record, model._record, again._record]


@pytest.mark.parametrize("selector", ["latest", "v1", "v2", "prod", "best"])
def test_hot_get_matches_the_general_path(any_store: ArtifactStore, history: list[VersionRecord],
                                         selector: str) -> None:
    assert any_store.catalog.get("model", selector) == general_get(any_store.catalog, "model", selector)


def test_hot_get_of_a_partition_and_by_ids(any_store: ArtifactStore, history: list[VersionRecord]) -> None:
    catalog = any_store.catalog
    assert catalog.get("model", "latest", "2024-01-01") == general_get(catalog, "model", "latest", "2024-01-01")
    ids = [r.id for r in reversed(history)] + [10**6]
    assert catalog.get_by_ids(ids) == [general_get(catalog, r.name, f"v{r.version}") for r in reversed(history)]
    assert catalog.get_by_ids([10**6]) == [] and catalog.get_by_ids([]) == []


def test_the_record_log_returns_is_what_get_reads_back(any_store: ArtifactStore, history: list[VersionRecord]) -> None:
    raw, other, model, again = history
    for record in (raw, other, again):
        assert record == general_get(any_store.catalog, record.name, f"v{record.version}")
    assert model.aliases == ["best", "prod"]  # "best" moved on to v2 later
    assert replace(model, aliases=["prod"]) == general_get(any_store.catalog, "model", "v1")


def test_hot_get_errors_match(any_store: ArtifactStore, history: list[VersionRecord]) -> None:
    for name, selector, message in [("nope", "latest", "no artifact named 'nope'"),
                                    ("model", "v9", "no version or alias 'v9'"),
                                    ("model", "staging", "no version or alias 'staging'")]:
        with pytest.raises(ArtifactNotFoundError, match=message):
            any_store.catalog.get(name, selector)
    with pytest.raises(ArtifactNotFoundError, match="for partition '2030'"):
        any_store.catalog.get("model", "latest", "2030")


def test_one_hop_lineage_in_both_directions(any_store: ArtifactStore, history: list[VersionRecord]) -> None:
    up = any_store.lineage("model:v1", depth=1)
    assert sorted(up.artifact_refs) == ["lake/Other:v1", "lake/raw:v1", "model:v1"]
    down = any_store.lineage("lake/raw:v1", "downstream", depth=1)
    assert "model:v1" in down.artifact_refs
