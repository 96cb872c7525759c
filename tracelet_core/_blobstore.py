"""Content-addressed blobs and version manifests on any fsspec filesystem.

Layout under the store root::

    blobs/ab/<blake3 hex>             immutable file contents, named by digest
    manifests/<name>/@v<N>.json       one JSON manifest per version (rebuilds a lost catalog)
    manifests/<name>/@v<N>.pending    a manifest written before its commit; renamed to
                                      @v<N>.json once the version committed (gc does it
                                      after a crash, or removes it if no version committed)
    tmp/                              in-flight writes (local disk), renamed into place

Writes are atomic: on local disk a temp file is renamed into place (a blob replacing an
identical one is harmless: blobs are named by their content); on object stores a single PUT
is atomic. A new local file is read once: hashed while it is copied into a temp blob, which
is then renamed to its digest, so a file that changes while it is logged is stored under the
digest of the bytes actually copied.

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
import errno
import functools
import json
import os
import shutil
import stat
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit, urlunsplit

from ._errors import (
    ArtifactNotFoundError,
    ConfigurationError,
    IntegrityError,
    InvalidArtifactError,
    StorageError,
)
from ._hashing import copy_hashing, hash_bytes, hash_file, split_digest
from ._names import validate_name
from ._statcache import StatCache

MANIFEST_PREFIX = "@"
#: A manifest written before its version's commit carries this suffix until the commit is seen.
PENDING_SUFFIX = ".pending"
Progress = Callable[[int], None]
#: Times a read goes through the remote-blob cache before it reads past it (entries another
#: reader evicts under us are fetched again).
_CACHE_ATTEMPTS = 3


#: Files up to this size are read into memory whole (one read, and no copy at all when the
#: blob is already stored); larger ones are hashed while they are copied.
SMALL_FILE_BYTES = 1 << 20
#: A flush of up to this many files fsyncs each (and their folders); more use one ``syncfs``.
FSYNC_EACH_LIMIT = 8
#: ``finish_ingest`` flushes a batch at least this large right away (outside the catalog's
#: write lock); smaller batches wait for the manifest's flush.
EARLY_FLUSH_BYTES = 16 << 20


def _copy_stream(src: BinaryIO, dst: BinaryIO | None, size_hint: int, progress: Progress | None,
                 limit: int | None = None, label: str = "") -> tuple[str, int]:
    """Copy ``src`` into ``dst`` (or only hash it), returning the digest and size of what was
    copied; more than ``limit`` bytes is an ``IntegrityError`` (a blob swapped for something
    endless, such as ``/dev/zero``, is read no further)."""
    digest, size = copy_hashing(src, dst, size_hint, progress, limit=limit)
    if limit is not None and size > limit:
        raise IntegrityError(f"{label or 'blob'} is corrupted: larger than the {limit} bytes recorded for it",
                             [f"{label or 'blob'}: larger than recorded"])
    return digest, size


def _syncfs(path: str) -> bool:
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


class BlobStore:
    """Blobs and manifests under one fsspec root."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None,
                 cache: BlobCache | None = None, *, durable: bool = True,
                 stat_cache: StatCache | None = None) -> None:
        import fsspec  # Deferred for import perf

        uri, options = split_credentials(uri, dict(storage_options or {}))
        self.uri = uri
        try:
            self.fs, root = fsspec.core.url_to_fs(uri, **options)
        except (ImportError, ValueError) as exc:
            raise ConfigurationError(f"cannot open store {uri!r}: {exc}") from exc
        self.root = root.rstrip("/") or root
        self.cache = cache
        #: Flush writes (see the module docstring); False: ``TRACELET_DURABILITY=none``.
        self.durable = durable
        self.stat_cache = stat_cache
        self._pending = _PendingFlush()
        self.is_local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        if self.is_local:
            Path(self.root, "tmp").mkdir(parents=True, exist_ok=True)

    # -- paths ------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> str:
        try:
            _, hexdigest = split_digest(digest)
        except ValueError as exc:
            raise IntegrityError(str(exc), [str(exc)]) from exc
        return f"{self.root}/blobs/{hexdigest[:2]}/{hexdigest}"

    def blob_uri(self, digest: str) -> str:
        """A URI another tool can open the blob with."""
        return self.fs.unstrip_protocol(self.blob_path(digest))

    def manifest_path(self, name: str, version: int) -> str:
        return f"{self.manifest_dir(name)}/{MANIFEST_PREFIX}v{version}.json"

    def manifest_dir(self, name: str) -> str:
        """Where ``name``'s manifests live; a name read back from a damaged catalog is
        re-validated, so it never reaches outside ``manifests/``."""
        try:
            validate_name(name)
        except InvalidArtifactError as exc:
            raise IntegrityError(f"invalid artifact name {name!r} in the catalog", [f"{name!r}: invalid name"]) from exc
        return f"{self.root}/manifests/{name}"

    # -- blobs ------------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        return bool(self.fs.exists(self.blob_path(digest)))

    def put_file(self, source: Path, digest: str, size: int, progress: Progress | None = None) -> bool:
        """Store ``source`` as blob ``digest`` unless present; True if bytes were written."""
        final = self.blob_path(digest)
        if self.is_local:
            try:  # a fresh mtime keeps gc's grace period away from an in-flight log
                os.utime(final)
            except FileNotFoundError:
                with self.storage_errors(f"write of {source.name} to store {self.uri}"):
                    return self._put_local(source, final, digest, size, progress)
            if progress is not None:
                progress(size)
            return False
        if self.fs.exists(final):
            if progress is not None:
                progress(size)
            return False
        return retrying(lambda: self._put_remote(source, final, digest, size, progress),
                        f"upload of {source.name} to {self.uri}")

    def _put_remote(self, source: Path, final: str, digest: str, size: int, progress: Progress | None) -> bool:
        """Stream ``source`` to the object store (multipart for large files, no local copy),
        creating the object only if absent; a file that changed since it was hashed is
        discarded before the upload completes, so no blob is ever stored under a wrong digest."""
        if self.fs.exists(final):
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

    def _put_local(self, source: Path, final: str, digest: str, size: int, progress: Progress | None) -> bool:
        tmp = Path(self.root, "tmp", f"{uuid.uuid4().hex}.blob")
        try:
            with source.open("rb", buffering=0) as src, tmp.open("wb", buffering=0) as dst:
                copied_digest, _ = _copy_stream(src, dst, size, progress)
            if copied_digest != digest:
                raise InvalidArtifactError(f"{source} changed while it was being logged")
            return self._place(tmp, final, size)
        finally:
            tmp.unlink(missing_ok=True)

    def _place(self, tmp: Path, final: str, size: int) -> bool:
        """Rename a finished temp blob to its final name; True if it was new. Blobs are named
        by their content, so replacing a concurrent writer's identical blob is harmless (and
        one rename costs less than link + unlink). The blob is flushed with the rest of its
        batch (``flush``)."""
        os.chmod(tmp, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
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
            if len(files) > FSYNC_EACH_LIMIT and _syncfs(self.root):
                return
            for path in sorted(files):
                with contextlib.suppress(FileNotFoundError):  # removed since (a failed log's blob): nothing to keep
                    fsync_path(path)
            for folder in sorted(folders, key=len, reverse=True):  # deepest first
                with contextlib.suppress(FileNotFoundError):
                    fsync_path(folder)
        except OSError as exc:
            raise StorageError(f"flush of {len(files)} file(s) to {self.root} failed: {exc}") from exc

    # -- ingest: local files into blobs -------------------------------------------------------
    def ingest(self, source: Path, progress: Progress | None = None, *, cached: bool = True,
               rehash: bool = False) -> tuple[str, int, bool]:
        """Store a local file's bytes as a blob, reading the file at most once; returns
        ``(digest, size, written)`` (``written``: the blob was new, not already stored).
        With ``cached``, a file the stat cache knows as unchanged (and whose blob is present)
        is not read at all; ``rehash`` ignores the cache. Call
        ``finish_ingest`` after the last file of a version."""
        before = os.stat(source)
        stat_cache = self.stat_cache if cached else None
        if stat_cache is not None and not rehash:
            known = stat_cache.lookup(source, before)
            if known is not None and self._have_blob(known):
                if progress is not None:
                    progress(before.st_size)
                return known, before.st_size, False
        hashed_at = time.time_ns()
        if self.is_local:
            with self.storage_errors(f"write of {source.name} to store {self.uri}"):
                digest, size, written = self._ingest_local(source, before.st_size, progress)
        else:
            digest, size = hash_file(source)
            written = self.put_file(source, digest, size, progress)
        if stat_cache is not None:
            stat_cache.remember(source, before, digest, hashed_at)
        return digest, size, written

    def finish_ingest(self) -> None:
        """After a version's files: save the stat cache, and flush a large batch of blobs
        now, so the flush under the catalog's write lock (the manifest's) stays short."""
        if self.stat_cache is not None:
            self.stat_cache.save()
        if self._pending.bytes >= EARLY_FLUSH_BYTES or len(self._pending.files) > FSYNC_EACH_LIMIT:
            self.flush()

    def _have_blob(self, digest: str) -> bool:
        """Whether blob ``digest`` is stored; a local one gets a fresh mtime, which keeps
        gc's grace period away from an in-flight log."""
        final = self.blob_path(digest)
        if not self.is_local:
            return bool(self.fs.exists(final))
        try:
            os.utime(final)
        except FileNotFoundError:
            return False
        return True

    def _ingest_local(self, source: Path, size_hint: int, progress: Progress | None) -> tuple[str, int, bool]:
        tmp = Path(self.root, "tmp", f"{uuid.uuid4().hex}.blob")
        placed = False
        try:
            if size_hint <= SMALL_FILE_BYTES:
                data = source.read_bytes()
                digest, size = hash_bytes(data), len(data)
                if progress is not None:
                    progress(size)
                if self._have_blob(digest):
                    return digest, size, False
                with tmp.open("wb") as dst:
                    dst.write(data)
            else:
                with source.open("rb", buffering=0) as src, tmp.open("wb", buffering=0) as dst:
                    digest, size = _copy_stream(src, dst, size_hint, progress)
            written = self._place(tmp, self.blob_path(digest), size)  # a fresh inode: young for gc
            placed = True
            return digest, size, written
        finally:
            if not placed:
                tmp.unlink(missing_ok=True)

    def open_blob(self, digest: str, label: str | None = None) -> BinaryIO:
        """Open a blob for reading; ``label`` (the entry's path) names it in errors. On local
        disk only a regular file is opened (never through a symlink, a device or a FIFO)."""
        path = self.blob_path(digest)
        what = f"{label} ({digest})" if label else digest
        try:
            if self.is_local:
                return _open_regular(path, what)
            handle: BinaryIO = retrying(lambda: self.fs.open(path, "rb"), f"read of blob {digest}")
            return handle
        except FileNotFoundError as exc:
            raise IntegrityError(f"blob of {what} is missing from the store", [f"{what}: missing"]) from exc

    def check_blob(self, digest: str, size: int | None = None) -> str | None:
        """Re-hash a stored blob (reading at most ``size`` bytes, when known); None if it is
        intact, else what is wrong with it."""
        try:
            with self.open_blob(digest) as stream:
                actual, _ = _copy_stream(stream, None, size or _stream_size(stream), None, limit=size)
        except IntegrityError as exc:
            return "missing" if "missing" in str(exc) else str(exc)
        return None if actual == digest else f"content hashes to {actual}"

    def copy_blob_to(self, digest: str, dest: Path, progress: Progress | None = None,
                     label: str | None = None, size: int | None = None) -> None:
        """Write blob ``digest`` to ``dest`` atomically, verifying its digest on the way and
        reading at most ``size`` bytes (the entry's recorded size, when given); ``label``
        (the entry's path in its artifact) names it in errors. Remote blobs go through the
        local cache, so a second read costs no transfer."""
        label = label or dest.name
        with self.storage_errors(f"copy of {label} from store {self.uri} to {dest.parent}"):
            self._copy_blob_to(digest, dest, progress, label, size)

    def _copy_blob_to(self, digest: str, dest: Path, progress: Progress | None, label: str,
                      size: int | None) -> None:
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
        """Every stored blob as ``(digest, modified time or None if unknown, size)``."""
        base = f"{self.root}/blobs"
        if not self.fs.exists(base):
            return
        for path, info in self.fs.find(base, detail=True).items():
            hexdigest = path.rsplit("/", 1)[-1]
            yield f"blake3:{hexdigest}", modified_time(info), int(info.get("size") or 0)

    def delete_blob(self, digest: str) -> None:
        path = self.blob_path(digest)
        if self.is_local:
            Path(path).unlink(missing_ok=True)
            return
        with contextlib.suppress(FileNotFoundError):  # another gc removed it first
            self.fs.rm(path)

    # -- manifests --------------------------------------------------------------------------
    def pending_manifest_path(self, name: str, version: int, token: str | None = None) -> str:
        """Where a version's manifest waits until its catalog row commits: one per writer
        (``token``) when written before the catalog's lock is taken."""
        tag = f".{token}" if token else ""
        return f"{self.manifest_dir(name)}/{MANIFEST_PREFIX}v{version}{tag}{PENDING_SUFFIX}"

    def write_manifest(self, name: str, version: int, manifest: dict[str, Any], token: str | None = None) -> str:
        """Write a version's manifest atomically under a pending name (``promote_manifest``
        renames it once the version committed); returns the digest of its bytes."""
        data = json.dumps(manifest, sort_keys=True, indent=1).encode()
        final = self.pending_manifest_path(name, version, token)
        if self.is_local:
            with self.storage_errors(f"write of manifest {name}:v{version} to store {self.uri}"):
                self.write_small_file(final, data)  # flushed with the version's blobs when durable
        else:
            retrying(lambda: self.fs.pipe_file(final, data), f"write of manifest {name}:v{version}")
        return hash_bytes(data)

    def write_small_file(self, path: str, data: bytes) -> None:
        """Replace a small local file atomically (temp file, rename) and flush it, with every
        write still pending (a version's blobs), before returning."""
        self._make_folders(Path(path).parent)
        tmp = Path(self.root, "tmp", f"{uuid.uuid4().hex}.write")
        try:
            with tmp.open("wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._written(path, len(data))
        self.flush()

    @contextlib.contextmanager
    def storage_errors(self, what: str) -> Iterator[None]:
        """Turn a full disk (or quota, or an I/O error) into a ``StorageError`` saying ``what``
        failed (callers name the store or folder); other ``OSError`` s pass unchanged."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in _TRANSIENT_ERRNOS:
                raise
            raise StorageError(f"{what} failed: {exc.strerror or exc}") from exc

    def promote_manifest(self, name: str, version: int, pending: str | None = None) -> None:
        """Give a committed version's pending manifest (at ``pending``, default the one
        written under the catalog's lock) its final name, what ``reindex`` trusts; a no-op
        when that already happened."""
        pending = pending or self.pending_manifest_path(name, version)
        final = self.manifest_path(name, version)
        try:
            if self.is_local:
                with self.storage_errors(f"rename of manifest {name}:v{version} in store {self.uri}"):
                    os.replace(pending, final)
                return
            data = retrying(lambda: self.fs.cat_file(pending), f"read of manifest {name}:v{version}")
            retrying(lambda: self.fs.pipe_file(final, data), f"write of manifest {name}:v{version}")
            retrying(lambda: self.fs.rm(pending), f"removal of pending manifest {name}:v{version}")
        except FileNotFoundError:
            return

    def read_manifest(self, name: str, version: int, expected_digest: str | None = None) -> dict[str, Any]:
        data: bytes | None = None
        for path in (self.manifest_path(name, version), *self._pending_paths(name, version)):
            try:
                found = retrying(functools.partial(self.fs.cat_file, path), f"read of manifest {name}:v{version}")
            except FileNotFoundError:
                continue
            if data is None or expected_digest is None or hash_bytes(found) == expected_digest:
                data = found
            if expected_digest is None or hash_bytes(data) == expected_digest:
                break
        if data is None:
            raise ArtifactNotFoundError(f"manifest of {name}:v{version} is missing from the store")
        if expected_digest is not None and hash_bytes(data) != expected_digest:
            raise IntegrityError(f"manifest of {name}:v{version} does not match its digest",
                                 [f"{name}:v{version} manifest: digest mismatch"])
        try:
            return json.loads(data)
        except ValueError as exc:
            raise IntegrityError(f"manifest of {name}:v{version} is not valid JSON",
                                 [f"{name}:v{version} manifest: unreadable"]) from exc

    def discard_manifest(self, path: str) -> None:
        """Remove a pending manifest that will never be promoted (best effort: gc removes
        what is left)."""
        with contextlib.suppress(OSError):
            self.fs.rm(path)

    def _pending_paths(self, name: str, version: int) -> list[str]:
        """The pending manifests of ``name:vN`` (a crash before promotion leaves them)."""
        prefix = f"{MANIFEST_PREFIX}v{version}."
        try:
            listed = self.fs.ls(self.manifest_dir(name), detail=False)
        except FileNotFoundError:
            return []
        return sorted(str(p) for p in listed
                      if str(p).rsplit("/", 1)[-1].startswith(prefix) and str(p).endswith(PENDING_SUFFIX))

    def iter_manifests(self, pending: bool = False) -> Iterator[tuple[str, int, str]]:
        """Every manifest (of a committed version, or with ``pending`` of a version whose
        commit was never seen) as ``(name, version, path)``."""
        base = f"{self.root}/manifests"
        if not self.fs.exists(base):
            return
        suffix = PENDING_SUFFIX if pending else ".json"
        for path in self.fs.find(base):
            relative = path[len(base) + 1:]
            name, _, filename = relative.rpartition("/")
            if not (filename.startswith(MANIFEST_PREFIX + "v") and filename.endswith(suffix)):
                continue
            number = filename[len(MANIFEST_PREFIX) + 1:-len(suffix)]
            if pending:
                number = number.split(".", 1)[0]  # @v<N>.pending or @v<N>.<token>.pending
            if number.isascii() and number.isdigit() and name:
                yield name, int(number), path

    def read_manifest_at(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    def clean_tmp(self, older_than: float) -> list[str]:
        """Remove leftovers of killed writers from ``tmp/`` (local stores only)."""
        removed: list[str] = []
        if not self.is_local:
            return removed
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


#: Local filesystem errors that are the environment's, not the caller's: no space, quota, I/O.
_TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})
_TRANSIENT_ATTEMPTS = 4
_TRANSIENT_FIRST_DELAY = 0.2


def retrying(operation: Callable[[], Any], what: str, attempts: int = _TRANSIENT_ATTEMPTS) -> Any:
    """Run ``operation``, retrying transient storage errors (timeouts, connection resets,
    5xx answers) with exponential backoff; a persistent one becomes ``StorageError``."""
    delay = _TRANSIENT_FIRST_DELAY
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError):
            raise
        except (OSError, TimeoutError, ConnectionError) as exc:
            if attempt == attempts:
                raise StorageError(f"{what} failed after {attempts} attempts: {exc}") from exc
            time.sleep(delay)  # backoff before the next attempt
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def split_credentials(uri: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Move ``user:secret@`` out of a store URI into fsspec options, so the URI that tracelet
    keeps (and shows, and records) never carries it."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri, options
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, secret = userinfo.partition(":")
    key_name, secret_name = ("key", "secret") if parts.scheme in ("s3", "s3a") else ("username", "password")
    options.setdefault(key_name, unquote(user))
    if secret:
        options.setdefault(secret_name, unquote(secret))
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)), options


def _temp_name(name: str) -> str:
    """A hidden temp name beside ``name`` that stays short whatever ``name``'s length (the
    filesystem's per-segment limit applies to it too)."""
    return f".{name.encode()[:40].decode(errors='ignore')}.{uuid.uuid4().hex[:16]}.part"


def _reader(path: Path) -> Callable[[], BinaryIO]:
    return lambda: path.open("rb")


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


def _verified_copy(open_source: Callable[[], BinaryIO], digest: str, dest: Path,
                   progress: Progress | None, label: str, size: int | None = None) -> None:
    """Copy a blob's bytes (at most ``size``, when known) to ``dest`` through a temp file,
    renamed into place only if the bytes hash to ``digest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(_temp_name(dest.name))
    try:
        with open_source() as src, tmp.open("wb", buffering=0) as dst:
            actual, _ = _copy_stream(src, dst, size or _stream_size(src), progress, limit=size, label=label)
        if actual != digest:
            raise IntegrityError(
                f"{label} is corrupted: blob {digest} hashes to {actual}",
                [f"{label}: expected {digest}, got {actual}"],
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


class BlobCache:
    """Verified local copies of remote blobs, bounded in bytes; least recently used go first.

    Safe to share between processes: entries appear by atomic rename and a reader that loses
    an entry to eviction simply fetches it again.
    """

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        (root / "tmp").mkdir(parents=True, exist_ok=True)

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


def _stream_size(stream: Any) -> int:
    """The size of an open file (local or fsspec), or 0 when it cannot tell."""
    try:
        return os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, ValueError, TypeError):
        size = getattr(stream, "size", None)
        return size if isinstance(size, int) else 0


def _discard(handle: Any) -> None:
    """Abandon an unfinished upload (multipart uploads are aborted, nothing is created)."""
    discard = getattr(handle, "discard", None)
    if callable(discard):
        discard()
        handle.closed = True  # fsspec would otherwise try to commit the discarded buffer on __del__
    else:
        handle.close()


def modified_time(info: dict[str, Any]) -> float | None:
    """When a file was last written, from an fsspec ``info`` dict; ``None`` when the
    filesystem does not say (then it must be treated as young, never as old)."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        value = info.get(key)
        if value is None or value == "":
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return None
