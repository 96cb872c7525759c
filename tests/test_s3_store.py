"""What only a store on S3 does (moto's server on 127.0.0.1, reached through s3fs), with the
catalog on SQLite and on PostgreSQL: multipart uploads, the read cache, retries of S3 errors,
credentials in the URI. The store's contract on S3 runs in ``test_store.py`` (``contract_store``);
the moto fixtures are in ``conftest.py``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import MakeFile

from tracelet_core import ArtifactStore, IntegrityError, StorageError, TraceletArtifact, TraceletSettings


@pytest.fixture
def s3_store(s3_env: str, catalog_url: str, tmp_path: Path) -> Iterator[ArtifactStore]:
    settings = TraceletSettings(cache_dir=str(tmp_path / "cache"))
    with ArtifactStore.open(s3_env, catalog_url=catalog_url, settings=settings) as store:
        yield store


def s3_objects(store: ArtifactStore, prefix: str) -> list[str]:
    base = f"{store.blobs.root}/{prefix}"
    return sorted(store.blobs.fs.find(base)) if store.blobs.fs.exists(base) else []


def test_log_get_download_verify_on_s3(s3_store: ArtifactStore, make_file: MakeFile, tmp_path: Path) -> None:
    payload = b"weights" * 300_000  # ~2 MiB: several chunks
    art = (TraceletArtifact("s3/model", "model").add_file(make_file("w.bin", payload), "weights/w.bin")
           .add_object({"lr": 0.1}, "config"))
    logged = s3_store.log(art, aliases=["candidate"])
    assert logged.ref == "s3/model:v1"
    again = s3_store.get("s3/model:candidate")
    dest = again.download(tmp_path / "out")
    assert (dest / "weights/w.bin").read_bytes() == payload
    assert again.load("config") == {"lr": 0.1}
    assert s3_store.verify() == ["s3/model:v1"]
    assert len(s3_objects(s3_store, "blobs")) == 2
    manifest = json.loads(s3_store.blobs.fs.cat_file(s3_store.blobs.manifest_path("s3/model", 1)))
    assert manifest["version"] == 1 and manifest["digest"] == logged.digest
    assert s3_store.blobs.blob_uri(logged.files[0].digest or "").startswith("s3://")


def test_a_second_writer_of_a_stored_blob_is_a_no_op(s3_store: ArtifactStore, make_file: MakeFile) -> None:
    """(One object for identical content under two names: ``test_store.py``, on every store.)"""
    from tracelet_core._hashing import hash_file

    source = make_file("a.bin", b"same bytes")
    s3_store.log(TraceletArtifact("one", "dataset").add_file(source))
    digest, size = hash_file(source)
    assert s3_store.blobs.put_file(source, digest, size) is False


def test_remote_reads_are_cached_and_the_cache_is_bounded(s3_env: str, make_file: MakeFile,
                                                          tmp_path: Path) -> None:
    settings = TraceletSettings(cache_dir=str(tmp_path / "cache"), cache_max_bytes=150_000)
    with ArtifactStore.open(s3_env, catalog_url=f"sqlite:///{tmp_path / 'c.db'}", settings=settings) as store:
        first = store.log(TraceletArtifact("a", "dataset").add_file(make_file("a.bin", b"a" * 100_000)))
        second = store.log(TraceletArtifact("b", "dataset").add_file(make_file("b.bin", b"b" * 100_000)))
        first.download(tmp_path / "a1")
        # the blob is gone from S3, yet the next read is served (and verified) from the cache
        store.blobs.fs.rm(store.blobs.blob_path(first.files[0].digest or ""))
        assert (first.download(tmp_path / "a2") / "a.bin").read_bytes() == b"a" * 100_000
        second.download(tmp_path / "b1")  # the cache is full: the least recently used goes
        cached = {p.name for _, _, p in store.blobs.cache.entries()} if store.blobs.cache else set()
        assert cached == {(second.files[0].digest or "").split(":")[1]}
        with pytest.raises(IntegrityError):
            first.download(tmp_path / "a3")


def test_transient_s3_errors_are_retried(s3_store: ArtifactStore, make_file: MakeFile,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fs = s3_store.blobs.fs
    real_open = fs.open
    failures = {"left": 2}

    def flaky_open(path: str, mode: str = "rb", **kwargs: Any) -> Any:  # fault injection
        if ("w" in mode or "x" in mode) and failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("503 Slow Down")
        return real_open(path, mode, **kwargs)

    monkeypatch.setattr(fs, "open", flaky_open)
    logged = s3_store.log(TraceletArtifact("flaky", "dataset").add_file(make_file("f.bin", b"retry me")))
    assert failures["left"] == 0
    assert logged.path("f.bin").read_bytes() == b"retry me"


def test_persistent_s3_errors_fail_the_log_with_nothing_committed(
        s3_store: ArtifactStore, make_file: MakeFile, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_open(path: str, mode: str = "rb", **kwargs: Any) -> Any:  # fault injection
        raise TimeoutError("read timed out")

    monkeypatch.setattr(s3_store.blobs.fs, "open", broken_open)
    with pytest.raises(StorageError, match="failed after 4 attempts"):
        s3_store.log(TraceletArtifact("down", "dataset").add_file(make_file("d.bin", b"never stored")))
    monkeypatch.undo()
    assert s3_store.list() == []
    assert s3_objects(s3_store, "blobs") == [] and s3_objects(s3_store, "manifests") == []


def test_a_file_changing_during_upload_leaves_no_blob(s3_store: ArtifactStore, make_file: MakeFile,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from tracelet_core import InvalidArtifactError

    source = make_file("moving.bin", b"x" * 3_000_000)
    fs = s3_store.blobs.fs
    real_open = fs.open

    def open_then_change(path: str, mode: str = "rb", **kwargs: Any) -> Any:  # fault injection:
        if "w" in mode or "x" in mode:  # the file changes after it was hashed, as its upload starts
            source.write_bytes(b"y" * 3_000_000)
        return real_open(path, mode, **kwargs)

    monkeypatch.setattr(fs, "open", open_then_change)
    with pytest.raises(InvalidArtifactError, match="changed while it was being logged"):
        s3_store.log(TraceletArtifact("moving", "dataset").add_file(source))
    monkeypatch.undo()
    assert s3_objects(s3_store, "blobs") == []
    assert s3_store.list() == []


def test_credentials_in_the_store_uri_never_reach_the_catalog_or_manifests(
        s3_env: str, make_file: MakeFile, tmp_path: Path) -> None:
    bucket_path = s3_env.removeprefix("s3://")
    uri = f"s3://testing:testing@{bucket_path}"
    catalog = tmp_path / "c.db"
    settings = TraceletSettings(cache_dir=str(tmp_path / "cache"))
    with ArtifactStore.open(uri, catalog_url=f"sqlite:///{catalog}", settings=settings) as store:
        logged = store.log(TraceletArtifact("secret", "dataset").add_file(make_file("s.bin", b"s"))
                           .add_reference("s3://AKIAXXXX:topsecret@other/x.bin", name="ref"))
        manifest = store.blobs.fs.cat_file(store.blobs.manifest_path("secret", 1))
        assert b"topsecret" not in manifest and b"testing:testing" not in manifest
        assert "testing:testing" not in store.blobs.blob_uri(logged.files[0].digest or "")
        assert "testing:testing" not in repr(store)
    assert b"topsecret" not in catalog.read_bytes()
