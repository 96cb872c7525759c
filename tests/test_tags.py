"""Version tags (the Comet guide's): non-unique labels on a version, outside its digest, on every
store of the contract matrix (local disk, S3, ``memory://``; SQLite and PostgreSQL catalogs),
through the API and ``tracelet ls --tag``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from support import MakeFile
from typer.testing import CliRunner

from tracelet_core import ArtifactStore, Experiment, InvalidArtifactError, TraceletArtifact
from tracelet_core._catalog import SCHEMA_VERSION
from tracelet_core.cli import app


def dataset(make_file: MakeFile, content: str, tags: list[str] | None = None,
            name: str = "data/train") -> TraceletArtifact:
    return TraceletArtifact(name, "dataset", tags=tags).add_file(make_file("train.csv", content))


def test_tags_label_the_version(contract_store: ArtifactStore, make_file: MakeFile) -> None:
    logged = contract_store.log(dataset(make_file, "a,b\n", tags=["raw", "needs review", "raw"]))
    assert logged.tags == ["needs review", "raw"]
    assert contract_store.get("data/train:v1").tags == ["needs review", "raw"]
    assert contract_store.get("data/train:v1").aliases == []  # tags are not aliases


def test_tags_are_outside_the_digest_and_dedup(contract_store: ArtifactStore, make_file: MakeFile) -> None:
    first = contract_store.log(dataset(make_file, "a,b\n", tags=["raw"]))
    again = contract_store.log(dataset(make_file, "a,b\n", tags=["reviewed"]))  # identical content
    untagged = contract_store.log(dataset(make_file, "a,b\n"))
    assert again.ref == untagged.ref == first.ref == "data/train:v1"
    assert again.digest == first.digest
    assert first.tags == ["raw", "reviewed"]  # added to the existing version, none removed
    assert [v.version for v in contract_store.versions("data/train")] == ["v1"]


def test_tags_are_not_unique_and_filter_versions(contract_store: ArtifactStore, make_file: MakeFile) -> None:
    for content, tags in [("1\n", ["candidate"]), ("2\n", []), ("3\n", ["candidate", "best-f1"])]:
        contract_store.log(dataset(make_file, content, tags=tags))
    assert [v.ref for v in contract_store.versions("data/train", tag="candidate")] == [
        "data/train:v1", "data/train:v3"]
    assert [v.version for v in contract_store.versions("data/train", tag="best-f1")] == ["v3"]
    assert contract_store.versions("data/train", tag="nobody") == []
    assert [v.version for v in contract_store.versions("data/train")] == ["v1", "v2", "v3"]


def test_list_by_tag_gives_the_newest_tagged_version_of_each_name(
        contract_store: ArtifactStore, make_file: MakeFile) -> None:
    contract_store.log(dataset(make_file, "1\n", tags=["gold"]))
    contract_store.log(dataset(make_file, "2\n", tags=["gold"]))
    contract_store.log(dataset(make_file, "3\n"))  # newest, but untagged
    contract_store.log(TraceletArtifact("models/clf", "model", tags=["gold"]).add_object({"w": 1}, "weights"))
    contract_store.log(TraceletArtifact("other", "dataset").add_object([1], "rows"))
    assert [a.ref for a in contract_store.list(tag="gold")] == ["data/train:v2", "models/clf:v1"]
    assert [a.ref for a in contract_store.list("data", tag="gold")] == ["data/train:v2"]
    assert [a.ref for a in contract_store.list(type="model", tag="gold")] == ["models/clf:v1"]
    assert contract_store.list(tag="silver") == []


def test_experiment_logs_the_artifacts_tags(contract_store: ArtifactStore) -> None:
    with Experiment("tagging", store=contract_store) as exp:
        artifact = exp.create_artifact("report", "report")
        artifact.tags = ["weekly", "draft"]
        artifact.add_object({"acc": 0.9}, "summary")
        exp.log_artifact(artifact)
    assert contract_store.get("report").tags == ["draft", "weekly"]
    assert artifact.to_dict()["tags"] == ["weekly", "draft"]


@pytest.mark.parametrize("tags", [[""], [" padded"], ["new\nline"], ["x" * 129], [7], "just-a-string"],
                         ids=["empty", "padded", "control", "too-long", "not-a-string", "a-string"])
def test_bad_tags_are_refused_when_built(tags: object) -> None:
    with pytest.raises(InvalidArtifactError):
        TraceletArtifact("ok", tags=tags)  # type: ignore[arg-type]
    artifact = TraceletArtifact("ok")
    with pytest.raises(InvalidArtifactError):
        artifact.tags = tags  # type: ignore[assignment]
    assert artifact.tags == []


def test_bad_tag_filter_is_refused(store: ArtifactStore, make_file: MakeFile) -> None:
    store.log(dataset(make_file, "1\n"))
    with pytest.raises(InvalidArtifactError):
        store.versions("data/train", tag="")
    with pytest.raises(InvalidArtifactError):
        store.list(tag=" x")


def test_a_catalog_from_before_tags_is_migrated(store_dir: Path, make_file: MakeFile) -> None:
    with ArtifactStore.open(store_dir) as store:
        store.log(dataset(make_file, "1\n"))
    engine = create_engine(f"sqlite:///{store_dir / 'catalog.db'}")
    with engine.begin() as conn:  # as tracelet wrote it before migration 6
        conn.execute(text("DROP TABLE version_tags"))
        conn.execute(text("DELETE FROM tracelet_schema WHERE version = 6"))
    with ArtifactStore.open(store_dir) as store:
        assert store.get("data/train").tags == []
        store.log(dataset(make_file, "1\n", tags=["after-upgrade"]))
        assert store.get("data/train:v1").tags == ["after-upgrade"]
    assert inspect(engine).has_table("version_tags")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT max(version) FROM tracelet_schema")).scalar() == SCHEMA_VERSION
    engine.dispose()


# -- the CLI --------------------------------------------------------------------------------
def test_ls_filters_by_tag(store_dir: Path, catalog_url: str, make_file: MakeFile) -> None:
    with ArtifactStore.open(store_dir, catalog_url=catalog_url) as store:
        store.log(dataset(make_file, "1\n", tags=["gold"]))
        store.log(dataset(make_file, "2\n"))
        store.log(TraceletArtifact("models/clf", "model").add_object({"w": 1}, "weights"))
    runner = CliRunner()
    base = ["--store", str(store_dir), "--catalog", catalog_url]
    listed = runner.invoke(app, [*base, "ls", "--tag", "gold", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [row["ref"] for row in json.loads(listed.stdout)] == ["data/train:v1"]
    table = runner.invoke(app, [*base, "ls", "--tag", "gold"])
    assert table.exit_code == 0 and "data/train:v1" in table.stdout and "models/clf" not in table.stdout
    assert runner.invoke(app, [*base, "ls", "--tag", "silver"]).stdout.strip() == "no artifacts"
    bad = runner.invoke(app, [*base, "ls", "--tag", " x"])
    assert bad.exit_code == 1 and "invalid tag" in bad.stderr and "Traceback" not in bad.output
