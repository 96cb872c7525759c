"""From a task's return value to a committed version, delivered to its backends.

Everything storage-related is the core's: this module only decides what to log (the value through
the core's ``add_value``, the rule Dagster outputs follow too, or a ``TraceletArtifact`` as is),
with which producer, inputs, aliases and idempotency key (scoped to the content: the store folds
the version digest into it, so a retry that returns the same value finds its version). The commit
and its deliveries go through the core's delivery module (``log_and_deliver``, with the backends'
runs opened on the task run): routing, the durable delivery outbox and ``tracelet sync`` retries
are the core's too; a failing backend never fails the log. Where the flow run's engine runs in
this process, the deliveries are queued on the core's background worker (``Outcome.delivered``)
and flushed before the flow run ends (``_flow_end``): the task returns once its version is
committed.

Inside a Prefect transaction the version is committed at once (versions are immutable) but its
aliases are not moved: ``staged_aliases`` are left to ``_transactions`` for the commit.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

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
from tracelet_core._delivery import (
    Deferred,
    LogResult,
    configured_backends,
    log_and_deliver,
    log_and_deliver_later,
    started,
)
from tracelet_core._store import content_scoped_key
from tracelet_core._trackers import failure
from tracelet_core._values import add_value

from ._runs import TaskRun

#: How a task picks a format, named in the refusal of a value only pickle can hold.
SERIALIZER_HINT = "return a TraceletArtifact built with add_object(value, name, serializer=...)"


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
    #: the backends whose deliveries run on the background worker (results in ``delivered``)
    queued: tuple[str, ...] = ()
    delivered: Future[LogResult] | None = field(default=None, compare=False)

    def settled(self) -> Outcome:
        """This outcome with the queued deliveries' results (waits for them: call it on the
        background worker, after the delivery job, or once the run's work is flushed)."""
        if self.delivered is None:
            return self
        try:
            results = dict(self.delivered.result())
        except Exception as exc:  # noqa: BLE001 - a delivery job that broke: every queued one failed
            results = {name: failure(name, exc, version=self.logged.ref) for name in self.queued}
        return dataclasses.replace(self, deliveries=results, queued=(), delivered=None)

    @property
    def changed(self) -> bool:
        """Worth a Prefect artifact and an event: a new version, or aliases moved onto one."""
        return self.created or bool(self.aliases_set)


def build_artifact(value: Any, name: str | None, artifact_type: ArtifactType, fallback_name: str,
                   description: str | None = None, *, allow_pickle: bool | None = None) -> TraceletArtifact:
    """The version a task's return value becomes: the artifact it returned, or the value stored
    by the core's one rule (``add_value``: models in their framework's format, paths as files,
    plain values with the safest serializer; pickle only where allowed)."""
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
    add_value(artifact, value, allow_pickle=allow_pickle, serializer_hint=SERIALIZER_HINT)
    return artifact


def resolve_backends(names: Sequence[str] | None, settings: TraceletSettings) -> dict[str, Backend]:
    """Backend instances by name: ``names``, or ``TRACELET_BACKENDS`` when ``None``."""
    return configured_backends(list(settings.backends) if names is None else list(names))


def commit(store: ArtifactStore, artifact: TraceletArtifact, *, run: TaskRun, inputs: Sequence[str],
           aliases: Sequence[str], backends: dict[str, Backend], stage: bool = False,
           scope: str | None = None) -> Outcome:
    """Log ``artifact`` for ``run`` and deliver it to the backends it routes to; with ``stage``,
    its aliases are only recorded in the outcome, for the transaction's commit. With ``scope``
    (the flow run that flushes it, ``_flow_end``) the deliveries are queued on the background
    worker and the outcome returns once the version is committed."""
    staged = tuple(aliases) if stage else ()
    aliases = () if stage else aliases
    producer = run.producer
    key = None
    if producer is not None and run.retries > 0:
        key = content_scoped_key(f"prefect:{producer.step}")
    if producer is None and not backends:  # no task run (``task.fn(...)``): no producer
        results = LogResult(store.log(artifact, inputs=inputs, aliases=aliases))
    elif scope is not None and producer is not None and backends:
        results = log_and_deliver_later(store, artifact, backends, scope=scope, producer=producer,
                                        run_name=run.task_name, inputs=inputs, aliases=aliases, idempotency_key=key)
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
    deferred = results if isinstance(results, Deferred) else None
    return Outcome(logged=logged, created=logged.created or earlier, aliases_set=tuple(aliases),
                   deliveries=dict(results), staged_aliases=staged,
                   queued=deferred.queued if deferred else (), delivered=deferred.delivered if deferred else None)


def set_aliases(store: ArtifactStore, logged: LoggedArtifact, aliases: Sequence[str], *,
                stage: bool = False) -> Outcome:
    """Move ``aliases`` onto an existing version (with ``stage``: leave them to the commit)."""
    if stage:
        return Outcome(logged=logged, created=False, staged_aliases=tuple(aliases))
    for alias in aliases:
        logged = store.set_alias(logged.ref, alias)
    return Outcome(logged=logged, created=False, aliases_set=tuple(aliases))
