"""The per-machine stat cache: an unchanged file is not read again when re-logged; anything
that could hide a change (a racy mtime, another size, mtime or inode) makes it read again.

"Not read again" is shown by behaviour, not by counting calls: the file's bytes are changed
behind the cache's back (same size, same inode, mtime put back), so a re-log that returns
the old version can only have trusted the cache; ``rehash=True`` then finds the change.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from support import MakeFile

from tracelet_core import ArtifactStore, TraceletArtifact, TraceletSettings

HOUR_NS = 3600 * 1_000_000_000


def aged(path: Path) -> Path:
    """Backdate the mtime an hour: a file written earlier, not one still being written."""
    when = time.time_ns() - HOUR_NS
    os.utime(path, ns=(when, when))
    return path


def rewrite_in_place(path: Path, content: bytes) -> None:
    """Overwrite the bytes through the same inode, then put the old mtime back."""
    before = path.stat()
    with path.open("r+b") as handle:
        handle.write(content)
        handle.truncate()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def log(store: ArtifactStore, path: Path, **options: bool) -> str:
    return store.log(TraceletArtifact("data/file").add_file(path, "data.bin"), **options).ref


def test_an_unchanged_file_is_not_read_again(store: ArtifactStore, make_file: MakeFile) -> None:
    source = aged(make_file("data.bin", b"first content"))
    assert log(store, source) == "data/file:v1"
    rewrite_in_place(source, b"other content")  # same size: the cache cannot tell
    assert log(store, source) == "data/file:v1"  # trusted the cache: the bytes were not read


def test_rehash_reads_the_file_again(store: ArtifactStore, make_file: MakeFile) -> None:
    source = aged(make_file("data.bin", b"first content"))
    log(store, source)
    rewrite_in_place(source, b"other content")
    assert log(store, source, rehash=True) == "data/file:v2"
    assert store.get("data/file:v2").path("data.bin").read_bytes() == b"other content"
    assert log(store, source) == "data/file:v2"  # and the cache now holds the new digest


def test_a_file_modified_within_the_timestamp_granularity_is_read_again(
        store: ArtifactStore, make_file: MakeFile) -> None:
    source = make_file("data.bin", b"first content")  # mtime: just now (racy)
    assert log(store, source) == "data/file:v1"
    rewrite_in_place(source, b"other content")  # a second write in the same timestamp tick
    assert log(store, source) == "data/file:v2"
    assert store.get("data/file:v2").path("data.bin").read_bytes() == b"other content"


def test_another_size_mtime_or_inode_is_read_again(store: ArtifactStore, make_file: MakeFile,
                                                   tmp_path: Path) -> None:
    source = aged(make_file("data.bin", b"content 1"))
    log(store, source)
    old = source.stat()

    source.write_bytes(b"content 22")  # another size, mtime put back
    os.utime(source, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert log(store, source) == "data/file:v2"

    rewrite_in_place(source, b"content 33")  # same size and inode, another mtime
    os.utime(source, ns=(old.st_atime_ns, old.st_mtime_ns - 10**9))
    assert log(store, source) == "data/file:v3"

    current = source.stat()
    replacement = tmp_path / "replacement.bin"  # same size and mtime, another inode
    replacement.write_bytes(b"content 44")
    os.utime(replacement, ns=(current.st_atime_ns, current.st_mtime_ns))
    os.replace(replacement, source)
    assert source.stat().st_ino != current.st_ino
    assert log(store, source) == "data/file:v4"
    contents = [v.path("data.bin").read_bytes() for v in store.versions("data/file")]
    assert contents == [b"content 1", b"content 22", b"content 33", b"content 44"]


def test_a_cache_hit_still_needs_the_blob_in_this_store(make_file: MakeFile, tmp_path: Path) -> None:
    """Two stores sharing one cache folder: the digest is known, the blob is not in the second."""
    settings = TraceletSettings.load(cache_dir=str(tmp_path / "shared-cache"))
    source = aged(make_file("data.bin", b"shared content"))
    with ArtifactStore.open(tmp_path / "a", settings=settings) as first:
        log(first, source)
    with ArtifactStore.open(tmp_path / "b", settings=settings) as second:
        ref = log(second, source)
        assert second.verify(ref) == [ref]
        assert second.get(ref).path("data.bin").read_bytes() == b"shared content"


def test_the_cache_lives_beside_the_store_not_in_the_catalog(store: ArtifactStore, store_dir: Path,
                                                             make_file: MakeFile) -> None:
    source = aged(make_file("data.bin", b"content"))
    store.log(TraceletArtifact("data/file").add_file(source, "data.bin").add_object({"a": 1}, "config"))
    with sqlite3.connect(store_dir / "cache" / "statcache.db") as cache:
        rows = cache.execute("SELECT path, size FROM files").fetchall()
    assert rows == [(str(source.resolve()), len(b"content"))]  # the serialized object is not cached
    with sqlite3.connect(store_dir / "catalog.db") as catalog:
        tables = {r[0] for r in catalog.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "files" not in tables


def test_an_unreadable_cache_file_only_turns_the_cache_off(store_dir: Path, make_file: MakeFile) -> None:
    (store_dir / "cache").mkdir(parents=True)
    (store_dir / "cache" / "statcache.db").write_bytes(b"this is not a SQLite database" * 100)
    source = aged(make_file("data.bin", b"content"))
    with ArtifactStore.open(store_dir) as store:
        assert log(store, source) == "data/file:v1"
        rewrite_in_place(source, b"CONTENT")
        assert log(store, source) == "data/file:v2"  # no cache: read again
