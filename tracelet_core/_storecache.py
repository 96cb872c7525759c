"""The one per-process cache of open stores that ``ArtifactStore.shared`` and the adapters use.

Opening a store reads the settings, connects to the catalog and checks the blob store; adapters
(a Prefect task run, a Dagster step, an unpickled ``LoggedArtifact`` in a worker) need the same
store again and again. The cache keys an open store by the process id (a forked child opens its
own), the URI, the catalog URL and the ``TRACELET_*`` environment (changing a setting, dev ->
prod, opens afresh), holds at most ``MAX_SHARED_STORES`` and closes the oldest it drops (users
still holding it keep working: its engine reconnects on demand). Lock protected.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from ._settings import TraceletSettings

#: How many stores one process keeps open through ``ArtifactStore.shared``.
MAX_SHARED_STORES = 16


class _Closable(Protocol):
    def close(self) -> None: ...


StoreT = TypeVar("StoreT", bound=_Closable)
CacheKey = tuple[int, str | None, str | None, tuple[tuple[str, str], ...]]


def tracelet_environment() -> tuple[tuple[str, str], ...]:
    """The ``TRACELET_*`` environment variables (what ``TraceletSettings`` reads), sorted."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith("TRACELET_")))


class StoreCache(Generic[StoreT]):
    """Open stores by (pid, uri, catalog URL, ``TRACELET_*`` environment), bounded, oldest out."""

    def __init__(self, max_open: int = MAX_SHARED_STORES) -> None:
        self._max_open = max_open
        self._lock = threading.Lock()
        self._open: dict[CacheKey, StoreT] = {}

    def get(self, uri: str | None, catalog_url: str | None,
            open_store: Callable[[TraceletSettings], StoreT]) -> StoreT:
        """The store cached for ``uri`` and ``catalog_url`` here and now, opened with
        ``open_store(settings)`` the first time."""
        key: CacheKey = (os.getpid(), uri, catalog_url, tracelet_environment())
        with self._lock:
            store = self._open.get(key)
            if store is None:
                store = open_store(TraceletSettings.load())
                if len(self._open) >= self._max_open:
                    self._open.pop(next(iter(self._open))).close()
                self._open[key] = store
            return store
