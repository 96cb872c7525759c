"""Which store a task logs to, resolved in the process that runs the task.

Prefect tasks may run in other processes (a Dask worker, a result read back from storage), so
nothing here holds a store across a process boundary: a ``StoreSpec`` travels as its URI and
catalog URL and is reopened on the other side through ``ArtifactStore.shared``, the core's one
store cache (one store per process, URI, catalog URL and ``TRACELET_*`` environment). A
``StoreSpec`` without a URI is resolved from ``TRACELET_STORE_URI`` / ``TRACELET_CATALOG_URL``
in the process that runs the task. Versions themselves pickle the
same way (``LoggedArtifact.__reduce__`` in the core), so task results cross to Dask workers
and back.

Opening is cheap after the first time: the core's cache keys the store by the ``TRACELET_*``
environment without re-reading the settings, so a task run neither re-reads them nor reopens a
store; changing a ``TRACELET_*`` variable (dev -> prod) resolves afresh.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from tracelet_core import ArtifactStore


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
        return ArtifactStore.shared(self.uri, self.catalog_url)

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
