"""Open the blob store a store URI names: ``LocalBlobStore`` for a folder, ``FsspecBlobStore``
for any other fsspec URL (S3, GCS, Azure, ``memory://``...).

The interface both implement, and the layout they share, is ``BlobStore`` in ``_blobs_base``;
this module re-exports what the rest of tracelet uses, so callers import from one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._blobs_base import (
    ALIAS_JOURNAL,
    MANIFEST_PREFIX,
    PENDING_SUFFIX,
    BlobStore,
    Progress,
    modified_time,
    retrying,
    split_credentials,
    storage_errors,
)
from ._blobs_fsspec import BlobCache, FsspecBlobStore
from ._blobs_local import LocalBlobStore

__all__ = [
    "ALIAS_JOURNAL",
    "MANIFEST_PREFIX",
    "PENDING_SUFFIX",
    "BlobCache",
    "BlobStore",
    "FsspecBlobStore",
    "LocalBlobStore",
    "Progress",
    "is_local_uri",
    "local_root",
    "modified_time",
    "open_blob_store",
    "retrying",
    "split_credentials",
    "storage_errors",
]


def is_local_uri(uri: str) -> bool:
    """Whether ``uri`` names a local folder (a plain path, ``file://`` or ``local://``)."""
    return "://" not in uri or uri.startswith(("file://", "local://"))


def local_root(uri: str) -> Path:
    """The absolute folder a local store URI names."""
    for prefix in ("file://", "local://"):
        uri = uri.removeprefix(prefix)
    return Path(uri).expanduser().resolve()


def open_blob_store(uri: str, storage_options: dict[str, Any] | None = None, *, durable: bool = True,
                    cache_dir: str | None, cache_max_bytes: int) -> BlobStore:
    """The blob store at ``uri`` (a local folder is created). ``cache_dir`` holds this
    machine's caches (default: ``cache/`` inside a local store, ``~/.cache/tracelet`` for a
    remote one, whose blob cache is bounded by ``cache_max_bytes``)."""
    if is_local_uri(uri):
        root = local_root(uri)
        return LocalBlobStore(root, cache_dir=Path(cache_dir).expanduser() if cache_dir else None,
                              durable=durable)
    folder = Path(cache_dir or "~/.cache/tracelet").expanduser()
    return FsspecBlobStore(uri, storage_options, cache_dir=folder,
                           cache=BlobCache(folder / "blobs", cache_max_bytes), durable=durable)
