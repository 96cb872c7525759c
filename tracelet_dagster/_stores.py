"""The store a resource or IO manager talks to: opened on first use, once per instance.

Dagster builds resources per run (in-process executor) or per step process (multiprocess
executor), so each process opens its own store from the resource's config; nothing is shared
through globals. ``ArtifactStore.open`` with ``None`` falls back to ``TRACELET_STORE_URI``
and ``TRACELET_CATALOG_URL``.
"""

from __future__ import annotations

import threading
from typing import Any

from tracelet_core import ArtifactStore

from ._reads import STEP_READS


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


class StoreAccess:
    """What the IO manager and the resource share: ``store`` from their ``store_uri`` /
    ``catalog_url`` config (a ``StoreSlot`` in ``_slot``), closed with the run's reads after
    execution."""

    store_uri: str | None
    catalog_url: str | None
    _slot: StoreSlot

    @property
    def store(self) -> ArtifactStore:
        """This process's store, opened from the config on first use."""
        return self._slot.get(self.store_uri, self.catalog_url)

    def teardown_after_execution(self, context: Any) -> None:
        if context.run is not None:
            STEP_READS.forget_run(context.run.run_id)
        self._slot.close()
