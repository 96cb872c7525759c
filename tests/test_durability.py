"""``TRACELET_DURABILITY``: in ``full`` (the default) a version's blobs, manifest and the
folders they were linked into are flushed before the catalog commits it, in one batch, and
SQLite commits with ``synchronous=FULL``; in ``none`` nothing is flushed. Either way a
version ``log`` returns is complete.

The flushes are observed through a recording wrapper around ``os.fsync`` (and the batch
``syncfs``): the only stand-in here, since a power cut cannot be staged in a test.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event
from support import MakeFile

import tracelet_core._blobs_local as blobs_local
from tracelet_core import ArtifactStore, StorageError, TraceletArtifact, TraceletSettings


class FlushRecorder:
    """Every path ``os.fsync`` was called on, and every batch ``syncfs``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: OSError | None = None) -> None:
        self.paths: list[str] = []
        self.batches: list[str] = []
        self.fail = fail
        real_fsync, real_syncfs = os.fsync, blobs_local.syncfs

        def fsync(fd: int) -> None:
            self.paths.append(os.readlink(f"/proc/self/fd/{fd}"))
            if self.fail is not None:
                raise self.fail
            real_fsync(fd)

        def syncfs(path: str) -> bool:
            self.batches.append(os.path.realpath(path))
            if self.fail is not None:
                raise self.fail
            return real_syncfs(path)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(blobs_local, "syncfs", syncfs)

    def clear(self) -> None:
        self.paths.clear()
        self.batches.clear()


@pytest.fixture(params=["full", "none"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def durable_store(store_dir: Path, mode: str) -> Iterator[ArtifactStore]:
    with ArtifactStore.open(store_dir, settings=TraceletSettings.load(durability=mode)) as opened:
        yield opened


def sqlite_synchronous(store: ArtifactStore) -> int:
    with store.catalog.engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())


def test_a_logged_version_is_complete_in_both_modes(durable_store: ArtifactStore, store_dir: Path,
                                                    make_file: MakeFile, mode: str) -> None:
    folder = make_file("set/a.txt", b"alpha").parent
    make_file("set/sub/b.txt", b"beta")
    logged = durable_store.log(TraceletArtifact("data/set", "dataset").add_dir(folder)
                               .add_object({"rows": 2}, "stats"), aliases=["best"])
    assert list((store_dir / "tmp").iterdir()) == []  # every temp file was renamed into place
    assert (store_dir / "manifests" / "data" / "set" / "@v1.json").is_file()
    assert (store_dir / "manifests" / "data" / "set" / "@aliases.json").is_file()
    for entry in [*logged.files, *logged.objects]:
        assert durable_store.blobs.has_blob(entry.digest)
    with ArtifactStore.open(store_dir) as reopened:  # what another process sees
        again = reopened.get("data/set:best")
        assert again.digest == logged.digest and reopened.verify(again.ref) == [again.ref]
        assert again.load("stats") == {"rows": 2}


def test_full_mode_flushes_blobs_manifest_and_folders_before_the_commit(
        store_dir: Path, make_file: MakeFile, monkeypatch: pytest.MonkeyPatch) -> None:
    store_dir = Path(os.path.realpath(store_dir.parent)) / store_dir.name  # as /proc names it
    source = make_file("weights.bin", b"weights")
    with ArtifactStore.open(store_dir) as store:  # the default is full
        assert store.settings.durability == "full" and sqlite_synchronous(store) == 2  # FULL
        recorder = FlushRecorder(monkeypatch)
        committed_after: list[int] = []
        # the catalog's engine reports its commit (the only one a log without tags makes)
        event.listen(store.catalog.engine, "commit", lambda conn: committed_after.append(len(recorder.paths)))
        logged = store.log(TraceletArtifact("model").add_file(source).add_object({"lr": 0.1}, "config"))
    blob_paths = {str(Path(store.blobs.blob_path(e.digest))) for e in [*logged.files, *logged.objects]}
    flushed = set(recorder.paths)
    # the manifest is made durable under its pending name, before the commit (renamed after it)
    [manifest] = [p for p in flushed if Path(p).parent == store_dir / "manifests" / "model"
                  and Path(p).name.startswith("@v1.") and p.endswith(".pending")]
    assert blob_paths <= flushed
    assert {str(Path(p).parent) for p in blob_paths} | {str(Path(manifest).parent)} <= flushed  # renames
    assert str(store_dir / "blobs") in flushed and str(store_dir / "manifests") in flushed  # new folders
    assert recorder.batches == []  # a small version fsyncs each file
    assert committed_after == [len(recorder.paths)]  # every flush happened before the commit returned


def test_full_mode_flushes_a_large_batch_once(store_dir: Path, make_file: MakeFile,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store_dir = Path(os.path.realpath(store_dir.parent)) / store_dir.name
    folder = make_file("many/f000.txt", b"0").parent
    for i in range(1, blobs_local.FSYNC_EACH_LIMIT + 4):
        make_file(f"many/f{i:03d}.txt", str(i))
    with ArtifactStore.open(store_dir) as store:
        recorder = FlushRecorder(monkeypatch)
        store.log(TraceletArtifact("many").add_dir(folder))
    assert recorder.batches == [str(store_dir)]  # the blobs: one syncfs for the whole batch
    assert [p for p in recorder.paths  # then the manifest, under its pending name
            if Path(p).parent == store_dir / "manifests" / "many" and p.endswith(".pending")]
    assert len(recorder.paths) <= 4  # not one fsync per blob


def test_full_mode_flushes_the_alias_journal(store: ArtifactStore, store_dir: Path, make_file: MakeFile,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    store_dir = Path(os.path.realpath(store_dir))
    store.log(TraceletArtifact("model").add_file(make_file("w.bin", b"w")))
    recorder = FlushRecorder(monkeypatch)
    store.set_alias("model:v1", "production")
    journal = store_dir / "manifests" / "model" / "@aliases.json"
    assert str(journal) in recorder.paths and str(journal.parent) in recorder.paths


def test_none_mode_flushes_nothing(store_dir: Path, make_file: MakeFile, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_file("many/f000.txt", b"0").parent
    for i in range(1, blobs_local.FSYNC_EACH_LIMIT + 4):
        make_file(f"many/f{i:03d}.txt", str(i))
    monkeypatch.setenv("TRACELET_DURABILITY", "none")
    with ArtifactStore.open(store_dir) as store:
        assert sqlite_synchronous(store) == 1  # NORMAL: WAL, atomic, not flushed per commit
        recorder = FlushRecorder(monkeypatch)
        store.log(TraceletArtifact("many").add_dir(folder).add_object({"a": 1}, "config"), aliases=["x"])
        store.log(TraceletArtifact("one").add_file(make_file("one.bin", b"1")))
        store.set_alias("one:v1", "y")
    assert recorder.paths == [] and recorder.batches == []


def test_a_failed_flush_commits_nothing(store: ArtifactStore, make_file: MakeFile,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = FlushRecorder(monkeypatch, fail=OSError(errno.EIO, "I/O error"))
    with pytest.raises(StorageError, match="flush"):
        store.log(TraceletArtifact("model").add_file(make_file("w.bin", b"w")))
    recorder.fail = None
    assert store.list() == []
    assert store.log(TraceletArtifact("model").add_file(make_file("w.bin", b"w"))).version == "v1"


def test_an_unknown_durability_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracelet_core import ConfigurationError

    monkeypatch.setenv("TRACELET_DURABILITY", "sometimes")
    with pytest.raises(ConfigurationError, match="(?i)durability"):
        TraceletSettings.load()
