"""Reading a store whose catalog, manifests or blobs were edited by hand: every read refuses
with ``IntegrityError``, writes nothing outside its destination and reads nothing without end.

Each test edits the store the way an attacker or a broken disk would (SQL on the catalog,
files under the store root), on SQLite and PostgreSQL catalogs alike.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import text
from support import MakeFile
from typer.testing import CliRunner

from tracelet_core import ArtifactStore, IntegrityError, LoggedArtifact, TraceletArtifact
from tracelet_core._hashing import hash_bytes
from tracelet_core.cli import app


def run_sql(store: ArtifactStore, statement: str, **params: object) -> None:
    with store.catalog.engine.begin() as conn:
        conn.execute(text(statement), params)


def cli_get(store: ArtifactStore, ref: str, out: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--store", str(store.blobs.root), "get", ref, "-o", str(out)],
                                env={"TRACELET_CATALOG_URL": store.catalog._url})
    return result.exit_code, result.stderr


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


# -- 8. a name edited to climb out --------------------------------------------------------------
@pytest.mark.parametrize("evil", ["../../..", "../escape", "a/../../b", "/abs/path"])
def test_a_catalog_name_edited_to_climb_out_is_refused_on_every_read(
        evil: str, any_store: ArtifactStore, make_file: MakeFile, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    any_store.log(TraceletArtifact("victim").add_file(make_file("a.txt", "secret")))
    run_sql(any_store, "UPDATE artifacts SET name = :evil WHERE name = 'victim'", evil=evil)
    outside = files_under(tmp_path.parent)
    work = tmp_path / "deep" / "er" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)

    [damaged] = any_store.list()
    assert damaged.name == evil  # listing still works; only reads of this version refuse
    with pytest.raises(IntegrityError, match="invalid artifact name"):
        damaged.path("a.txt")
    with pytest.raises(IntegrityError, match="invalid artifact name"):
        damaged.download()
    with pytest.raises(IntegrityError) as verified:
        any_store.verify()
    assert "invalid artifact name" in str(verified.value)
    assert files_under(tmp_path.parent) == outside  # nothing was written anywhere


# -- 9. entries pointed at another artifact's blobs ---------------------------------------------
def point_entries_elsewhere(store: ArtifactStore, victim: LoggedArtifact, donor: LoggedArtifact) -> None:
    """Make ``victim``'s entry name ``donor``'s blob, in the catalog and the manifest alike."""
    stolen = donor.files[0]
    entry = {**victim._record.entries[0], "digest": stolen.digest, "size": stolen.size}
    run_sql(store, "UPDATE entries SET digest = :d, size = :s, data = :data WHERE version_id = :v",
            d=stolen.digest, s=stolen.size, data=json.dumps(entry), v=victim._record.id)
    manifest_path = Path(store.blobs.manifest_path(victim.name, victim.version_number))
    manifest = json.loads(manifest_path.read_bytes())
    manifest["entries"] = [entry]
    data = json.dumps(manifest, sort_keys=True, indent=1).encode()
    os.chmod(manifest_path, 0o644)
    manifest_path.write_bytes(data)
    run_sql(store, "UPDATE versions SET manifest_digest = :m WHERE id = :v", m=hash_bytes(data), v=victim._record.id)


def test_entries_swapped_for_another_artifacts_blobs_are_never_served(
        any_store: ArtifactStore, make_file: MakeFile, tmp_path: Path) -> None:
    victim = any_store.log(TraceletArtifact("victim").add_object({"model": "mine"}, "config"))
    donor = any_store.log(TraceletArtifact("donor").add_file(make_file("d.json", '{"model": "theirs"}')))
    point_entries_elsewhere(any_store, victim, donor)
    reread = any_store.get("victim")
    for read in (lambda: reread.load(), lambda: reread.download(tmp_path / "dl"),
                 lambda: reread.path("config.json")):
        with pytest.raises(IntegrityError, match="do not hash to the version digest"):
            read()
    assert files_under(tmp_path / "dl") == set()
    code, err = cli_get(any_store, "victim", tmp_path / "cli")
    assert code == 1 and "digest" in err and files_under(tmp_path / "cli") == set()
    with pytest.raises(IntegrityError, match="do not hash to the version digest"):
        any_store.verify("victim")
    assert (any_store.get("donor").download(tmp_path / "donor") / "d.json").read_text() == '{"model": "theirs"}'


# -- 10. a blob that reads without end ----------------------------------------------------------
def test_a_blob_replaced_by_a_link_to_dev_zero_is_refused_at_once(store: ArtifactStore, make_file: MakeFile,
                                                                  tmp_path: Path) -> None:
    logged = store.log(TraceletArtifact("zero").add_file(make_file("a.bin", b"x" * 100))
                       .add_object({"k": 1}, "config"))
    for entry in [*logged.files, *logged.objects]:
        blob = Path(store.blobs.blob_path(entry.digest or ""))
        blob.unlink()
        blob.symlink_to("/dev/zero")
    fresh = store.get("zero")
    with pytest.raises(IntegrityError, match="not a regular file"):
        fresh.download(tmp_path / "dl")
    with pytest.raises(IntegrityError, match="not a regular file"):
        fresh.load("config")
    with pytest.raises(IntegrityError) as verified:
        store.verify()
    assert len(verified.value.problems) == 2
    code, err = cli_get(store, "zero", tmp_path / "cli")
    assert code == 1 and "not a regular file" in err
    assert all(p.stat().st_size == 0 for p in files_under(tmp_path / "dl") | files_under(tmp_path / "cli"))


def test_a_blob_longer_than_its_entry_is_read_no_further_than_its_size(store: ArtifactStore,
                                                                        make_file: MakeFile,
                                                                        tmp_path: Path) -> None:
    logged = store.log(TraceletArtifact("long").add_file(make_file("a.bin", b"x" * 100)))
    blob = Path(store.blobs.blob_path(logged.files[0].digest or ""))
    os.chmod(blob, 0o644)
    with blob.open("ab") as grown:
        grown.truncate(64 * 1024 * 1024)  # sparse: a big file that costs no disk
    with pytest.raises(IntegrityError, match="larger than the 100 bytes"):
        store.get("long").download(tmp_path / "dl")
    with pytest.raises(IntegrityError, match="larger than the 100 bytes"):
        store.verify()
    assert files_under(tmp_path / "dl") == set()
    assert not [p for p in (tmp_path / "dl").rglob("*.part")]


def test_a_fifo_in_place_of_a_blob_is_refused(store: ArtifactStore, make_file: MakeFile, tmp_path: Path) -> None:
    logged = store.log(TraceletArtifact("fifo").add_file(make_file("a.bin", b"abc")))
    blob = Path(store.blobs.blob_path(logged.files[0].digest or ""))
    blob.unlink()
    os.mkfifo(blob)
    with pytest.raises(IntegrityError, match="not a regular file"):
        store.get("fifo").download(tmp_path / "dl")


# -- 20. nothing swallowed ----------------------------------------------------------------------
def test_a_corrupt_alias_journal_is_reported_by_reindex(store: ArtifactStore, store_dir: Path,
                                                       make_file: MakeFile, tmp_path: Path) -> None:
    logged = store.log(TraceletArtifact("j").add_file(make_file("a.txt", "a")), aliases=["prod"])
    journal = Path(store.blobs.manifest_dir("j")) / "@aliases.json"
    journal.write_text("{not json")
    with ArtifactStore.open(store_dir, catalog_url=f"sqlite:///{tmp_path / 'rebuilt.db'}") as rebuilt:
        refs = rebuilt.reindex()
        assert refs == [logged.ref]
        assert [s.split(":")[0] for s in refs.skipped] == ["alias journal of j"]
        assert rebuilt.get("j").aliases == []


def test_a_reference_that_vanished_is_reported_before_download(store: ArtifactStore, make_file: MakeFile,
                                                               tmp_path: Path) -> None:
    remote = make_file("remote/data.csv", "a,b\n1,2\n")
    logged = store.log(TraceletArtifact("ref", "dataset").add_reference(remote.as_uri(), name="data.csv"))
    remote.unlink()
    with pytest.raises(IntegrityError, match="no longer exists"):
        logged.download(tmp_path / "dl", references=True)


def test_storage_error_is_public() -> None:
    import tracelet_core
    import tracelet_core._errors as errors

    assert "StorageError" in errors.__all__ and "StorageError" in tracelet_core.__all__
    assert set(errors.__all__) <= set(tracelet_core.__all__)
