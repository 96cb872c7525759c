"""OpenLineage export through the delivery outbox (``TRACELET_OPENLINEAGE``), SDK-free.

With the setting on, every committed version gets one ``openlineage`` delivery, whatever the
type routing says, recorded in the commit's transaction; it is delivered right after the
commit within ``TRACELET_BACKEND_TIMEOUT``. A failure (a server that does not answer, the
extra not installed, no transport configured) never fails the log: the delivery stays in the
outbox and ``tracelet sync`` delivers it later, once. The events themselves are built in
``tracelet_core.backends.openlineage``, imported only when one is sent.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import TYPE_CHECKING

from ._backends import INSTALL_HINTS, ArtifactResult, deliver, resolve_backend
from ._catalog import DeliverySpec
from ._errors import ConfigurationError, TraceletError

if TYPE_CHECKING:
    from ._logged import LoggedArtifact
    from ._settings import TraceletSettings
    from ._store import ArtifactStore

#: The backend name of the export in the outbox (``tracelet_core.backends.openlineage``).
LINEAGE_BACKEND = "openlineage"

logger = logging.getLogger("tracelet.openlineage")


def lineage_deliveries(settings: TraceletSettings) -> list[DeliverySpec]:
    """The outbox row every committed version gets while the export is on."""
    return [DeliverySpec(backend=LINEAGE_BACKEND)] if settings.openlineage else []


def export_after_commit(store: ArtifactStore, logged: LoggedArtifact) -> ArtifactResult | None:
    """Deliver the pending export of a version just committed (none if the export is off or
    the version's event was delivered before); the outcome is recorded in the outbox."""
    if not store.settings.openlineage:
        return None
    try:
        rows = store.catalog.deliveries(version_id=logged._record.id, backend=LINEAGE_BACKEND)
        if not rows or rows[0].status == "delivered":
            return None
        try:
            backend = resolve_backend(LINEAGE_BACKEND)
        except ConfigurationError as exc:
            result = ArtifactResult(backend=LINEAGE_BACKEND, ok=False, error=f"ConfigurationError: {exc}")
        else:
            result = deliver(backend, logged, store.settings.backend_timeout)
        store.record_delivery(logged, result)
    except TraceletError as exc:  # the version is committed: the outbox row stays for sync
        logger.warning("OpenLineage export of %s is pending (run `tracelet sync` later): %s", logged.ref, exc)
        return None
    if not result.ok:
        logger.warning("OpenLineage export of %s is pending (run `tracelet sync` later): %s",
                       logged.ref, result.error)
    return result


def exporter() -> ModuleType:
    """``tracelet_core.backends.openlineage`` (which imports the OpenLineage client), or a
    ``ConfigurationError`` saying what to install."""
    try:
        return importlib.import_module("tracelet_core.backends.openlineage")  # Deferred: the client
    except ImportError as exc:
        raise ConfigurationError(f"OpenLineage export needs the OpenLineage client ({exc}): "
                                 f"{INSTALL_HINTS[LINEAGE_BACKEND]}") from exc
