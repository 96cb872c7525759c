"""Local copies in the kernel with the hash beside them (``kernel_copy_hashing``): the digest
is that of the bytes written, the fallback where the kernel refuses gives the same result, a
limit stops an endless source, and a log / download of a large file goes through it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import tracelet_core._hashing as hashing
from tracelet_core import ArtifactStore, IntegrityError, TraceletArtifact
from tracelet_core._hashing import KERNEL_COPY_MIN_BYTES, hash_bytes, hash_file, kernel_copy_hashing

SIZE = 3 * (1 << 20) + 12345  # several chunks of the small test chunk size, and a partial one


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


def copy(source: Path, dest: Path, **kwargs: object) -> tuple[str, int]:
    with source.open("rb", buffering=0) as src, dest.open("w+b", buffering=0) as dst:
        return kernel_copy_hashing(src.fileno(), dst.fileno(), SIZE, chunk=1 << 20, **kwargs)  # type: ignore[arg-type]


def test_the_digest_is_that_of_the_copied_bytes(source: Path, tmp_path: Path) -> None:
    seen: list[int] = []
    digest, size = copy(source, tmp_path / "copy.bin", progress=seen.append)
    assert (digest, size) == hash_file(source)
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
    assert sum(seen) == SIZE


def test_where_the_kernel_refuses_a_read_write_loop_copies(source: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> int:  # fault: a file system copy_file_range does not support
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(hashing.os, "copy_file_range", refuse)
    digest, size = copy(source, tmp_path / "copy.bin")
    assert (digest, size) == hash_file(source)
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()


def test_a_limit_stops_the_copy_one_byte_past_it(source: Path, tmp_path: Path) -> None:
    digest, size = copy(source, tmp_path / "copy.bin", limit=1000)
    assert size == 1001
    assert digest == hash_bytes(source.read_bytes()[:1001])


def test_an_error_while_copying_reaches_the_caller(source: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.copy_file_range

    def full_disk(*args: object) -> int:  # fault: the disk fills after the first chunk
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return int(real(*args))  # type: ignore[arg-type]

    monkeypatch.setattr(hashing.os, "copy_file_range", full_disk)
    with pytest.raises(OSError) as raised:
        copy(source, tmp_path / "copy.bin")
    assert raised.value.errno == errno.ENOSPC


def test_a_large_log_and_its_download_verify(store: ArtifactStore, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(KERNEL_COPY_MIN_BYTES + 777))
    logged = store.log(TraceletArtifact("big").add_file(big))
    assert logged.files[0].digest == hash_file(big)[0]
    out = logged.download(tmp_path / "out")
    assert (out / "big.bin").read_bytes() == big.read_bytes()
    blob = Path(store.blobs.blob_path(hash_file(big)[0]))
    blob.chmod(0o644)
    with blob.open("r+b") as handle:  # a corrupted blob is refused on the way out
        handle.seek(KERNEL_COPY_MIN_BYTES)
        handle.write(b"X")
    with pytest.raises(IntegrityError):
        logged.download(tmp_path / "again")
