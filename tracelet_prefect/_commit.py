"""From a task's return value to a committed version, delivered to its backends.

Everything storage-related is the core's: this module only decides what to log (the value as
one object, a model through ``add_model``, or a ``TraceletArtifact`` as is), with which
producer, inputs, aliases and idempotency key. The commit and its deliveries go through the
core's delivery module (``log_and_deliver``, with the backends' runs opened on the task run):
routing, the durable delivery outbox and ``tracelet sync`` retries are the core's too; a
failing backend never fails the log.

Inside a Prefect transaction the version is committed at once (versions are immutable) but its
aliases are not moved: ``staged_aliases`` are left to ``_transactions`` for the commit.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import blake3

from tracelet_core import (
    ArtifactResult,
    ArtifactStore,
    ArtifactType,
    Backend,
    InvalidArtifactError,
    LoggedArtifact,
    RunInfo,
    TraceletArtifact,
    TraceletSettings,
)
from tracelet_core._delivery import LogResult, configured_backends, log_and_deliver, started

from ._runs import TaskRun

#: Class paths whose instances are logged with ``add_model`` (checked along the MRO, so no
#: framework is imported to recognise one).
MODEL_BASES = frozenset({"torch.nn.modules.module.Module", "sklearn.base.BaseEstimator"})
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Outcome:
    """What one tracelet task run did to the store."""

    logged: LoggedArtifact
    #: whether this task run produced the version (False: identical content existed already)
    created: bool
    aliases_set: tuple[str, ...] = ()
    deliveries: dict[str, ArtifactResult] = field(default_factory=dict)
    #: aliases to move onto the version when the enclosing Prefect transaction commits
    staged_aliases: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Worth a Prefect artifact and an event: a new version, or aliases moved onto one."""
        return self.created or bool(self.aliases_set)


def is_model(value: Any) -> bool:
    return any(f"{k.__module__}.{k.__qualname__}" in MODEL_BASES for k in type(value).__mro__)


def build_artifact(value: Any, name: str | None, artifact_type: ArtifactType, fallback_name: str,
                   description: str | None = None) -> TraceletArtifact:
    """The version a task's return value becomes."""
    if isinstance(value, TraceletArtifact):
        if name is not None and value.name != name:
            raise InvalidArtifactError(
                f"the task returned a TraceletArtifact named {value.name!r} but logs to {name!r}; "
                "drop artifact_name= or build the artifact under that name")
        return value
    if isinstance(value, LoggedArtifact):
        raise TypeError(f"a tracelet task returned the logged version {value.ref}; return the value "
                        "itself (or a TraceletArtifact), or use a plain @task")
    try:
        artifact = TraceletArtifact(name or fallback_name, artifact_type, description)
    except InvalidArtifactError as exc:
        raise InvalidArtifactError(f"{exc} (pass artifact_name= to tracelet_task)") from exc
    if is_model(value):
        return artifact.add_model(value)
    return artifact.add_object(value, "value", "auto")


def fingerprint(artifact: TraceletArtifact) -> str:
    """A hash of the entries' contents, so a retry of the same task run that returns the same
    value finds its earlier version through the idempotency key, and one that returns another
    value does not."""
    digest = blake3.blake3()
    digest.update(json.dumps([artifact.name, artifact.type.value]).encode())
    for staged in sorted(artifact.staged_entries, key=lambda s: s.entry.path):
        entry = staged.entry
        digest.update(json.dumps([entry.path, getattr(entry, "serializer", None), entry.size]).encode())
        if staged.source is None:
            digest.update((entry.digest or "").encode())
            continue
        with open(staged.source, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    for reference in sorted(artifact.references, key=lambda r: r.name):
        digest.update(json.dumps(reference.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()[:32]


def resolve_backends(names: Sequence[str] | None, settings: TraceletSettings) -> dict[str, Backend]:
    """Backend instances by name: ``names``, or ``TRACELET_BACKENDS`` when ``None``."""
    return configured_backends(list(settings.backends) if names is None else list(names))


def commit(store: ArtifactStore, artifact: TraceletArtifact, *, run: TaskRun, inputs: Sequence[str],
           aliases: Sequence[str], backends: dict[str, Backend], stage: bool = False) -> Outcome:
    """Log ``artifact`` for ``run`` and deliver it to the backends it routes to; with ``stage``,
    its aliases are only recorded in the outcome, for the transaction's commit."""
    staged = tuple(aliases) if stage else ()
    aliases = () if stage else aliases
    producer = run.producer
    key = None
    if producer is not None and run.retries > 0:
        key = f"prefect:{producer.step}:{fingerprint(artifact)}"
    if producer is None and not backends:  # no task run (``task.fn(...)``): no producer
        results = LogResult(store.log(artifact, inputs=inputs, aliases=aliases))
    else:
        # without a task run, trackers still need a run: one of its own, as an Experiment's
        maker = producer or RunInfo(orchestrator="tracelet", run_id=uuid.uuid4().hex, name=run.task_name)
        with started(backends, run.task_name, maker.run_id):
            results = log_and_deliver(store, artifact, backends, producer=maker, run_name=run.task_name,
                                      inputs=inputs, aliases=aliases, idempotency_key=key)
    logged = results.logged
    # made by this task run: now, or by an earlier attempt of it (found by the idempotency key)
    made_by = logged.producer
    earlier = key is not None and made_by is not None and producer is not None and made_by.key == producer.key
    return Outcome(logged=logged, created=logged.created or earlier, aliases_set=tuple(aliases),
                   deliveries=dict(results), staged_aliases=staged)


def set_aliases(store: ArtifactStore, logged: LoggedArtifact, aliases: Sequence[str], *,
                stage: bool = False) -> Outcome:
    """Move ``aliases`` onto an existing version (with ``stage``: leave them to the commit)."""
    if stage:
        return Outcome(logged=logged, created=False, staged_aliases=tuple(aliases))
    for alias in aliases:
        logged = store.set_alias(logged.ref, alias)
    return Outcome(logged=logged, created=False, aliases_set=tuple(aliases))
