"""``openlineage`` as a routed backend: each version it receives as a ``DatasetEvent``.

Routed like a tracker (``Experiment(backend="openlineage")``, ``preferred_backends``), it
describes versions, not runs: each delivered version and each alias move sends the version's
``DatasetEvent`` (namespace = the store, name = the artifact, its facets and aliases), through
the delivery outbox like any tracker. Runs, with their start and end, come from the export
(``TRACELET_OPENLINEAGE=true``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..._trackers import ArtifactResult, Backend
from ._client import open_client, send
from ._events import dataset_event, payload

if TYPE_CHECKING:
    from ..._logged import LoggedArtifact


class OpenLineageBackend(Backend):
    """Sends a version's ``DatasetEvent`` through the configured OpenLineage transport; sending
    it again sends the same event (its time is the version's commit time)."""

    name = "openlineage"

    def log(self, artifact: LoggedArtifact) -> ArtifactResult:
        self._send(artifact, artifact.created_at.timestamp())
        return ArtifactResult(backend=self.name, ok=True, version=artifact.version,
                              uri=f"openlineage:dataset/{artifact.ref}", size_bytes=artifact.size_bytes)

    def set_alias(self, artifact: LoggedArtifact, alias: str) -> None:
        self._send(artifact, time.time())

    def remove_alias(self, artifact: LoggedArtifact, alias: str) -> None:
        self._send(artifact, time.time())

    @staticmethod
    def _send(artifact: LoggedArtifact, at: float) -> None:
        client = open_client(artifact.store.settings.backend_timeout)
        try:
            send(client, payload(dataset_event(artifact, at)), f"the dataset event of {artifact.ref}")
        finally:
            client.close(0)


#: The backend the export's sends are timed under (its name labels the results).
SENDER = OpenLineageBackend()
