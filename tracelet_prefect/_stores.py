"""Which store a task logs to, opened once per process, and versions that survive pickling.

Prefect tasks may run in other processes (a Dask worker, a result read back from storage), so
nothing here holds a store across a process boundary: a ``StoreSpec`` travels as its URI and
catalog URL and is reopened on the other side, through a per-process cache keyed by the pid,
the URI, the catalog URL and the rest of the ``TRACELET_*`` settings (lock protected). A
``StoreSpec`` without a URI is resolved from ``TRACELET_STORE_URI`` / ``TRACELET_CATALOG_URL``
in the process that runs the task.

``PortableLoggedArtifact`` is a ``LoggedArtifact`` that pickles as its catalog record plus its
store's spec, so task results can cross to Dask workers and back. A catalog URL that comes
from the settings is left out of the pickle (it may hold a password): the receiving process
reads its own ``TRACELET_CATALOG_URL``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from tracelet_core import ArtifactStore, LoggedArtifact, TraceletSettings

#: How many stores one process keeps open (settings rarely change inside one process).
MAX_OPEN_STORES = 16

_lock = threading.Lock()
_open: dict[tuple[int, str | None, str | None, str], ArtifactStore] = {}


def open_store(uri: str | None = None, catalog_url: str | None = None) -> ArtifactStore:
    """The store at ``uri`` (default: ``TRACELET_STORE_URI``), opened once per process."""
    settings = TraceletSettings.load()
    key = (os.getpid(), uri, catalog_url, settings.model_dump_json())
    with _lock:
        store = _open.get(key)
        if store is None:
            store = ArtifactStore.open(uri, catalog_url, settings=settings)
            if len(_open) >= MAX_OPEN_STORES:
                _open.pop(next(iter(_open)))  # the oldest; its users keep their reference
            _open[key] = store
        return store


def shareable_catalog_url(store: ArtifactStore) -> str | None:
    """The catalog URL another process needs to reopen ``store``: ``None`` when it is the one
    the settings give (``TRACELET_CATALOG_URL``, or the SQLite file of a local store), so a
    password in it is never pickled into Dask messages or Prefect's result storage."""
    url = store.catalog.url
    if url == store.settings.catalog_url:
        return None
    if "://" not in store.uri and url == f"sqlite:///{os.path.join(store.uri, 'catalog.db')}":
        return None
    return url


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
            return cls(store.uri, shareable_catalog_url(store), live=store)
        if store is not None and not isinstance(store, (str, os.PathLike)):
            raise TypeError(f"store= takes an ArtifactStore, a path or a URL, not {type(store).__name__}")
        return cls(store)

    def open(self) -> ArtifactStore:
        return self._live if self._live is not None else open_store(self.uri, self.catalog_url)

    def __reduce__(self) -> tuple[Any, ...]:
        # The live store stays behind; the other process reopens it by URI and catalog URL.
        return (StoreSpec, (self.uri, self.catalog_url))

    def __repr__(self) -> str:
        return f"StoreSpec(uri={self.uri!r}, catalog_url={self.catalog_url!r})"


class PortableLoggedArtifact(LoggedArtifact):
    """A ``LoggedArtifact`` that pickles (to a Dask worker, into Prefect's result storage) as
    its catalog record and its store's URI; unpickling reopens the store in that process."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (StoreSpec(self.store.uri, shareable_catalog_url(self.store)), self._record))


def _restore(spec: StoreSpec, record: Any) -> PortableLoggedArtifact:
    return PortableLoggedArtifact(record, spec.open())


def portable(logged: LoggedArtifact) -> LoggedArtifact:
    """``logged`` as a ``PortableLoggedArtifact`` (same record, same store)."""
    if isinstance(logged, PortableLoggedArtifact):
        return logged
    return PortableLoggedArtifact(logged._record, logged.store)
