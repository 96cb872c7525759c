"""``BlobStore``: the blob store's one interface, and the logic both kinds share.

Layout under the store root::

    blobs/ab/<blake3 hex>             immutable file contents, named by digest
    manifests/<name>/@v<N>.json       one JSON manifest per version (rebuilds a lost catalog)
    manifests/<name>/@v<N>.pending    a manifest written before its commit; renamed to
                                      @v<N>.json once the version committed (gc does it
                                      after a crash, or removes it if no version committed)
    manifests/<name>/@aliases.json    the alias journal: each alias's target (and previous one)
    tmp/                              in-flight writes (local disk), renamed into place

Two kinds implement it: ``LocalBlobStore`` (``_blobs_local``: os calls, a temp folder,
batched flushes) and ``FsspecBlobStore`` (``_blobs_fsspec``: object stores, create-if-absent
PUTs, a local cache for reads); ``open_blob_store`` (``_blobstore``) picks one from the URI.
This module holds what does not depend on the kind: paths, digests, the manifest and
journal JSON, the stat-cache skip of ``ingest``, and verified copies out of the store. A
subclass supplies the primitives (marked abstract below): storing and opening blobs, and
reading, writing, listing and removing the small files under ``manifests/``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit, urlunsplit

from ._errors import ArtifactNotFoundError, IntegrityError, InvalidArtifactError, StorageError
from ._hashing import (
    KERNEL_COPY_AVAILABLE,
    KERNEL_COPY_MIN_BYTES,
    copy_hashing,
    hash_bytes,
    kernel_copy_hashing,
    split_digest,
)
from ._names import validate_name
from ._statcache import StatCache

MANIFEST_PREFIX = "@"
#: A manifest written before its version's commit carries this suffix until the commit is seen.
PENDING_SUFFIX = ".pending"
#: The alias journal's file name in a name's manifest folder.
ALIAS_JOURNAL = f"{MANIFEST_PREFIX}aliases.json"
#: The tombstone file's name in a name's manifest folder: its deleted versions.
TOMBSTONES = f"{MANIFEST_PREFIX}tombstones.json"
Progress = Callable[[int], None]

#: Local filesystem errors that are the environment's, not the caller's: no space, quota, I/O.
_TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})
_TRANSIENT_ATTEMPTS = 4
_TRANSIENT_FIRST_DELAY = 0.2


class BlobStore(ABC):
    """Blobs, manifests and alias journals under one root (see the module docstring)."""

    def __init__(self, uri: str, root: str, *, cache_dir: Path, durable: bool = True) -> None:
        #: The store's URI as tracelet records and shows it (never with credentials).
        self.uri, self.root = uri, root
        #: This machine's folder for the store's caches: the stat cache (unchanged files are
        #: not read again), and a remote store's blob cache.
        self.cache_dir = cache_dir
        self.stat_cache: StatCache | None = StatCache(cache_dir / "statcache.db")
        #: Flush writes before a version commits; False: ``TRACELET_DURABILITY=none``.
        self.durable = durable

    @property
    def default_catalog_url(self) -> str | None:
        """The catalog a store uses when none is configured (a local store's own SQLite
        file), or ``None`` where one must be configured."""
        return None

    # -- paths ------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> str:
        try:
            _, hexdigest = split_digest(digest)
        except ValueError as exc:
            raise IntegrityError(str(exc), [str(exc)]) from exc
        return f"{self.root}/blobs/{hexdigest[:2]}/{hexdigest}"

    @abstractmethod
    def blob_uri(self, digest: str) -> str:
        """A URI another tool can open the blob with."""

    def linkable_blob(self, digest: str) -> Path | None:
        """A local file holding blob ``digest`` that may be hard-linked (never written
        through), or ``None`` where blobs are not local files."""
        return None

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

    def pending_manifest_path(self, name: str, version: int, token: str | None = None) -> str:
        """Where a version's manifest waits until its catalog row commits: one per writer
        (``token``) when written before the catalog's lock is taken."""
        tag = f".{token}" if token else ""
        return f"{self.manifest_dir(name)}/{MANIFEST_PREFIX}v{version}{tag}{PENDING_SUFFIX}"

    # -- blobs: what a kind supplies ----------------------------------------------------------
    @abstractmethod
    def has_blob(self, digest: str) -> bool:
        """Whether blob ``digest`` is stored."""

    def _have_blob(self, digest: str) -> bool:
        """``has_blob`` for a blob a log is about to re-use (a local store also keeps it young
        for gc)."""
        return self.has_blob(digest)

    @abstractmethod
    def put_file(self, source: Path, digest: str, size: int, progress: Progress | None = None) -> bool:
        """Store ``source`` (already hashed to ``digest``) as a blob unless present; True if
        bytes were written. A file that changed since it was hashed is refused
        (``InvalidArtifactError``) and leaves no blob."""

    @abstractmethod
    def _ingest_new(self, source: Path, size_hint: int, progress: Progress | None) -> tuple[str, int, bool]:
        """Hash and store a file the stat cache did not vouch for: ``(digest, size, written)``."""

    @abstractmethod
    def open_blob(self, digest: str, label: str | None = None) -> BinaryIO:
        """Open a blob for reading; ``label`` (the entry's path) names it in errors; a missing
        blob is an ``IntegrityError``."""

    @abstractmethod
    def iter_blobs(self) -> Iterator[tuple[str, float | None, int]]:
        """Every stored blob as ``(digest, modified time or None if unknown, size)``."""

    @abstractmethod
    def delete_blob(self, digest: str) -> None:
        """Remove a blob (gone already is fine: another gc removed it first)."""

    def flush(self) -> None:
        """Make everything written since the last flush durable (a no-op where each write is)."""
        return

    def clean_tmp(self, older_than: float) -> list[str]:
        """Remove leftovers of killed writers older than ``older_than`` seconds; what was
        removed (stores without a temp folder have none)."""
        return []

    # -- small files under manifests/: what a kind supplies ----------------------------------
    @abstractmethod
    def _write_small(self, path: str, data: bytes, what: str) -> None:
        """Replace a small file atomically and durably (when durable) before returning;
        ``what`` names it in errors."""

    @abstractmethod
    def _read_small(self, path: str) -> bytes:
        """A small file's bytes (``FileNotFoundError`` when absent)."""

    @abstractmethod
    def _list_files(self, folder: str, recursive: bool) -> list[str]:
        """The files in ``folder`` (with ``recursive``, below it), sorted; empty if absent."""

    @abstractmethod
    def _modified(self, path: str) -> float | None:
        """When ``path`` was last written (``None``: unknown); ``FileNotFoundError`` if absent."""

    def has_small(self, path: str) -> bool:
        """Whether the small file ``path`` exists now (asked of the storage, not a cache)."""
        try:
            self._modified(path)
        except FileNotFoundError:
            return False
        return True

    @abstractmethod
    def _remove(self, path: str) -> None:
        """Remove a file (``FileNotFoundError`` when absent)."""

    @abstractmethod
    def promote_manifest(self, name: str, version: int, pending: str | None = None) -> None:
        """Give a committed version's pending manifest (at ``pending``, default the one
        written under the catalog's lock) its final name, what ``reindex`` trusts; a no-op
        when that already happened."""

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
        digest, size, written = self._ingest_new(source, before.st_size, progress)
        if stat_cache is not None:
            stat_cache.remember(source, before, digest, hashed_at)
        return digest, size, written

    def finish_ingest(self) -> None:
        """After a version's files: save the stat cache (a local store may also flush a
        large batch of blobs now, outside the catalog's write lock)."""
        if self.stat_cache is not None:
            self.stat_cache.save()

    # -- reading blobs ------------------------------------------------------------------------
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
        (the entry's path in its artifact) names it in errors."""
        label = label or dest.name
        with storage_errors(f"copy of {label} from store {self.uri} to {dest.parent}"):
            self._copy_blob_to(digest, dest, progress, label, size)

    def _copy_blob_to(self, digest: str, dest: Path, progress: Progress | None, label: str,
                      size: int | None) -> None:
        _verified_copy(functools.partial(self.open_blob, digest, label), digest, dest, progress, label, size)

    # -- manifests ----------------------------------------------------------------------------
    def write_manifest(self, name: str, version: int, manifest: dict[str, Any], token: str | None = None) -> str:
        """Write a version's manifest atomically under a pending name (``promote_manifest``
        renames it once the version committed); returns the digest of its bytes. Durable
        (with every write still pending: the version's blobs) when it returns."""
        data = json.dumps(manifest, sort_keys=True, indent=1).encode()
        self._write_small(self.pending_manifest_path(name, version, token), data,
                          f"manifest {name}:v{version} to store {self.uri}")
        return hash_bytes(data)

    def read_manifest(self, name: str, version: int, expected_digest: str | None = None) -> dict[str, Any]:
        """A version's manifest (its final one, else a pending one: a crash before promotion
        leaves it), checked against ``expected_digest`` when given."""
        data: bytes | None = None
        for path in (self.manifest_path(name, version), *self._pending_paths(name, version)):
            try:
                found = retrying(functools.partial(self._read_small, path), f"read of manifest {name}:v{version}")
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
            self._remove(path)

    def _pending_paths(self, name: str, version: int) -> list[str]:
        """The pending manifests of ``name:vN`` (a crash before promotion leaves them)."""
        prefix = f"{MANIFEST_PREFIX}v{version}."
        return [p for p in self._list_files(self.manifest_dir(name), recursive=False)
                if p.rsplit("/", 1)[-1].startswith(prefix) and p.endswith(PENDING_SUFFIX)]

    def iter_manifests(self, pending: bool = False) -> Iterator[tuple[str, int, str]]:
        """Every manifest (of a committed version, or with ``pending`` of a version whose
        commit was never seen) as ``(name, version, path)``."""
        base = f"{self.root}/manifests"
        suffix = PENDING_SUFFIX if pending else ".json"
        for path in self._list_files(base, recursive=True):
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
        """The bytes of the manifest at ``path`` (as ``iter_manifests`` names it)."""
        return self._read_small(path)

    def collect_manifest(self, path: str, cutoff: float, *, dry_run: bool) -> bool:
        """Whether the stray manifest at ``path`` was last written before ``cutoff`` (an
        unknown time is young); unless ``dry_run`` such a manifest is removed."""
        try:
            written = self._modified(path)
        except FileNotFoundError:
            return False
        if written is None or written > cutoff:
            return False
        if not dry_run:
            with contextlib.suppress(FileNotFoundError):
                self._remove(path)
        return True

    # -- the alias journal --------------------------------------------------------------------
    def write_alias_journal(self, name: str, journal: dict[str, Any]) -> None:
        """Replace ``name``'s alias journal (a JSON object) atomically and durably."""
        data = json.dumps(journal, sort_keys=True).encode()
        self._write_small(f"{self.manifest_dir(name)}/{ALIAS_JOURNAL}", data, f"the alias journal of {name}")

    def read_alias_journal(self, name: str) -> Any:
        """``name``'s alias journal as parsed JSON, ``None`` when there is none; a corrupt
        one raises ``ValueError``."""
        try:
            data = self._read_small(f"{self.manifest_dir(name)}/{ALIAS_JOURNAL}")
        except FileNotFoundError:
            return None
        return json.loads(data)

    # -- tombstones (deleted versions) ----------------------------------------------------------
    def write_tombstones(self, name: str, tombstones: list[dict[str, Any]], *, replace: bool = False) -> None:
        """Add deleted versions of ``name`` (``{"version", "digest", "deleted_at", "reason"}``
        each) to its tombstone file (or, with ``replace``, make them its whole content),
        atomically and durably; ``reindex`` reads it back. The caller holds the catalog's lock
        on ``name`` (no two writers merge at once)."""
        merged = {} if replace else {str(t["version"]): t for t in self.read_tombstones(name)}
        merged.update((str(t["version"]), t) for t in tombstones)
        data = json.dumps({"format": 1, "deleted": [merged[k] for k in sorted(merged, key=int)]},
                          sort_keys=True).encode()
        self._write_small(f"{self.manifest_dir(name)}/{TOMBSTONES}", data, f"the tombstones of {name}")

    def read_tombstones(self, name: str) -> list[dict[str, Any]]:
        """``name``'s deleted versions as written by ``write_tombstones`` (none: ``[]``); a
        corrupt file raises ``ValueError``."""
        try:
            data = self._read_small(f"{self.manifest_dir(name)}/{TOMBSTONES}")
        except FileNotFoundError:
            return []
        parsed = json.loads(data)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("deleted"), list):
            raise ValueError(f"the tombstone file of {name} is not a tombstone list")
        return list(parsed["deleted"])

    # -- tags and alias history ----------------------------------------------------------------
    def write_labels(self, name: str, labels: dict[str, Any]) -> None:
        """Replace ``name``'s labels file (its versions' tags and its alias history, as
        ``Catalog.labels_of`` reads them) atomically and durably; ``reindex`` reads it back."""
        self._write_small(f"{self.manifest_dir(name)}/{MANIFEST_PREFIX}labels.json",
                          json.dumps(labels, sort_keys=True).encode(), f"the labels of {name}")

    def read_labels(self, name: str) -> dict[str, Any] | None:
        """``name``'s labels as ``write_labels`` wrote them (none: ``None``); a corrupt file
        raises ``ValueError``."""
        try:
            data = self._read_small(f"{self.manifest_dir(name)}/{MANIFEST_PREFIX}labels.json")
        except FileNotFoundError:
            return None
        parsed = json.loads(data)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("alias_history", []), list):
            raise ValueError(f"the labels file of {name} is not a labels record")
        return parsed

    # -- quarantine marks ----------------------------------------------------------------------
    def write_quarantine_marks(self, name: str, marks: list[dict[str, Any]]) -> None:
        """Replace ``name``'s quarantine marks (``{"version", "digest", "source", "reason",
        "at"}`` each) atomically and durably; ``reindex`` reads them back."""
        data = json.dumps({"format": 1, "quarantined": marks}, sort_keys=True).encode()
        self._write_small(f"{self.manifest_dir(name)}/{MANIFEST_PREFIX}quarantine.json", data,
                          f"the quarantine marks of {name}")

    def read_quarantine_marks(self, name: str) -> list[dict[str, Any]]:
        """``name``'s quarantine marks as ``write_quarantine_marks`` wrote them (none: ``[]``);
        a corrupt file raises ``ValueError``."""
        try:
            data = self._read_small(f"{self.manifest_dir(name)}/{MANIFEST_PREFIX}quarantine.json")
        except FileNotFoundError:
            return []
        parsed = json.loads(data)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("quarantined"), list):
            raise ValueError(f"the quarantine file of {name} is not a list of marks")
        return list(parsed["quarantined"])


# -- helpers both kinds use -------------------------------------------------------------------
def _copy_stream(src: BinaryIO, dst: BinaryIO | None, size_hint: int, progress: Progress | None,
                 limit: int | None = None, label: str = "") -> tuple[str, int]:
    """Copy ``src`` into ``dst`` (or only hash it), returning the digest and size of what was
    copied; more than ``limit`` bytes is an ``IntegrityError`` (a blob swapped for something
    endless, such as ``/dev/zero``, is read no further)."""
    src_fd, dst_fd = _file_descriptor(src), _file_descriptor(dst)
    # local to local (the target opened readable): copied in the kernel, hashed beside it
    if KERNEL_COPY_AVAILABLE and src_fd is not None and dst_fd is not None and dst is not None \
            and dst.readable() and size_hint >= KERNEL_COPY_MIN_BYTES:
        digest, size = kernel_copy_hashing(src_fd, dst_fd, size_hint, progress, limit=limit)
    else:
        digest, size = copy_hashing(src, dst, size_hint, progress, limit=limit)
    if limit is not None and size > limit:
        raise IntegrityError(f"{label or 'blob'} is corrupted: larger than the {limit} bytes recorded for it",
                             [f"{label or 'blob'}: larger than recorded"])
    return digest, size


@contextlib.contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Turn a full disk (or quota, or an I/O error) into a ``StorageError`` saying ``what``
    failed (callers name the store or folder); other ``OSError`` s pass unchanged."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _TRANSIENT_ERRNOS:
            raise
        raise StorageError(f"{what} failed: {exc.strerror or exc}") from exc


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


def _verified_copy(open_source: Callable[[], BinaryIO], digest: str, dest: Path,
                   progress: Progress | None, label: str, size: int | None = None) -> None:
    """Copy a blob's bytes (at most ``size``, when known) to ``dest`` through a temp file,
    renamed into place only if the bytes hash to ``digest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(_temp_name(dest.name))
    try:
        with open_source() as src, tmp.open("w+b", buffering=0) as dst:  # readable: hashed as written
            actual, _ = _copy_stream(src, dst, size or _stream_size(src), progress, limit=size, label=label)
        if actual != digest:
            raise IntegrityError(
                f"{label} is corrupted: blob {digest} hashes to {actual}",
                [f"{label}: expected {digest}, got {actual}"],
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _file_descriptor(stream: Any) -> int | None:
    """The OS file descriptor under a local file object, or ``None`` (remote streams)."""
    if stream is None:
        return None
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError, TypeError):  # io.UnsupportedOperation is an OSError
        return None
    return fd if isinstance(fd, int) else None


def _stream_size(stream: Any) -> int:
    """The size of an open file (local or fsspec), or 0 when it cannot tell."""
    try:
        return os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, ValueError, TypeError):
        size = getattr(stream, "size", None)
        return size if isinstance(size, int) else 0


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
