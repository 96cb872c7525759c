"""The store a resource or IO manager talks to: opened on first use, once per instance.

Dagster builds resources per run (in-process executor) or per step process (multiprocess
executor), so each process opens its own store from the resource's config; nothing is shared
through globals. ``ArtifactStore.open`` with ``None`` falls back to ``TRACELET_STORE_URI``
and ``TRACELET_CATALOG_URL``.
"""

from __future__ import annotations

import threading

from tracelet_core import ArtifactStore


class StoreSlot:
    """A lazily opened ``ArtifactStore``, lock protected."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._store: ArtifactStore | None = None

    def get(self, store_uri: str | None, catalog_url: str | None) -> ArtifactStore:
        with self._lock:
            if self._store is None:
                self._store = ArtifactStore.open(store_uri, catalog_url)
            return self._store

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()
