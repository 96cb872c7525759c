"""Committing a version: straight to the store, or through an ``Experiment`` when trackers
are configured.

Without backends, ``ArtifactStore.log`` gets the producer, the exact inputs, the partition and
an idempotency key (a retried step gets the version it already logged). With backends, core's
``Experiment`` (whose run is the Dagster step) does the same commit plus routing and delivery
(one result per tracker; a failing tracker never fails the local commit).
"""

from __future__ import annotations

from collections.abc import Sequence

from tracelet_core import ArtifactResult, ArtifactStore, Experiment, LoggedArtifact, RunInfo, TraceletArtifact


def commit(store: ArtifactStore, artifact: TraceletArtifact, *, producer: RunInfo, inputs: Sequence[str],
           aliases: Sequence[str], idempotency_key: str | None, partition: str | None,
           backends: Sequence[str]) -> tuple[LoggedArtifact, dict[str, ArtifactResult]]:
    """Log ``artifact``; the version and, when backends are configured, each delivery's result."""
    if not backends:
        logged = store.log(artifact, producer=producer, inputs=inputs, aliases=aliases,
                           idempotency_key=idempotency_key, partition=partition)
        return logged, {}
    with Experiment(producer.name or producer.run_id, backend=list(backends), store=store, run=producer) as experiment:
        results = experiment.log_artifact(artifact, aliases=aliases, inputs=inputs,
                                          idempotency_key=idempotency_key, partition=partition)
    return store.get(artifact.name, results["local"].version), results
