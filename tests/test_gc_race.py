"""``gc`` racing ``log`` never removes the manifest of a version that commits meanwhile
(issue 26, item 17), on a local folder and on S3 (moto's server on loopback).

A log writes its manifest under a pending name before it takes the catalog's lock, commits,
then renames the manifest; ``gc`` removes stray manifests older than its grace period. The
two interleavings that lost a manifest are forced here: gc running between a log's manifest
write and its commit, and a log committing between gc's read of the catalog and its sweep of
the manifests. File times are made to look ancient to gc (a store whose clock is skewed, or
whose times are whole seconds, as S3's are), so the grace period protects nothing and only
the catalog's lock can. Then a bounded stress run: two writers re-using old orphan blobs
while gc collects with no grace period.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import MakeFile

from tracelet_core import ArtifactStore, TraceletArtifact, TraceletSettings


@pytest.fixture(params=["local", "s3"])
def store_uri(request: pytest.FixtureRequest, store_dir: Path) -> str:
    if request.param == "local":
        return str(store_dir)
    return str(request.getfixturevalue("s3_env"))


def open_store(uri: str, tmp_path: Path, cache: str) -> ArtifactStore:
    return ArtifactStore.open(uri, catalog_url=f"sqlite:///{tmp_path / 'catalog.db'}",
                              settings=TraceletSettings(cache_dir=str(tmp_path / cache)))


@pytest.fixture
def two_stores(store_uri: str, tmp_path: Path) -> Iterator[tuple[ArtifactStore, ArtifactStore]]:
    """A writer's store and a collector's store (its own connections and clients) on one location."""
    with open_store(store_uri, tmp_path, "writer") as writer, open_store(store_uri, tmp_path, "gc") as collector:
        yield writer, collector


def every_file_looks_ancient(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault: the store's clock says every file was written in 1970 (gc's grace period then
    protects nothing)."""
    monkeypatch.setattr(store.blobs, "_modified", lambda path: 0.0)


def collect(store: ArtifactStore) -> None:
    store.gc(dry_run=False, grace_seconds=0)


def test_gc_between_a_logs_manifest_write_and_its_commit(
        two_stores: tuple[ArtifactStore, ArtifactStore], make_file: MakeFile,
        monkeypatch: pytest.MonkeyPatch) -> None:
    writer, collector = two_stores
    every_file_looks_ancient(collector, monkeypatch)
    writer.log(TraceletArtifact("race/a").add_file(make_file("a0.txt", b"first")))
    commit = writer.catalog.commit_version

    def gc_first(*args: Any, **kwargs: Any) -> Any:
        collect(collector)  # the log's manifest is written (pending), its row not yet
        return commit(*args, **kwargs)

    monkeypatch.setattr(writer.catalog, "commit_version", gc_first)
    source = make_file("a1.txt", b"second")
    writer.blobs.ingest(source, cached=False)  # an old orphan the log re-uses (gc collects it, the log stores it again)
    logged = writer.log(TraceletArtifact("race/a").add_file(source))
    assert logged.version_number == 2
    assert sorted(collector.verify()) == ["race/a:v1", "race/a:v2"]
    collect(collector)  # and a later gc keeps it too
    assert sorted(collector.verify()) == ["race/a:v1", "race/a:v2"]


def test_a_log_committing_while_gc_sweeps_the_manifests(
        two_stores: tuple[ArtifactStore, ArtifactStore], make_file: MakeFile,
        monkeypatch: pytest.MonkeyPatch) -> None:
    writer, collector = two_stores
    every_file_looks_ancient(collector, monkeypatch)
    writer.log(TraceletArtifact("race/b").add_file(make_file("b0.txt", b"first")))
    read_committed = collector.catalog.manifest_keys
    logged: list[int] = []

    def then_a_log(*args: Any, **kwargs: Any) -> Any:
        committed = read_committed(*args, **kwargs)
        if not logged:  # a version commits (and its manifest is renamed) right after gc read the catalog
            logged.append(writer.log(TraceletArtifact("race/b").add_file(make_file("b1.txt", b"2nd"))).version_number)
        return committed

    monkeypatch.setattr(collector.catalog, "manifest_keys", then_a_log)
    collect(collector)
    assert logged == [2]
    assert sorted(collector.verify()) == ["race/b:v1", "race/b:v2"]


def test_gc_without_grace_against_logs_reusing_old_orphans_loses_no_manifest(
        s3_env: str, tmp_path: Path, make_file: MakeFile) -> None:
    """Bounded stress on S3 (about 15 s): each log re-uses an orphan blob, which gc (no grace
    period) may collect at any moment; every version a log returned verifies afterwards. (On
    a local folder no grace period also collects in-flight temp files, by design.)"""
    logs, store_uri = 12, s3_env
    with open_store(store_uri, tmp_path, "writer") as writer, open_store(store_uri, tmp_path, "gc") as collector:
        done = threading.Event()
        refs: list[str] = []
        errors: list[BaseException] = []

        def guarded(job: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                try:
                    job()
                except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test's thread
                    errors.append(exc)
            return run

        def write(who: int) -> None:
            for i in range(logs):
                source = make_file(f"w{who}/{i}.bin", f"writer {who} log {i} ".encode() * 100)
                writer.blobs.ingest(source, cached=False)  # an orphan: stored, no version uses it
                refs.append(writer.log(TraceletArtifact(f"reuse/r{who}").add_file(source, "data.bin")).ref)

        def sweep() -> None:
            rounds = 0
            while not done.is_set() or rounds < 2:
                collect(collector)
                rounds += 1

        writers = [threading.Thread(target=guarded(functools.partial(write, who))) for who in (0, 1)]
        collecting = threading.Thread(target=guarded(sweep))
        for thread in (*writers, collecting):
            thread.start()
        for thread in writers:
            thread.join()
        done.set()
        collecting.join()
        if errors:
            raise errors[0]
        assert sorted(collector.verify()) == sorted(refs)
        assert len(refs) == 2 * logs
