"""Black-box stress: concurrent writers, readers and collectors never lose a write and never
see a wrong error.

Each test runs a bounded loop of real operations from several threads through the public
API and then checks the store as a whole; a correct implementation passes every time. Lock
contention comes from another connection holding the write lock; the catalog's public retry
policy (``Contention``) shortens SQLite's busy timeout and counts the backoff pauses (one of
them releases the held lock at a known moment).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from support import MakeFile

import tracelet_core._catalog as catalog_module
from tracelet_core import (
    ArtifactNotFoundError,
    ArtifactStore,
    ConfigurationError,
    StorageError,
    TraceletArtifact,
)
from tracelet_core._catalog import Catalog, Contention
from tracelet_core._hashing import hash_file


def in_threads(*jobs: Callable[[], Any]) -> list[Any]:
    """Run every job in its own thread at once; their results, re-raising the first error."""
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(job) for job in jobs]
        return [f.result() for f in futures]


def memory_store(tmp_path: Path, **settings: Any) -> ArtifactStore:
    """A remote store (fsspec's in-process memory filesystem stands in for a bucket)."""
    from tracelet_core import TraceletSettings

    uri = f"memory://tracelet-{uuid.uuid4().hex}/store"
    return ArtifactStore.open(uri, catalog_url=f"sqlite:///{tmp_path / 'remote.db'}",
                              settings=TraceletSettings.load(cache_dir=str(tmp_path / "cache"), **settings))


# -- 1. finish() vs a concurrent upsert ------------------------------------------------------
SHARDS = 40


def test_an_upsert_landing_while_finish_seals_the_draft_is_never_lost(
        any_store: ArtifactStore, make_file: MakeFile) -> None:
    paths = [f"shards/part-{i:03}.txt" for i in range(SHARDS)]
    sources = [make_file(f"s{i}.txt", f"shard {i}") for i in range(SHARDS)]
    done = threading.Event()

    def upsert_all() -> None:
        try:
            for source, path in zip(sources, paths, strict=True):
                any_store.upsert(TraceletArtifact("sharded").add_file(source, path), group="g")
        finally:
            done.set()

    def finish_repeatedly() -> int:
        sealed = 0
        while not done.is_set():
            try:
                any_store.finish("sharded", group="g")
                sealed += 1
            except ArtifactNotFoundError:
                pass  # no draft open at this moment
        return sealed

    _, sealed = in_threads(upsert_all, finish_repeatedly)
    if any_store.drafts():
        any_store.finish("sharded", group="g")
    stored = [f.path for v in any_store.versions("sharded") for f in v.files]
    assert sorted(stored) == paths, "a shard was lost, or sealed into two versions"
    assert any_store.drafts() == []
    assert sealed >= 1
    any_store.verify()


# -- 3. lock contention is transient and retried ----------------------------------------------
@pytest.fixture
def short_busy_timeout() -> list[int]:
    """The backoff pauses of ``contended`` stores, counted rather than slept."""
    return []


def contended(store_dir: Path, pause: Callable[[float], Any], catalog_url: str | None = None) -> ArtifactStore:
    """The store at ``store_dir`` with a catalog whose SQLite gives up waiting for a lock after
    50 ms and whose backoff pauses call ``pause``."""
    opened = ArtifactStore.open(store_dir, catalog_url=catalog_url)
    opened.catalog.dispose()
    url = catalog_url or f"sqlite:///{store_dir / 'catalog.db'}"
    catalog = Catalog(url, durable=opened.catalog.durable, contention=Contention(busy_timeout_s=0.05, pause=pause))
    return ArtifactStore(opened.blobs, catalog, opened.settings, opened.cache_dir)


@pytest.fixture
def sqlite_lock(store_dir: Path) -> Iterator[sqlite3.Connection]:
    """Another process's connection to the store's catalog, ready to take its write lock."""
    ArtifactStore.open(store_dir).close()
    holder = sqlite3.connect(store_dir / "catalog.db", isolation_level=None)
    try:
        yield holder
    finally:
        holder.close()


def test_a_busy_sqlite_catalog_is_a_storage_error_with_nothing_committed(
        store_dir: Path, make_file: MakeFile, short_busy_timeout: list[int],
        sqlite_lock: sqlite3.Connection) -> None:
    with contended(store_dir, lambda seconds: short_busy_timeout.append(1)) as store:
        store.log(TraceletArtifact("held").add_file(make_file("a.txt", "one")))
        sqlite_lock.execute("BEGIN IMMEDIATE")
        with pytest.raises(StorageError, match="busy") as caught:
            store.log(TraceletArtifact("held").add_file(make_file("b.txt", "two")))
        assert not isinstance(caught.value, ConfigurationError)
        assert len(short_busy_timeout) == catalog_module.CONTENTION_ATTEMPTS - 1  # retried, then raised
        sqlite_lock.execute("ROLLBACK")
        assert [v.version for v in store.versions("held")] == ["v1"]
        assert store.log(TraceletArtifact("held").add_file(make_file("b.txt", "two"))).version == "v2"


def test_a_lock_released_while_backing_off_lets_the_log_through(
        store_dir: Path, make_file: MakeFile, short_busy_timeout: list[int], sqlite_lock: sqlite3.Connection) -> None:
    def release(seconds: float) -> None:
        short_busy_timeout.append(1)
        if sqlite_lock.in_transaction:
            sqlite_lock.execute("ROLLBACK")

    with contended(store_dir, release) as store:
        sqlite_lock.execute("BEGIN IMMEDIATE")
        logged = store.log(TraceletArtifact("held").add_file(make_file("a.txt", "one")), aliases=["prod"])
        assert logged.version == "v1" and short_busy_timeout == [1]
        assert store.get("held:prod") == logged


@pytest.mark.parametrize("driver", ["postgresql+psycopg", "postgresql+psycopg2"])
def test_a_postgresql_lock_timeout_is_a_storage_error_with_nothing_committed(
        driver: str, postgres_url: str, store_dir: Path, make_file: MakeFile, short_busy_timeout: list[int]) -> None:
    """55P03 (lock_not_available): another transaction holds the artifact's row."""
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url).set(drivername=driver, query={"options": "-c lock_timeout=50"})
    url = url.render_as_string(hide_password=False)
    with contended(store_dir, lambda seconds: short_busy_timeout.append(1), url) as store:
        store.log(TraceletArtifact("held").add_file(make_file("a.txt", "one")))
        other = create_engine(postgres_url)
        try:
            with other.connect() as conn, conn.begin():
                conn.execute(text("SELECT id FROM artifacts WHERE name = 'held' FOR UPDATE"))
                with pytest.raises(StorageError, match="busy") as caught:
                    store.log(TraceletArtifact("held").add_file(make_file("b.txt", "two")))
                assert not isinstance(caught.value, ConfigurationError)
        finally:
            other.dispose()
        assert len(short_busy_timeout) == catalog_module.CONTENTION_ATTEMPTS - 1
        assert [v.version for v in store.versions("held")] == ["v1"]


@pytest.mark.parametrize("code", ["40P01", "40001", "55P03"])
def test_postgresql_contention_codes_are_transient(code: str) -> None:
    from sqlalchemy.exc import OperationalError

    class Orig(Exception):
        pgcode = code

    translated = catalog_module.classify(OperationalError("UPDATE ...", {}, Orig("contention")), "pg")
    assert isinstance(translated, StorageError) and not isinstance(translated, ConfigurationError)


# -- 7. the remote-blob cache under eviction ------------------------------------------------
def test_readers_sharing_a_tiny_cache_refetch_what_others_evict(tmp_path: Path, make_file: MakeFile) -> None:
    with memory_store(tmp_path, cache_max_bytes=1) as store:
        logged = [store.log(TraceletArtifact(f"cached/{i}").add_object({"n": i, "pad": "x" * 4000}, "value"))
                  for i in range(4)]

        def read_many(version: Any) -> int:
            for _ in range(25):
                assert version.load() == {"n": int(version.name.rsplit("/", 1)[1]), "pad": "x" * 4000}
            return 25

        assert sum(in_threads(*[lambda v=v: read_many(v) for v in logged])) == 100


# -- 21 and 2. gc racing logs ----------------------------------------------------------------
def log_and_collect(store: ArtifactStore, make_file: MakeFile, logs: int, grace: float,
                    before_log: Callable[[int, Path], None] = lambda i, source: None) -> list[str]:
    """Two writers log ``logs`` new versions each while gc collects in a loop; the refs."""
    done = threading.Event()

    def write(writer: int) -> list[str]:
        refs = []
        for i in range(logs):
            source = make_file(f"w{writer}/{i}.bin", f"writer {writer} log {i} ".encode() * 200)
            before_log(writer * logs + i, source)
            refs.append(store.log(TraceletArtifact(f"busy/w{writer}").add_file(source, "data.bin")).ref)
        return refs

    def writers() -> list[str]:
        try:
            return [ref for refs in in_threads(lambda: write(0), lambda: write(1)) for ref in refs]
        finally:
            done.set()

    def collect() -> int:
        runs = 0
        while not done.is_set():
            store.gc(dry_run=False, grace_seconds=grace)
            runs += 1
        return runs

    refs, runs = in_threads(writers, collect)
    assert runs >= 1
    return list(refs)


def test_gc_collecting_while_logs_write_temp_files_never_fails(store: ArtifactStore, make_file: MakeFile) -> None:
    refs = log_and_collect(store, make_file, logs=60, grace=3600)
    assert sorted(store.verify()) == sorted(refs)
    assert not list(Path(store.blobs.root, "tmp").iterdir())


def test_gc_on_a_remote_store_never_collects_what_an_in_flight_log_uploaded(
        tmp_path: Path, make_file: MakeFile) -> None:
    """The memory filesystem reports ``created``, not ``mtime``: still inside the grace period."""
    with memory_store(tmp_path) as store:
        refs = log_and_collect(store, make_file, logs=20, grace=3600)
        assert sorted(store.verify()) == sorted(refs)


def test_gc_on_a_remote_store_never_collects_an_old_orphan_a_log_reuses(
        tmp_path: Path, make_file: MakeFile) -> None:
    """Each log re-uses an orphan blob written long ago (a killed log's), which gc may collect
    at any moment: the log finds it again under the catalog's lock, or stores it again."""
    with memory_store(tmp_path) as store:
        long_ago = datetime(2020, 1, 1, tzinfo=timezone.utc)

        def plant_old_orphan(_i: int, source: Path) -> None:
            digest, size = hash_file(source)
            store.blobs.put_file(source, digest, size)
            store.blobs.fs.store[store.blobs.blob_path(digest)].created = long_ago  # age it

        refs = log_and_collect(store, make_file, logs=20, grace=60, before_log=plant_old_orphan)
        assert sorted(store.verify()) == sorted(refs)


# -- 6. a slow manifest PUT holds no lock ------------------------------------------------------
def test_a_writer_stuck_in_its_manifest_put_does_not_hold_up_other_writers(
        any_store: ArtifactStore, make_file: MakeFile, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writer A's manifest PUT hangs (a slow object store) until writer B has committed a
    version of the same name: B must not wait behind A's lock. A then commits v2."""
    other_committed = threading.Event()
    stuck = threading.Event()
    original = any_store.blobs.write_manifest

    def slow_put(*args: Any, **kwargs: Any) -> str:
        if threading.current_thread().name == "writer-a" and not stuck.is_set():
            stuck.set()
            assert other_committed.wait(timeout=20), "writer B waited behind writer A's manifest PUT"
        return original(*args, **kwargs)

    monkeypatch.setattr(any_store.blobs, "write_manifest", slow_put)
    outcome: dict[str, Any] = {}

    def writer_a() -> None:
        outcome["a"] = any_store.log(TraceletArtifact("slow").add_file(make_file("a.txt", "from a")))

    a = threading.Thread(target=writer_a, name="writer-a")
    a.start()
    assert stuck.wait(timeout=20)
    b = any_store.log(TraceletArtifact("slow").add_file(make_file("b.txt", "from b")), aliases=["b"])
    other_committed.set()
    a.join(timeout=60)
    assert not a.is_alive()
    assert b.version == "v1" and outcome["a"].version == "v2"
    assert [v.files[0].path for v in any_store.versions("slow")] == ["b.txt", "a.txt"]
    assert any_store.verify() == ["slow:v1", "slow:v2"]
    assert not list(Path(any_store.blobs.manifest_dir("slow")).glob("*.pending"))


def test_gc_survives_a_temp_entry_that_vanishes_under_it(store: ArtifactStore) -> None:
    """The deterministic form of the race above: an entry of ``tmp/`` whose target is gone
    (as a writer's temp file is, between gc listing and inspecting it)."""
    tmp = Path(store.blobs.root, "tmp")
    (tmp / "gone.blob").symlink_to(tmp / "removed-by-its-writer.blob")
    os.utime(tmp / "gone.blob", (0, 0), follow_symlinks=False)
    report = store.gc(dry_run=False, grace_seconds=60)
    assert report.temp_files == [str(tmp / "gone.blob")]
    assert not list(tmp.iterdir())
