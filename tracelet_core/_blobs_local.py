"""``LocalBlobStore``: the blob store on local disk, written with plain os calls.

A new file is read once: hashed while it is copied into a temp file under ``tmp/``, which is
then renamed to its digest, so a file that changes while it is logged is stored under the
digest of the bytes actually copied (files up to ``SMALL_FILE_BYTES`` are read whole, and
not copied at all when their blob is already stored). Blobs are read-only files; a blob
replacing an identical one is harmless, since blobs are named by their content. Re-using a
stored blob gives it a fresh mtime, which keeps gc's grace period away from an in-flight log.

Durability is batched (``durable=True``, the default; ``TRACELET_DURABILITY=none`` turns it
off): writes are not flushed one by one; ``flush`` makes everything written since the last
flush durable at once (files and the folders their names were linked into: ``syncfs`` on
Linux for large batches, as git's ``core.fsyncMethod=batch``), and ``write_manifest`` flushes
before it returns, so a version's blobs and manifest are on disk before the catalog commits it.
Without durability a killed process still never leaves a partial blob or manifest (atomic
links and renames), but a power loss may lose recent writes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import stat
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ._blobs_base import BlobStore, Progress, _copy_stream, storage_errors
from ._errors import ConfigurationError, IntegrityError, InvalidArtifactError, StorageError
from ._hashing import hash_bytes

#: Files up to this size are read into memory whole (one read, and no copy at all when the
#: blob is already stored); larger ones are hashed while they are copied.
SMALL_FILE_BYTES = 1 << 20
#: A flush of up to this many files fsyncs each (and their folders); more use one ``syncfs``.
FSYNC_EACH_LIMIT = 8
#: ``finish_ingest`` flushes a batch at least this large right away (outside the catalog's
#: write lock); smaller batches wait for the manifest's flush.
EARLY_FLUSH_BYTES = 16 << 20
#: Blobs are read-only files.
READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


def syncfs(path: str) -> bool:
    """``syncfs(2)`` on the file system holding ``path`` (Linux); False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
    except (OSError, AttributeError):
        return False
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs failed: {os.strerror(err)}")
        return True
    finally:
        os.close(fd)


def fsync_path(path: str | Path) -> None:
    """fsync a file or folder by name (folders: so a rename or link into them is durable)."""
    if os.name == "nt" and os.path.isdir(path):
        return  # Windows cannot open folders; NTFS journals names itself
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _PendingFlush:
    """Files and folders written since the last flush, across threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.files: set[str] = set()
        self.folders: set[str] = set()
        self.bytes = 0

    def take(self) -> tuple[set[str], set[str]]:
        with self.lock:
            files, folders = self.files, self.folders
            self.files, self.folders, self.bytes = set(), set(), 0
            return files, folders


class LocalBlobStore(BlobStore):
    """Blobs and manifests in a local folder (see the module docstring)."""

    def __init__(self, root: Path, *, cache_dir: Path | None = None, durable: bool = True) -> None:
        try:
            Path(root, "tmp").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot create store folder {root}: {exc}") from exc
        super().__init__(str(root), root.as_posix(), cache_dir=cache_dir or root / "cache", durable=durable)
        self._pending = _PendingFlush()

    @property
    def default_catalog_url(self) -> str:
        return f"sqlite:///{Path(self.root) / 'catalog.db'}"

    def blob_uri(self, digest: str) -> str:
        return f"file://{self.blob_path(digest)}"

    def linkable_blob(self, digest: str) -> Path:
        return Path(self.blob_path(digest))

    # -- blobs ------------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        return os.path.exists(self.blob_path(digest))

    def _have_blob(self, digest: str) -> bool:
        """Whether blob ``digest`` is stored; it gets a fresh mtime, which keeps gc's grace
        period away from an in-flight log."""
        try:
            os.utime(self.blob_path(digest))
        except FileNotFoundError:
            return False
        return True

    def put_file(self, source: Path, digest: str, size: int, progress: Progress | None = None) -> bool:
        final = self.blob_path(digest)
        try:  # a fresh mtime keeps gc's grace period away from an in-flight log
            os.utime(final)
        except FileNotFoundError:
            with storage_errors(f"write of {source.name} to store {self.uri}"):
                return self._put(source, final, digest, size, progress)
        if progress is not None:
            progress(size)
        return False

    def _put(self, source: Path, final: str, digest: str, size: int, progress: Progress | None) -> bool:
        tmp = self._temp_path("blob")
        try:
            with source.open("rb", buffering=0) as src, tmp.open("w+b", buffering=0) as dst:
                copied_digest, _ = _copy_stream(src, dst, size, progress)
            if copied_digest != digest:
                raise InvalidArtifactError(f"{source} changed while it was being logged")
            os.chmod(tmp, READ_ONLY)
            return self._place(tmp, final, size)
        finally:
            tmp.unlink(missing_ok=True)

    def _ingest_new(self, source: Path, size_hint: int, progress: Progress | None) -> tuple[str, int, bool]:
        with storage_errors(f"write of {source.name} to store {self.uri}"):
            return self._copy_in(source, size_hint, progress)

    def _copy_in(self, source: Path, size_hint: int, progress: Progress | None) -> tuple[str, int, bool]:
        tmp = self._temp_path("blob")
        placed = False
        try:
            if size_hint <= SMALL_FILE_BYTES:
                data = source.read_bytes()
                digest, size = hash_bytes(data), len(data)
                if progress is not None:
                    progress(size)
                if self._have_blob(digest):
                    return digest, size, False
                _write_read_only(tmp, data)
            else:
                with source.open("rb", buffering=0) as src, tmp.open("w+b", buffering=0) as dst:
                    digest, size = _copy_stream(src, dst, size_hint, progress)
                os.chmod(tmp, READ_ONLY)
            written = self._place(tmp, self.blob_path(digest), size)  # a fresh inode: young for gc
            placed = True
            return digest, size, written
        finally:
            if not placed:
                tmp.unlink(missing_ok=True)

    def _temp_path(self, kind: str) -> Path:
        return Path(self.root, "tmp", f"{uuid.uuid4().hex}.{kind}")

    def _place(self, tmp: Path, final: str, size: int) -> bool:
        """Rename a finished (read-only) temp blob to its final name; True if it was new. Blobs are named
        by their content, so replacing a concurrent writer's identical blob is harmless (and
        one rename costs less than link + unlink). The blob is flushed with the rest of its
        batch (``flush``)."""
        self._make_folders(Path(final).parent)
        existed = os.path.exists(final)
        try:
            os.replace(tmp, final)
        except PermissionError:  # Windows cannot replace a read-only file: it holds these bytes
            if not os.path.exists(final):
                raise
            tmp.unlink(missing_ok=True)
            return False
        self._written(final, size)
        return not existed

    def open_blob(self, digest: str, label: str | None = None) -> BinaryIO:
        """Only a regular file is opened (never through a symlink, a device or a FIFO)."""
        what = f"{label} ({digest})" if label else digest
        try:
            return _open_regular(self.blob_path(digest), what)
        except FileNotFoundError as exc:
            raise IntegrityError(f"blob of {what} is missing from the store", [f"{what}: missing"]) from exc

    def iter_blobs(self) -> Iterator[tuple[str, float | None, int]]:
        for path in self._list_files(f"{self.root}/blobs", recursive=True):
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue  # removed since it was listed (another gc)
            yield f"blake3:{path.rsplit('/', 1)[-1]}", info.st_mtime, _target_size(path, info)

    def delete_blob(self, digest: str) -> None:
        Path(self.blob_path(digest)).unlink(missing_ok=True)

    # -- durability -------------------------------------------------------------------------
    def _make_folders(self, folder: Path) -> None:
        """``mkdir -p``; every folder it creates is noted so its parent gets flushed."""
        missing = []
        while not folder.is_dir():
            missing.append(folder)
            folder = folder.parent
        if not missing:
            return
        missing[0].mkdir(parents=True, exist_ok=True)
        if self.durable:
            with self._pending.lock:
                self._pending.folders.update(str(p.parent) for p in missing)

    def _written(self, path: str, size: int) -> None:
        if self.durable:
            with self._pending.lock:
                self._pending.files.add(path)
                self._pending.folders.add(os.path.dirname(path))
                self._pending.bytes += size

    def flush(self) -> None:
        """Make every local file written since the last flush durable, in one batch."""
        files, folders = self._pending.take()
        if not self.durable or not (files or folders):
            return
        try:
            if len(files) > FSYNC_EACH_LIMIT and syncfs(self.root):
                return
            for path in sorted(files):
                with contextlib.suppress(FileNotFoundError):  # removed since (a failed log's blob): nothing to keep
                    fsync_path(path)
            for folder in sorted(folders, key=len, reverse=True):  # deepest first
                with contextlib.suppress(FileNotFoundError):
                    fsync_path(folder)
        except OSError as exc:
            raise StorageError(f"flush of {len(files)} file(s) to {self.root} failed: {exc}") from exc

    def finish_ingest(self) -> None:
        """Save the stat cache, and flush a large batch of blobs now, so the flush under the
        catalog's write lock (the manifest's) stays short."""
        super().finish_ingest()
        if self._pending.bytes >= EARLY_FLUSH_BYTES or len(self._pending.files) > FSYNC_EACH_LIMIT:
            self.flush()

    def clean_tmp(self, older_than: float) -> list[str]:
        removed: list[str] = []
        cutoff = time.time() - older_than
        for leftover in Path(self.root, "tmp").iterdir():
            try:  # a writer may remove its own temp file at any moment
                info = leftover.lstat()
            except FileNotFoundError:
                continue
            if info.st_mtime < cutoff:
                if stat.S_ISDIR(info.st_mode):
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
                removed.append(str(leftover))
        return removed

    # -- small files under manifests/ ---------------------------------------------------------
    def _write_small(self, path: str, data: bytes, what: str) -> None:
        """A temp file renamed into place, then flushed with every write still pending (a
        version's blobs) before returning."""
        with storage_errors(f"write of {what}"):
            self._make_folders(Path(path).parent)
            tmp = self._temp_path("write")
            try:
                with tmp.open("wb") as handle:
                    handle.write(data)
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            self._written(path, len(data))
            self.flush()

    def _read_small(self, path: str) -> bytes:
        with open(path, "rb") as handle:
            return handle.read()

    def _list_files(self, folder: str, recursive: bool) -> list[str]:
        if not recursive:
            try:
                with os.scandir(folder) as entries:
                    return sorted(f"{folder}/{e.name}" for e in entries)
            except (FileNotFoundError, NotADirectoryError):
                return []
        found: list[str] = []
        for parent, _dirs, files in os.walk(folder):
            base = parent.replace(os.sep, "/")
            found.extend(f"{base}/{name}" for name in files)
        return sorted(found)

    def _modified(self, path: str) -> float:
        return os.lstat(path).st_mtime

    def _remove(self, path: str) -> None:
        os.unlink(path)

    def promote_manifest(self, name: str, version: int, pending: str | None = None) -> None:
        pending = pending or self.pending_manifest_path(name, version)
        with contextlib.suppress(FileNotFoundError), \
                storage_errors(f"rename of manifest {name}:v{version} in store {self.uri}"):
            os.replace(pending, self.manifest_path(name, version))


def _write_read_only(path: Path, data: bytes) -> None:
    """Create ``path`` read-only holding ``data`` (one open, no chmod: a blob's temp file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), READ_ONLY)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _target_size(path: str, info: os.stat_result) -> int:
    """A file's size; a symlink's is its target's (0 when that is gone)."""
    if not stat.S_ISLNK(info.st_mode):
        return info.st_size
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _open_regular(path: str, what: str) -> BinaryIO:
    """Open a local file for reading only if it is a regular file reached without a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:  # ELOOP: the blob is a symlink
        raise IntegrityError(f"blob of {what} is not a regular file: {exc.strerror}",
                             [f"{what}: not a regular file"]) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IntegrityError(f"blob of {what} is not a regular file", [f"{what}: not a regular file"])
    return os.fdopen(fd, "rb", buffering=0)  # unbuffered: reads go straight into the copy's buffer
