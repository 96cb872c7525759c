"""Which store a task logs to, resolved in the process that runs the task.

Prefect tasks may run in other processes (a Dask worker, a result read back from storage), so
nothing here holds a store across a process boundary: a ``StoreSpec`` travels as its URI and
catalog URL and is reopened on the other side through ``ArtifactStore.shared`` (one store per
process and settings). A ``StoreSpec`` without a URI is resolved from ``TRACELET_STORE_URI`` /
``TRACELET_CATALOG_URL`` in the process that runs the task. Versions themselves pickle the
same way (``LoggedArtifact.__reduce__`` in the core), so task results cross to Dask workers
and back.

Opening is cheap after the first time: the store a spec resolves to is kept per process and
per ``TRACELET_*`` environment, so a task run neither re-reads the settings nor reopens a
store; changing a ``TRACELET_*`` variable (dev -> prod) resolves afresh.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

from tracelet_core import ArtifactStore

#: (pid, uri, catalog URL, TRACELET_* environment) -> the store it resolved to
_opened: dict[tuple[Any, ...], ArtifactStore] = {}
_opened_lock = threading.Lock()
_MAX_OPENED = 16


def _environment() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("TRACELET_")))


class StoreSpec:
    """Where to log: a live store (used as is in this process), a URI, or the settings."""

    __slots__ = ("_live", "catalog_url", "uri")

    def __init__(self, uri: str | os.PathLike[str] | None = None, catalog_url: str | None = None,
                 live: ArtifactStore | None = None) -> None:
        self.uri = os.fspath(uri) if uri is not None else None
        self.catalog_url = catalog_url
        self._live = live

    @classmethod
    def of(cls, store: ArtifactStore | str | os.PathLike[str] | None) -> StoreSpec:
        if isinstance(store, ArtifactStore):
            return cls(*store.reopen_args(), live=store)
        if store is not None and not isinstance(store, (str, os.PathLike)):
            raise TypeError(f"store= takes an ArtifactStore, a path or a URL, not {type(store).__name__}")
        return cls(store)

    def open(self) -> ArtifactStore:
        if self._live is not None:
            return self._live
        key = (os.getpid(), self.uri, self.catalog_url, _environment())
        store = _opened.get(key)
        if store is None:
            store = ArtifactStore.shared(self.uri, self.catalog_url)
            with _opened_lock:
                if len(_opened) >= _MAX_OPENED:
                    _opened.pop(next(iter(_opened)), None)
                _opened[key] = store
        return store

    def identity(self) -> str:
        """Which store this spec logs to here and now (blob URI and catalog, password masked),
        hashed: part of a tracelet task's cache key."""
        store = self.open()
        return hashlib.sha256(f"{store.uri}\n{store.catalog.url}".encode()).hexdigest()[:32]

    def __reduce__(self) -> tuple[Any, ...]:
        # The live store stays behind; the other process reopens it by URI and catalog URL.
        return (StoreSpec, (self.uri, self.catalog_url))

    def __repr__(self) -> str:
        return f"StoreSpec(uri={self.uri!r}, catalog_url={self.catalog_url!r})"
