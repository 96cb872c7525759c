"""The store's contract: versions, dedup, aliases, refs, retrieval, drafts, gc and reindex.

The contract tests (``contract_store``) run on every storage kind and catalog of the matrix in
``conftest.py``: local disk, S3 (moto's server) and ``memory://``, with a SQLite or PostgreSQL
catalog; ``blob_location`` runs a test on each storage kind with SQLite catalogs it opens itself.
Tests of the local store only (its catalog file, its process cache) use ``store`` or ``store_dir``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import MakeFile, StoreLocation

from tracelet_core import (
    ArtifactNotFoundError,
    ArtifactStore,
    ArtifactType,
    InvalidArtifactError,
    RunInfo,
    TraceletArtifact,
)


def file_artifact(name: str, path: Path, artifact_type: str = "dataset") -> TraceletArtifact:
    return TraceletArtifact(name, artifact_type).add_file(path)


def test_versions_are_numbered_from_v1_and_immutable(contract_store: ArtifactStore, make_file: MakeFile) -> None:
    data = make_file("data.csv", "a,b\n1,2\n")
    v1 = contract_store.log(file_artifact("data/train", data))
    data.write_text("a,b\n1,2\n3,4\n")
    v2 = contract_store.log(file_artifact("data/train", data))
    assert (v1.ref, v2.ref) == ("data/train:v1", "data/train:v2")
    assert v1.version == "v1" and v2.version == "v2"
    assert v1.digest != v2.digest
    assert [v.ref for v in contract_store.versions("data/train")] == ["data/train:v1", "data/train:v2"]
    assert contract_store.get("data/train:v1").path("data.csv").read_text() == "a,b\n1,2\n"
    assert contract_store.get("data/train").ref == "data/train:v2"
    assert contract_store.get("data/train", version="v1").digest == v1.digest


def test_identical_content_returns_the_latest_version(contract_store: ArtifactStore, make_file: MakeFile) -> None:
    data = make_file("data.bin", b"x" * 100)
    v1 = contract_store.log(file_artifact("ds", data))
    again = contract_store.log(file_artifact("ds", data), aliases=["stable"])
    assert again.ref == v1.ref
    assert again.aliases == ["stable"]
    assert len(contract_store.versions("ds")) == 1


def test_reverting_to_older_content_makes_a_new_version(contract_store: ArtifactStore, make_file: MakeFile) -> None:
    data = make_file("data.bin", b"one")
    contract_store.log(file_artifact("ds", data))
    data.write_bytes(b"two")
    contract_store.log(file_artifact("ds", data))
    data.write_bytes(b"one")
    v3 = contract_store.log(file_artifact("ds", data))
    assert v3.version == "v3"
    assert v3.digest == contract_store.get("ds:v1").digest


def test_identical_files_are_stored_once_across_names(contract_store: ArtifactStore, make_file: MakeFile,
                                                      contract_location: StoreLocation) -> None:
    payload = b"shared" * 10_000
    contract_store.log(file_artifact("a", make_file("one/x.bin", payload)))
    contract_store.log(file_artifact("b", make_file("two/y.bin", payload)))
    blobs = contract_location.files("blobs")
    assert len(blobs) == 1
    assert contract_location.read(blobs[0]) == payload


def test_aliases_are_unique_per_name_and_movable(contract_store: ArtifactStore, make_file: MakeFile) -> None:
    data = make_file("m.bin", b"1")
    contract_store.log(file_artifact("model", data, "model"), aliases=["production"])
    data.write_bytes(b"2")
    contract_store.log(file_artifact("model", data, "model"))
    moved = contract_store.set_alias("model:v2", "production")
    assert moved.ref == "model:v2" and "production" in moved.aliases
    assert contract_store.get("model:production").ref == "model:v2"
    assert contract_store.get("model:v1").aliases == []
    contract_store.set_alias("model:v1", "v1.2.0")
    assert contract_store.get("model:v1.2.0").ref == "model:v1"
    contract_store.remove_alias("model", "production")
    with pytest.raises(ArtifactNotFoundError):
        contract_store.get("model:production")
    with pytest.raises(ArtifactNotFoundError):
        contract_store.remove_alias("model", "production")


def test_latest_is_not_settable_and_always_newest(contract_store: ArtifactStore, make_file: MakeFile) -> None:
    data = make_file("m.bin", b"1")
    contract_store.log(file_artifact("m", data))
    with pytest.raises(InvalidArtifactError):
        contract_store.set_alias("m:v1", "latest")
    data.write_bytes(b"2")
    contract_store.log(file_artifact("m", data))
    assert contract_store.get("m:latest").version == "v2"


def test_list_returns_latest_of_each_name_with_filters(contract_store: ArtifactStore, make_file: MakeFile) -> None:
    f = make_file("f.bin", b"1")
    contract_store.log(file_artifact("team/a", f, "dataset"))
    f.write_bytes(b"2")
    contract_store.log(file_artifact("team/a", f, "dataset"))
    contract_store.log(file_artifact("team/b", f, "model"))
    contract_store.log(file_artifact("other", f, "model"))
    assert [a.ref for a in contract_store.list()] == ["other:v1", "team/a:v2", "team/b:v1"]
    assert [a.ref for a in contract_store.list(type=ArtifactType.MODEL)] == ["other:v1", "team/b:v1"]
    assert [a.ref for a in contract_store.list(name="team")] == ["team/a:v2", "team/b:v1"]
    assert [a.ref for a in contract_store.list(type="dataset")] == ["team/a:v2"]


def test_list_under_a_name_is_an_exact_case_sensitive_prefix(contract_store: ArtifactStore,
                                                             make_file: MakeFile) -> None:
    f = make_file("f.bin", b"1")
    for name in ("team_a", "team_a/model", "teamXa/model", "TEAM_A/data", "team_ab/x", "team_a.b/y"):
        contract_store.log(file_artifact(name, f))
    assert [a.name for a in contract_store.list("team_a")] == ["team_a", "team_a/model"]
    assert [a.name for a in contract_store.list("TEAM_A")] == ["TEAM_A/data"]
    assert [a.name for a in contract_store.list("team_a.b")] == ["team_a.b/y"]


def test_missing_refs_raise_not_found(contract_store: ArtifactStore, make_file: MakeFile) -> None:
    contract_store.log(file_artifact("ds", make_file("a.bin")))
    for ref in ("nope", "ds:v9", "ds:staging", "ds:v2147483648", "ds:v99999999999999999999"):
        with pytest.raises(ArtifactNotFoundError) as info:
            contract_store.get(ref)
        assert isinstance(info.value, KeyError)
    with pytest.raises(ArtifactNotFoundError):
        contract_store.versions("nope")


def test_logged_artifact_exposes_entries_and_metadata(contract_store: ArtifactStore, make_file: MakeFile,
                                                      tmp_path: Path) -> None:
    art = TraceletArtifact("report", ArtifactType.REPORT, description="weekly",
                           metadata={"owner": "ml-platform"})
    art.add_file(make_file("r.html", "<h1>hi</h1>"), "html/index.html", description="page")
    art.add_object({"acc": 0.9}, "metrics")
    art.add_reference("file://" + str(make_file("big.bin", b"z" * 1234)), description="raw")
    logged = contract_store.log(art, producer=RunInfo("tracelet", "run-1", name="nightly"))
    assert logged.type is ArtifactType.REPORT
    assert logged.description == "weekly"
    assert logged.metadata == {"owner": "ml-platform"}
    assert [(f.path, f.size, f.description) for f in logged.files] == [("html/index.html", 11, "page")]
    assert [(o.name, o.serializer) for o in logged.objects] == [("metrics", "json")]
    assert logged.references[0].size == 1234 and logged.references[0].name == "big.bin"
    assert logged.size_bytes == 11 + logged.objects[0].size + 1234
    assert logged.producer == RunInfo("tracelet", "run-1", name="nightly")
    assert logged.created_at.tzinfo is not None
    as_dict = logged.to_dict()
    assert as_dict["ref"] == "report:v1" and as_dict["producer"]["run_id"] == "run-1"
    dest = logged.download(tmp_path / "out")
    assert (dest / "html/index.html").read_text() == "<h1>hi</h1>"
    assert json.loads((dest / "metrics.json").read_text()) == {"acc": 0.9}
    assert not (dest / "big.bin").exists()  # references are never copied
    assert logged.load("metrics") == {"acc": 0.9}


def test_download_defaults_to_artifacts_folder_and_skips_intact_files(
        contract_store: ArtifactStore, make_file: MakeFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    logged = contract_store.log(file_artifact("data/x", make_file("a.txt", "hello")))
    dest = logged.download()
    assert dest == tmp_path / "artifacts" / "data/x" / "v1"
    assert (dest / "a.txt").read_text() == "hello"
    (dest / "a.txt").write_text("tampered")
    logged.download()
    assert (dest / "a.txt").read_text() == "hello"


def test_new_draft_builds_the_next_version_from_an_old_one(contract_store: ArtifactStore, make_file: MakeFile) -> None:
    v1 = contract_store.log(TraceletArtifact("ds", "dataset").add_file(make_file("a.txt", "a"))
                       .add_object([1, 2], "rows"))
    draft = v1.new_draft()
    draft.add_file(make_file("b.txt", "b"))
    v2 = contract_store.log(draft)
    assert v2.version == "v2"
    assert sorted(f.path for f in v2.files) == ["a.txt", "b.txt"]
    assert v2.load("rows") == [1, 2]
    assert contract_store.log(v2.new_draft()).ref == "ds:v2"


def test_upsert_from_several_writers_then_finish(contract_store: ArtifactStore, make_file: MakeFile) -> None:
    for shard in range(3):
        part = TraceletArtifact("shards", "dataset").add_file(make_file(f"s{shard}.bin", f"{shard}"),
                                                              f"part-{shard}.bin")
        contract_store.upsert(part, group="job-7")
    assert [d.name for d in contract_store.drafts()] == ["shards"]
    # the same entry again is idempotent; different bytes at the same path are refused
    contract_store.upsert(TraceletArtifact("shards", "dataset").add_file(make_file("s0.bin", "0"), "part-0.bin"),
                     group="job-7")
    with pytest.raises(InvalidArtifactError):
        contract_store.upsert(TraceletArtifact("shards", "dataset")
                         .add_file(make_file("other.bin", "X"), "part-0.bin"), group="job-7")
    with pytest.raises(ArtifactNotFoundError):
        contract_store.get("shards")
    sealed = contract_store.finish("shards", group="job-7", aliases=["complete"])
    assert sealed.ref == "shards:v1" and sealed.aliases == ["complete"]
    assert sorted(f.path for f in sealed.files) == ["part-0.bin", "part-1.bin", "part-2.bin"]
    assert contract_store.drafts() == []
    with pytest.raises(ArtifactNotFoundError):
        contract_store.finish("shards", group="job-7")


def test_idempotency_key_returns_the_same_version(contract_store: ArtifactStore, make_file: MakeFile) -> None:
    f = make_file("a.bin", b"1")
    first = contract_store.log(file_artifact("ds", f), idempotency_key="run-1/step-a")
    f.write_bytes(b"2")
    retried = contract_store.log(file_artifact("ds", f), idempotency_key="run-1/step-a")
    assert retried.ref == first.ref == "ds:v1"


def test_inputs_are_pinned_and_lineage_walks_both_ways(contract_store: ArtifactStore,
                                                       make_file: MakeFile) -> None:
    raw = contract_store.log(file_artifact("raw", make_file("r.csv", "1")))
    model = contract_store.log(TraceletArtifact("model", "model").add_object({"w": 1}, "weights"),
                               producer=RunInfo("dagster", "run-9", step="train"), inputs=[raw])
    assert contract_store.get("model").inputs == ["raw:v1"]
    assert set(contract_store.lineage(model).artifact_refs) == {"raw:v1", "model:v1"}
    assert set(contract_store.lineage(raw, direction="downstream").artifact_refs) == {"raw:v1", "model:v1"}


def test_gc_removes_only_unreferenced_blobs_after_grace(contract_store: ArtifactStore,
                                                        make_file: MakeFile) -> None:
    kept = contract_store.log(file_artifact("ds", make_file("a.bin", b"keep")))
    orphan_source = make_file("orphan.bin", b"orphan")
    from tracelet_core._hashing import hash_file

    digest, size = hash_file(orphan_source)
    contract_store.blobs.put_file(orphan_source, digest, size)  # what a crashed log leaves behind
    assert contract_store.gc(dry_run=True, grace_seconds=3600).blobs == []  # too young
    report = contract_store.gc(dry_run=True, grace_seconds=0)
    assert report.blobs == [digest] and contract_store.blobs.has_blob(digest)
    assert report.bytes_freed == size
    contract_store.gc(dry_run=False, grace_seconds=0)
    assert not contract_store.blobs.has_blob(digest)
    assert contract_store.verify() == [kept.ref]
    assert kept.path("a.bin").read_bytes() == b"keep"


def test_reindex_rebuilds_a_lost_catalog(blob_location: StoreLocation, make_file: MakeFile,
                                        tmp_path: Path) -> None:
    catalog = f"sqlite:///{tmp_path / 'lost.db'}"
    with blob_location.open(catalog_url=catalog) as store:
        raw = store.log(file_artifact("raw", make_file("r.csv", "1")), aliases=["golden"])
        model = store.log(TraceletArtifact("model", "model").add_object({"w": 1}, "weights"),
                          producer=RunInfo("dagster", "run-9", step="train"), inputs=[raw])
        store.set_alias(model.ref, "production")
    (tmp_path / "lost.db").unlink()
    with blob_location.open(catalog_url=f"sqlite:///{tmp_path / 'new.db'}") as fresh:
        assert fresh.reindex() == ["raw:v1", "model:v1"]
        rebuilt = fresh.get("model:production")
        assert rebuilt.inputs == ["raw:v1"] and rebuilt.producer is not None
        assert rebuilt.producer.step == "train"
        assert fresh.get("raw:golden").digest == raw.digest
        assert fresh.verify() == ["raw:v1", "model:v1"]
        assert fresh.reindex() == []


def test_store_open_uses_settings_and_requires_catalog_for_remote(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from tracelet_core import ConfigurationError

    monkeypatch.setenv("TRACELET_STORE_URI", str(tmp_path / "env-store"))
    with ArtifactStore.open() as store:
        assert Path(store.blobs.root) == (tmp_path / "env-store").resolve()
    with pytest.raises(ConfigurationError, match="TRACELET_CATALOG_URL"):
        ArtifactStore.open("memory://bucket/prefix")


def test_remote_fsspec_store_with_sql_catalog(memory_uri: str, make_file: MakeFile, tmp_path: Path) -> None:
    """Any fsspec filesystem works; the in-process memory filesystem stands in for a bucket."""
    with ArtifactStore.open(memory_uri, catalog_url=f"sqlite:///{tmp_path / 'c.db'}") as store:
        logged = store.log(file_artifact("ds", make_file("a.txt", "remote bytes")))
        assert store.blobs.blob_uri(logged.files[0].digest or "").startswith("memory://")
        assert store.get("ds").download(tmp_path / "dl").joinpath("a.txt").read_text() == "remote bytes"
        assert store.verify() == ["ds:v1"]


def test_an_empty_store_uri_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracelet_core import ConfigurationError

    with pytest.raises(ConfigurationError):
        ArtifactStore.open("")
    monkeypatch.setenv("TRACELET_STORE_URI", "")
    with pytest.raises(ConfigurationError):
        ArtifactStore.open()


def test_verify_notices_catalog_entries_that_disagree_with_the_manifest(
        store: ArtifactStore, make_file: MakeFile) -> None:
    from sqlalchemy import update

    from tracelet_core import IntegrityError
    from tracelet_core._catalog import entries

    store.log(file_artifact("ds", make_file("a.bin", b"1")))
    other = store.log(file_artifact("other", make_file("b.bin", b"2")))
    with store.catalog.engine.begin() as conn:
        conn.execute(update(entries).where(entries.c.path == "a.bin").values(
            data={"kind": "file", "path": "a.bin", "size": 1, "digest": other.files[0].digest}))
    with pytest.raises(IntegrityError) as info:
        store.verify()
    assert any("ds:v1: catalog entries differ from the manifest" in p for p in info.value.problems)
    assert [a.ref for a in store.list()] == ["ds:v1", "other:v1"]  # listing still works


def test_partitions_keep_their_own_latest_and_dedup(contract_store: ArtifactStore, make_file: MakeFile,
                                                    tmp_path: Path) -> None:
    same = make_file("day.csv", "a,b\n1,2\n")
    day1 = contract_store.log(file_artifact("events", same), partition="2024-01-01")
    day2 = contract_store.log(file_artifact("events", same), partition="2024-01-02")
    assert (day1.version, day2.version) == ("v1", "v2")  # equal content, two partitions: two versions
    assert contract_store.log(file_artifact("events", same), partition="2024-01-01").ref == "events:v1"
    multi = contract_store.log(file_artifact("events", make_file("m.csv", "x")), partition="us|2024-01-01/b")
    assert multi.partition == "us|2024-01-01/b"  # multi-partition keys are kept verbatim
    assert contract_store.get("events", partition="2024-01-01").ref == "events:v1"
    assert contract_store.get("events").ref == multi.ref
    assert [v.version for v in contract_store.versions("events", partition="2024-01-02")] == ["v2"]
    with pytest.raises(ArtifactNotFoundError, match="partition '2024-12-31'"):
        contract_store.get("events", partition="2024-12-31")
    assert contract_store.get("events:v2").to_dict()["partition"] == "2024-01-02"


def test_reindex_restores_partitions(blob_location: StoreLocation, make_file: MakeFile, tmp_path: Path) -> None:
    with blob_location.open(catalog_url=f"sqlite:///{tmp_path / 'a.db'}") as store:
        store.log(file_artifact("p", make_file("a.csv", "1")), partition="k1")
    with blob_location.open(catalog_url=f"sqlite:///{tmp_path / 'b.db'}") as fresh:
        fresh.reindex()
        assert fresh.get("p", partition="k1").partition == "k1"


def test_versions_pickle_without_passwords_and_reopen_their_store(store_dir: Path, make_file: MakeFile,
                                                                   postgres_url: str) -> None:
    import pickle
    import subprocess
    import sys

    from sqlalchemy.engine import make_url

    with ArtifactStore.open(store_dir) as local:
        logged = local.log(file_artifact("ds", make_file("a.txt", "pickled")))
        script = ("import pickle, sys; v = pickle.loads(sys.stdin.buffer.read()); "
                  "print(v.ref, v.path('a.txt').read_text())")
        out = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(logged),
                             capture_output=True, check=True)
        assert out.stdout.decode().split() == ["ds:v1", "pickled"]
    with_password = make_url(postgres_url).set(password="hunter2").render_as_string(hide_password=False)
    with ArtifactStore.open(store_dir, catalog_url=with_password) as remote:
        assert remote.reopen_args() == (remote.uri, None)  # never hands the password on
    with ArtifactStore.open(store_dir, catalog_url=postgres_url) as plain:
        assert plain.reopen_args() == (plain.uri, postgres_url)


def test_sync_isolates_a_backend_that_cannot_start(store: ArtifactStore, tmp_path: Path) -> None:
    """The first backend's ``start`` raises a raw SDK error: its deliveries fail with a
    ``BackendError`` message and stay in the outbox, every other backend is still delivered."""
    from backend_support import FolderBackend

    from tracelet_core import Experiment
    from tracelet_core._backends import register_backend, unregister_backend

    class CannotStart(FolderBackend):
        name = "broken"

        def start(self, experiment_name: str, run_id: str) -> None:
            raise RuntimeError("SDK exploded while starting")

    register_backend("broken", CannotStart)
    register_backend("folder", FolderBackend)
    try:
        down = [CannotStart(str(tmp_path / "b"), fail=True), FolderBackend(str(tmp_path / "f"), fail=True)]
        exp = Experiment("e", backend=down, store=store)
        for n in range(2):
            exp.log_artifact(exp.create_artifact("cfg", "config").add_object({"v": n}, "c"))
        results = store.sync()
    finally:
        unregister_backend("broken")
        unregister_backend("folder")
    assert sorted((r.backend, r.ok) for r in results) == [("broken", False)] * 2 + [("folder", True)] * 2
    assert all((r.error or "").startswith("BackendError: ") and "SDK exploded" in (r.error or "")
               for r in results if not r.ok)
    assert (tmp_path / "f" / "cfg" / "v2").is_dir()
    statuses = sorted((d.backend, d.status, d.attempts) for d in store.deliveries())
    assert statuses == [("broken", "failed", 2)] * 2 + [("folder", "delivered", 2)] * 2


def test_shared_stores_evicted_from_the_cache_are_closed_and_still_usable(
        tmp_path: Path, make_file: MakeFile) -> None:
    from tracelet_core._store import MAX_SHARED_STORES

    first = ArtifactStore.shared(str(tmp_path / "s0"))
    first.log(file_artifact("kept", make_file("k.txt", "kept")))
    assert first.catalog.engine.pool.checkedin() >= 1
    for n in range(1, MAX_SHARED_STORES + 1):
        ArtifactStore.shared(str(tmp_path / f"s{n}"))
    assert first.catalog.engine.pool.checkedin() == 0  # its connections were closed on eviction
    assert first.get("kept").path("k.txt").read_text() == "kept"  # and it reconnects on use
    assert ArtifactStore.shared(str(tmp_path / "s0")) is not first
