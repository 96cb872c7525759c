"""``FsspecBlobStore``: the blob store on an object store (any fsspec filesystem), and the
``BlobCache`` of verified local copies its reads go through.

Every write is one PUT, which object stores make atomic: a blob is streamed straight from its
source (multipart for large files, no local copy), created only if absent, and abandoned before
it completes if the file changed since it was hashed, so no blob is ever stored under a wrong
digest. Transient errors (timeouts, resets, 5xx answers) are retried with backoff.
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ._blobs_base import (
    BlobStore,
    Progress,
    _copy_stream,
    _verified_copy,
    modified_time,
    retrying,
    split_credentials,
)
from ._errors import ConfigurationError, IntegrityError, InvalidArtifactError
from ._hashing import hash_file, split_digest

#: Times a read goes through the remote-blob cache before it reads past it (entries another
#: reader evicts under us are fetched again).
_CACHE_ATTEMPTS = 3


class FsspecBlobStore(BlobStore):
    """Blobs and manifests under one fsspec root (see the module docstring)."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None, *, cache_dir: Path,
                 cache: BlobCache | None = None, durable: bool = True) -> None:
        import fsspec  # Deferred for import perf

        uri, options = split_credentials(uri, dict(storage_options or {}))
        try:
            self.fs, root = fsspec.core.url_to_fs(uri, **options)
        except (ImportError, ValueError) as exc:
            raise ConfigurationError(f"cannot open store {uri!r}: {exc}") from exc
        super().__init__(uri, root.rstrip("/") or root, cache_dir=cache_dir, durable=durable)
        self.cache = cache

    def blob_uri(self, digest: str) -> str:
        return str(self.fs.unstrip_protocol(self.blob_path(digest)))

    # -- blobs ------------------------------------------------------------------------------
    def _exists_now(self, path: str) -> bool:
        """Whether ``path`` exists, asked of the storage: never a listing cached before another
        process (or this one's gc) removed it."""
        self.fs.invalidate_cache(path)
        return bool(self.fs.exists(path))

    def has_blob(self, digest: str) -> bool:
        return self._exists_now(self.blob_path(digest))

    def put_file(self, source: Path, digest: str, size: int, progress: Progress | None = None) -> bool:
        final = self.blob_path(digest)
        if self._exists_now(final):
            if progress is not None:
                progress(size)
            return False
        return bool(retrying(lambda: self._put(source, final, digest, size, progress),
                             f"upload of {source.name} to {self.uri}"))

    def _put(self, source: Path, final: str, digest: str, size: int, progress: Progress | None) -> bool:
        """Stream ``source`` to the object store, creating the object only if absent."""
        if self._exists_now(final):
            return False
        dst = self._open_exclusive(final)
        try:
            with source.open("rb") as src:
                copied_digest, _ = _copy_stream(src, dst, size, progress)
            if copied_digest != digest:
                raise InvalidArtifactError(f"{source} changed while it was being logged")
        except BaseException:
            _discard(dst)
            raise
        try:
            dst.close()
        except FileExistsError:
            return False  # a concurrent writer stored the same blob first
        except OSError as exc:
            if "PreconditionFailed" in str(exc) or "412" in str(exc):
                return False
            raise
        return True

    def _open_exclusive(self, path: str) -> Any:
        """Open ``path`` for a create-if-absent write where the filesystem supports it."""
        try:
            return self.fs.open(path, "xb")
        except (ValueError, NotImplementedError, TypeError):
            return self.fs.open(path, "wb")

    def _ingest_new(self, source: Path, size_hint: int, progress: Progress | None) -> tuple[str, int, bool]:
        digest, size = hash_file(source)
        return digest, size, self.put_file(source, digest, size, progress)

    def open_blob(self, digest: str, label: str | None = None) -> BinaryIO:
        path = self.blob_path(digest)
        what = f"{label} ({digest})" if label else digest
        try:
            handle: BinaryIO = retrying(lambda: self.fs.open(path, "rb"), f"read of blob {digest}")
            return handle
        except FileNotFoundError as exc:
            raise IntegrityError(f"blob of {what} is missing from the store", [f"{what}: missing"]) from exc

    def _copy_blob_to(self, digest: str, dest: Path, progress: Progress | None, label: str,
                      size: int | None) -> None:
        """Through the local cache, so a second read costs no transfer."""
        from_store = functools.partial(self.open_blob, digest, label)
        if self.cache is None:
            _verified_copy(from_store, digest, dest, progress, label, size)
            return
        for _ in range(_CACHE_ATTEMPTS):
            cached = self.cache.get(digest)
            if cached is None:
                cached = self.cache.add(digest, functools.partial(
                    _verified_copy, from_store, digest, progress=progress, label=label, size=size))
                progress = None  # counted while filling the cache
            try:
                _verified_copy(_reader(cached), digest, dest, progress, label, size)
                return
            except FileNotFoundError:
                continue  # another reader evicted the entry under us: fetch it again
        # the cache is too small for the readers sharing it: read past it
        _verified_copy(from_store, digest, dest, None, label, size)

    def iter_blobs(self) -> Iterator[tuple[str, float | None, int]]:
        base = f"{self.root}/blobs"
        if not self.fs.exists(base):
            return
        for path, info in self.fs.find(base, detail=True).items():
            hexdigest = path.rsplit("/", 1)[-1]
            yield f"blake3:{hexdigest}", modified_time(info), int(info.get("size") or 0)

    def delete_blob(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):  # another gc removed it first
            self.fs.rm(self.blob_path(digest))

    # -- small files under manifests/ ---------------------------------------------------------
    def _write_small(self, path: str, data: bytes, what: str) -> None:
        retrying(lambda: self.fs.pipe_file(path, data), f"write of {what}")

    def _read_small(self, path: str) -> bytes:
        return bytes(self.fs.cat_file(path))

    def _list_files(self, folder: str, recursive: bool) -> list[str]:
        if not recursive:
            try:
                return sorted(str(p) for p in self.fs.ls(folder, detail=False))
            except FileNotFoundError:
                return []
        if not self.fs.exists(folder):
            return []
        return [str(p) for p in self.fs.find(folder)]

    def _modified(self, path: str) -> float | None:
        return modified_time(self.fs.info(path))

    def has_small(self, path: str) -> bool:
        return self._exists_now(path)

    def _remove(self, path: str) -> None:
        self.fs.rm(path)

    def promote_manifest(self, name: str, version: int, pending: str | None = None) -> None:
        pending = pending or self.pending_manifest_path(name, version)
        final = self.manifest_path(name, version)
        try:
            data = retrying(lambda: self.fs.cat_file(pending), f"read of manifest {name}:v{version}")
            retrying(lambda: self.fs.pipe_file(final, data), f"write of manifest {name}:v{version}")
            retrying(lambda: self.fs.rm(pending), f"removal of pending manifest {name}:v{version}")
        except FileNotFoundError:
            return


class BlobCache:
    """Verified local copies of remote blobs, bounded in bytes; least recently used go first.

    Safe to share between processes: entries appear by atomic rename and a reader that loses
    an entry to eviction simply fetches it again.
    """

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def _path(self, digest: str) -> Path:
        hexdigest = split_digest(digest)[1]
        return self.root / hexdigest[:2] / hexdigest

    def get(self, digest: str) -> Path | None:
        path = self._path(digest)
        try:
            os.utime(path)  # a hit makes it the most recently used
        except FileNotFoundError:
            return None
        return path

    def add(self, digest: str, fill: Callable[[Path], None]) -> Path:
        """Fill a new entry with ``fill(path)`` (which verifies it), then evict to the bound."""
        path = self._path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        tmp = self.root / "tmp" / f"{uuid.uuid4().hex}.part"
        try:
            fill(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        self.evict(keep=path)
        return path

    def entries(self) -> list[tuple[float, int, Path]]:
        found = []
        for path in self.root.glob("??/*"):
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            found.append((info.st_mtime, info.st_size, path))
        return found

    def evict(self, keep: Path | None = None) -> int:
        """Delete least recently used entries until the cache fits; the bytes freed."""
        entries = sorted(self.entries())
        total = sum(size for _, size, _ in entries)
        freed = 0
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            freed += size
        return freed


def _reader(path: Path) -> Callable[[], BinaryIO]:
    return lambda: path.open("rb")


def _discard(handle: Any) -> None:
    """Abandon an unfinished upload (multipart uploads are aborted, nothing is created)."""
    discard = getattr(handle, "discard", None)
    if callable(discard):
        discard()
        handle.closed = True  # fsspec would otherwise try to commit the discarded buffer on __del__
    else:
        handle.close()
