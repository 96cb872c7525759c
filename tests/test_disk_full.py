"""A store on a full disk: every log either returns its version or raises ``StorageError``
with nothing committed, and the store stays whole.

The disk is a real 8 MB tmpfs mounted for the test (the suite runs as root in CI).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracelet_core import ArtifactStore, StorageError, TraceletArtifact

#: Sizes of the files logged, biggest first, so the disk fills at many different levels.
SIZES = [900_000] * 10 + [200_000] * 6 + [40_000] * 6 + [5_000] * 6 + [300] * 6
PAGE = 4096
FILLER_PAGES = 48


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_logs_on_a_filling_disk_commit_whole_versions_or_raise_storage_error(
        small_disk: Path, tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()
    fillers = [small_disk / f"filler-{i}.bin" for i in range(FILLER_PAGES)]
    for filler in fillers:  # freed one page at a time once the disk is full
        filler.write_bytes(b"\0" * PAGE)
    failures: list[str] = []
    attempts = 0
    with ArtifactStore.open(small_disk / "store") as store:

        def attempt(size: int) -> None:
            nonlocal attempts
            attempts += 1
            source = sources / f"f{attempts}.bin"
            source.write_bytes(os.urandom(size))
            before = [v.to_dict() for v in store.versions("filling")] if store.list() else []
            try:
                logged = store.log(TraceletArtifact("filling").add_file(source, "data.bin"), aliases=["newest"])
            except StorageError as exc:
                assert str(small_disk / "store") in str(exc)  # names the store (or its catalog)
                failures.append(str(exc).split(" ", 3)[2])
                after = [v.to_dict() for v in store.versions("filling")] if store.list() else []
                assert after == before, f"attempt {attempts} ({size} bytes) committed something and raised"
                return
            assert logged.version_number == len(before) + 1
            assert store.get("filling:newest") == logged

        for size in SIZES:
            attempt(size)
        assert failures, "the disk never filled; the test proved nothing"
        for filler in fillers:  # every fill level a page apart: blobs, manifests, catalog, journal
            filler.unlink()
            for _ in range(2):
                attempt(300)
        committed = store.verify()
        assert len(committed) + len(failures) == attempts

        store.gc(dry_run=False, grace_seconds=0)
        source = sources / "after.bin"
        source.write_bytes(b"room again")
        logged = store.log(TraceletArtifact("filling").add_file(source, "data.bin"))
        assert logged.version_number == len(committed) + 1
        assert store.verify() == [*committed, logged.ref]
        for version in store.versions("filling"):
            out = version.download(tmp_path / "out" / version.version)
            assert (out / "data.bin").stat().st_size == version.files[0].size
