"""Delivery of committed versions to trackers, always through the catalog's outbox.

One place for the whole flow, in the order a version travels:

- **routing** (:func:`route`): which configured backends receive a version;
- **the commit**: :func:`log_and_deliver` commits a version with one outbox row per routed
  backend (pending, in the commit's transaction, so ``sync`` finds it even if the process dies
  right after), then :func:`deliver_routed` delivers each within ``TRACELET_BACKEND_TIMEOUT``
  (:func:`deliver`) and records the outcome; :func:`log_and_deliver_later` does the same with
  the deliveries on the process's background worker (``_background``), for orchestrator steps
  that return once the version is committed;
- **post-commit exports**: with ``TRACELET_OPENLINEAGE`` on, every commit and alias change is
  handed to the OpenLineage export, which queues and sends run and dataset events of its own
  (``Delivery.after_commit``; ``sync`` sends what is still queued);
- **alias events**: alias moves reach the trackers that hold the version, in order per name and
  tracker (``Delivery.after_alias_change``);
- **retries**: ``Delivery.sync`` retries every pending, failed or unconfirmed row.

One rule everywhere for a backend that is unknown here, cannot start, raises, times out or
answers ``ok=False``: the failure is recorded in the outbox and returned as
``ArtifactResult(ok=False, error=...)`` (``error_type`` keeps the exception's type); it never
fails a commit or an alias change. (``sync`` then also raises ``ConfigurationError`` naming
backends it could not build at all, after delivering everything else: that needs fixing
before a retry can help.)

``ArtifactStore`` holds a :class:`Delivery` as ``store.delivery`` and calls it after a commit
and after an alias change; this module imports the store only for type checking.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import _background as background
from ._catalog import AliasEventRecord, DeliveryRecord, DeliverySpec
from ._errors import BackendError, ConfigurationError
from ._model import ArtifactType, RunInfo
from ._trackers import INSTALL_HINTS, ArtifactResult, Backend, failure, resolve_backend

if TYPE_CHECKING:
    from ._artifact import TraceletArtifact
    from ._logged import LoggedArtifact
    from ._store import ArtifactStore, InputRef

#: The backend name of the OpenLineage export in the outbox (``tracelet_core.backends.openlineage``).
LINEAGE_BACKEND = "openlineage"

logger = logging.getLogger("tracelet.delivery")

# -- routing -----------------------------------------------------------------------------------
#: The default routing table (the Tracelet guide's): type -> preferred backend.
DEFAULT_ROUTES: dict[ArtifactType, str] = {
    ArtifactType.MODEL: "mlflow",
    ArtifactType.CHECKPOINT: "mlflow",
    ArtifactType.WEIGHTS: "mlflow",
    ArtifactType.IMAGE: "wandb",
    ArtifactType.AUDIO: "wandb",
    ArtifactType.VIDEO: "wandb",
    ArtifactType.VISUALIZATION: "wandb",
    ArtifactType.DATASET: "clearml",
}


def route(artifact_type: ArtifactType, metadata: dict[str, Any], configured: Sequence[str]) -> list[str]:
    """Which configured backends receive a version.

    ``metadata["preferred_backends"]`` overrides the table; where the preferred backend(s) are
    not configured, and for config, code, sample, report and custom, every configured backend.
    """
    preferred = metadata.get("preferred_backends")
    if isinstance(preferred, str):
        preferred = [preferred]
    if not preferred:
        default = DEFAULT_ROUTES.get(artifact_type)
        preferred = [default] if default else []
    chosen = [name for name in configured if name in set(preferred)]
    return chosen or list(configured)


# -- one delivery, with a time limit -----------------------------------------------------------
def _call_with_timeout(backend: Backend, call: Callable[[], Any], timeout: float | None) -> Any:
    """``call()``'s value or the exception it raised, or ``TimeoutError`` after ``timeout``.

    The call runs in a daemon thread so a hung tracker cannot hang the caller; a call that
    finishes after its time limit is harmless because backends deliver idempotently.
    """
    outcome: list[Any] = []

    def attempt() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # noqa: BLE001 - reported in the result, never swallowed
            outcome.append(exc)

    worker = threading.Thread(target=attempt, name=f"tracelet-deliver-{backend.name}", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        return TimeoutError(f"no answer from {backend.name} within {timeout} s")
    return outcome[0]


def deliver(backend: Backend, artifact: LoggedArtifact, timeout: float | None) -> ArtifactResult:
    """Call ``backend.log`` with a time limit; any failure becomes ``ok=False`` with its text."""
    result = _call_with_timeout(backend, lambda: backend.log(artifact), timeout)
    if isinstance(result, BaseException):
        return failure(backend.name, result)
    if not isinstance(result, ArtifactResult):
        return ArtifactResult(backend=backend.name, ok=False,
                              error=f"backend returned {type(result).__name__}, not ArtifactResult")
    return result


def deliver_alias(backend: Backend, artifact: LoggedArtifact, alias: str, action: str,
                  timeout: float | None) -> ArtifactResult:
    """Call ``backend.set_alias`` (``action="set"``) or ``remove_alias`` (``"remove"``) with
    a time limit; the outcome as an ``ArtifactResult`` (``version`` = the version's ref)."""
    hook = backend.set_alias if action == "set" else backend.remove_alias
    outcome = _call_with_timeout(backend, lambda: hook(artifact, alias), timeout)
    if isinstance(outcome, BaseException):
        return failure(backend.name, outcome, version=artifact.ref)
    return ArtifactResult(backend=backend.name, ok=True, version=artifact.ref,
                          uri=f"tracelet://{artifact.name}:{alias}")


def deliver_status(backend: Backend, artifact: LoggedArtifact, state: str, timeout: float | None) -> ArtifactResult:
    """Call ``backend.set_status`` (``deleted``, ``quarantined``, ``active``) with a time limit;
    the outcome as an ``ArtifactResult`` (``version`` = the version's ref)."""
    outcome = _call_with_timeout(backend, lambda: backend.set_status(artifact, state), timeout)
    if isinstance(outcome, BaseException):
        return failure(backend.name, outcome, version=artifact.ref)
    return outcome if isinstance(outcome, ArtifactResult) else ArtifactResult(backend=backend.name, ok=True,
                                                                              version=artifact.ref)


# -- a commit and its deliveries ---------------------------------------------------------------
class LogResult(dict[str, ArtifactResult]):
    """What logging one version did: ``"local"`` plus one ``ArtifactResult`` per backend it was
    routed to (``Experiment.log_artifact``'s contract result), and the version itself as
    ``.logged`` (its ``created`` says whether this call made it)."""

    def __init__(self, logged: LoggedArtifact, results: Mapping[str, ArtifactResult] | None = None) -> None:
        super().__init__({"local": local_result(logged)}, **(results or {}))
        self.logged = logged

    @property
    def failures(self) -> list[str]:
        """``"backend: error"`` of every delivery that failed."""
        return [f"{r.backend}: {r.error}" for r in self.values() if not r.ok]


def local_result(logged: LoggedArtifact) -> ArtifactResult:
    """The ``"local"`` result of a version committed to the store."""
    return ArtifactResult(backend="local", ok=True, version=logged.version, uri=f"tracelet://{logged.ref}",
                          size_bytes=logged.size_bytes)


def delivery_specs(backends: Mapping[str, Backend], routed: Iterable[str], run: RunInfo,
                   run_name: str | None) -> list[DeliverySpec]:
    """The outbox rows of the routed backends, each with what rebuilds it in ``sync``."""
    return [DeliverySpec(backend=name, config=backends[name].config(), run_id=run.run_id, run_name=run_name)
            for name in routed]


def deliver_routed(store: ArtifactStore, logged: LoggedArtifact, backends: Mapping[str, Backend],
                   routed: Sequence[str]) -> LogResult:
    """Deliver a version just committed to its ``routed`` backends (one already delivered, for
    identical content, keeps its earlier result) and record each outcome in the outbox."""
    results = LogResult(logged)
    earlier = {d.backend: d for d in store.catalog.deliveries(version_id=logged._record.id)} if routed else {}
    for name in routed:
        done = earlier.get(name)
        if done is not None and done.status == "delivered" and done.result:
            results[name] = ArtifactResult(**done.result)  # identical content, delivered before
            continue
        results[name] = deliver(backends[name], logged, store.settings.backend_timeout)
        store.delivery.record(logged, results[name])
    return results


def log_and_deliver(store: ArtifactStore, artifact: TraceletArtifact, backends: Mapping[str, Backend], *,
                    producer: RunInfo, run_name: str | None = None, inputs: Iterable[InputRef] = (),
                    aliases: Iterable[str] = (), idempotency_key: str | None = None,
                    partition: str | None = None) -> LogResult:
    """Commit ``artifact`` (produced by ``producer``) with an outbox row per backend it routes
    to, then deliver those: what ``Experiment.log_artifact`` and the adapters' commits do.
    The backends are the caller's, started (:func:`started`) where they need a run."""
    logged, routed = _log_routed(store, artifact, backends, producer, run_name, inputs, aliases, idempotency_key,
                                 partition)
    return deliver_routed(store, logged, backends, routed)


def _log_routed(store: ArtifactStore, artifact: TraceletArtifact, backends: Mapping[str, Backend],
                producer: RunInfo, run_name: str | None, inputs: Iterable[InputRef], aliases: Iterable[str],
                idempotency_key: str | None, partition: str | None) -> tuple[LoggedArtifact, list[str]]:
    """The commit, with one pending outbox row per routed backend in its transaction."""
    routed = route(artifact.type, artifact.metadata, list(backends))
    logged = store.log(artifact, producer=producer, inputs=inputs, aliases=aliases,
                       deliveries=delivery_specs(backends, routed, producer, run_name or producer.name),
                       idempotency_key=idempotency_key, partition=partition)
    return logged, routed


class Deferred(LogResult):
    """A version committed with its deliveries queued on the background worker: ``"local"``
    now, the trackers' results in ``.delivered`` (a future) once the worker has run them."""

    def __init__(self, logged: LoggedArtifact, routed: Sequence[str], delivered: Future[LogResult]) -> None:
        super().__init__(logged)
        #: the backends the version is routed to, whose deliveries are queued
        self.queued = tuple(routed)
        self.delivered = delivered


def log_and_deliver_later(store: ArtifactStore, artifact: TraceletArtifact, backends: Mapping[str, Backend], *,
                          scope: str, producer: RunInfo, run_name: str | None = None,
                          inputs: Iterable[InputRef] = (), aliases: Iterable[str] = (),
                          idempotency_key: str | None = None, partition: str | None = None) -> Deferred:
    """:func:`log_and_deliver` with the deliveries off the caller's path: the commit (and its
    pending outbox rows) now, then one job on this process's background worker, part of
    ``scope`` (the orchestrator run, flushed before it ends), that starts ``backends`` (not
    started by the caller) on ``producer``'s run, delivers and records each outcome. A process
    that dies first leaves the rows pending for ``tracelet sync``."""
    logged, routed = _log_routed(store, artifact, backends, producer, run_name, inputs, aliases, idempotency_key,
                                 partition)
    experiment = run_name or producer.name or producer.run_id

    def deliver_now() -> LogResult:
        if not routed:
            return LogResult(logged)
        try:
            start_all(backends.values(), experiment, producer.run_id)
        except BackendError as exc:  # recorded like any failed delivery: ``sync`` retries them
            results = LogResult(logged)
            for name in routed:
                results[name] = failure(name, exc, version=logged.ref)
                store.delivery.record(logged, results[name])
            return results
        try:
            return deliver_routed(store, logged, backends, routed)
        finally:
            for backend in backends.values():
                backend.stop()

    return Deferred(logged, routed, background.submit(scope, deliver_now))


def configured_backends(specs: Iterable[str | Backend]) -> dict[str, Backend]:
    """Backend instances by name from names or instances; a name given twice is a
    ``ConfigurationError``, as is one that cannot be built (``Experiment(backend=...)``)."""
    backends: dict[str, Backend] = {}
    for spec in specs:
        backend = resolve_backend(spec)
        if backend.name in backends:
            raise ConfigurationError(f"backend {backend.name!r} is configured twice")
        backends[backend.name] = backend
    return backends


def start_all(backends: Iterable[Backend], experiment_name: str, run_id: str) -> None:
    """Open every backend's run; where one fails, stop those started and raise ``BackendError``."""
    begun: list[Backend] = []
    try:
        for backend in backends:
            backend.start(experiment_name, run_id)
            begun.append(backend)
    except Exception as exc:
        for backend in begun:
            backend.stop()
        raise BackendError(f"backend failed to start: {exc}") from exc


@contextmanager
def started(backends: Mapping[str, Backend], experiment_name: str, run_id: str) -> Iterator[Mapping[str, Backend]]:
    """The backends with their runs open for the block (stopped after it)."""
    start_all(backends.values(), experiment_name, run_id)
    try:
        yield backends
    finally:
        for backend in backends.values():
            backend.stop()


def exporter() -> ModuleType:
    """``tracelet_core.backends.openlineage`` (which imports the OpenLineage client), or a
    ``ConfigurationError`` saying what to install."""
    try:
        return importlib.import_module("tracelet_core.backends.openlineage")  # Deferred: the client
    except ImportError as exc:
        raise ConfigurationError(f"OpenLineage export needs the OpenLineage client ({exc}): "
                                 f"{INSTALL_HINTS[LINEAGE_BACKEND]}") from exc


# -- the store's hook --------------------------------------------------------------------------
class Delivery:
    """The delivery side of one ``ArtifactStore`` (``store.delivery``): what each commit
    enqueues, what runs after a commit and after an alias change, the outbox, and ``sync``."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    @property
    def timeout(self) -> float | None:
        return self.store.settings.backend_timeout

    # -- the outbox ------------------------------------------------------------------------------
    def deliveries(self, version_id: int | None = None, status: str | None = None) -> list[DeliveryRecord]:
        return self.store.catalog.deliveries(statuses=[status] if status else None, version_id=version_id)

    def record(self, artifact: LoggedArtifact, result: ArtifactResult) -> None:
        """Store the outcome of a delivery attempt in the outbox."""
        self.store.catalog.finish_delivery(artifact.name, artifact.version_number, result.backend, ok=result.ok,
                                           result=result.to_dict(), error=result.error, confirmed=result.confirmed)

    def alias_events(self, name: str | None = None, status: str | None = None) -> list[AliasEventRecord]:
        statuses = (status,) if status else ("pending", "failed")
        return self.store.catalog.alias_events(statuses=statuses, name=name)

    def _resolve(self, name: str, config: dict[str, Any] | None) -> Backend | ArtifactResult:
        """The backend, or the ``ok=False`` result of one that cannot be built here."""
        try:
            return resolve_backend(name, config)
        except ConfigurationError as exc:
            return failure(name, exc)

    # -- after a commit ------------------------------------------------------------------------
    def after_commit(self, logged: LoggedArtifact) -> None:
        """With ``TRACELET_OPENLINEAGE`` on, hand a version just committed to the export (sent
        with its run's end, or as a run of its own); never fails: ``sync`` retries."""
        if self.store.settings.openlineage:
            self._export("version_committed", logged)
            if logged.aliases:
                self._export("aliases_changed", logged.name)

    def run_started(self, run: RunInfo) -> None:
        """A run that logs versions started (an ``Experiment``): its OpenLineage ``START``."""
        if self.store.settings.openlineage:
            self._export("producer_started", run)

    def run_ended(self, run: RunInfo, error: BaseException | None = None) -> None:
        """That run ended (``error``: it raised): its ``COMPLETE`` or ``FAIL``."""
        if self.store.settings.openlineage:
            self._export("producer_ended", run, error)

    def _export(self, hook: str, *args: Any) -> None:
        """Call the OpenLineage export's ``hook`` (it never raises for a delivery); an export
        that cannot load (no client installed) is only logged."""
        try:
            getattr(exporter(), hook)(self.store, *args)
        except ConfigurationError as exc:
            logger.warning("OpenLineage export is off here: %s", exc)

    # -- events about versions a tracker holds (alias moves, status changes) -------------------
    @contextmanager
    def _event_backends(self) -> Iterator[Callable[[str, dict[str, Any]], Backend | ArtifactResult]]:
        """``backend_for(name, config)``: one backend per name and configuration for a batch of
        outbox events (or the ``ArtifactResult`` saying why it cannot be built), stopped after."""
        made: dict[tuple[str, str], Backend | ArtifactResult] = {}

        def backend_for(name: str, config: dict[str, Any]) -> Backend | ArtifactResult:
            key = (name, json.dumps(config, sort_keys=True))
            if key not in made:
                made[key] = self._resolve(name, config)
            return made[key]
        try:
            yield backend_for
        finally:
            for backend in made.values():
                if isinstance(backend, Backend):
                    backend.stop()

    def _held_by(self, artifact: LoggedArtifact, backend: str) -> bool:
        """Whether the version's own delivery to ``backend`` is done (an event about it may go)."""
        return self.store.catalog.delivery_status(artifact._record.id, backend) in ("delivered", "unconfirmed")

    def after_alias_change(self, name: str | None = None,
                           backends: set[str] | None = None) -> list[ArtifactResult]:
        """Tell the trackers about pending alias moves, in order per name and tracker: an
        event waits (stays pending) while its version's own delivery to that tracker is not
        done, and one that fails holds back the later events of its name for that tracker."""
        catalog = self.store.catalog
        if name is not None and self.store.settings.openlineage:
            self._export("aliases_changed", name)
        events = [e for e in catalog.alias_events(name=name) if backends is None or e.backend in backends]
        results: list[ArtifactResult] = []
        held: set[tuple[str, str]] = set()  # (name, backend) with an earlier event undelivered
        with self._event_backends() as backend_for:
            for event in events:
                chain = (event.name, event.backend)
                artifact = self.store._including_deleted(event.ref)  # a removal may be of a deleted one
                if chain in held or not self._held_by(artifact, event.backend):
                    held.add(chain)
                    continue
                backend = backend_for(event.backend, event.config)
                result = (ArtifactResult(**{**backend.to_dict(), "version": event.ref})
                          if isinstance(backend, ArtifactResult)
                          else deliver_alias(backend, artifact, event.alias, event.action, self.timeout))
                catalog.finish_alias_event(event.id, ok=result.ok, error=result.error)
                results.append(result)
                if not result.ok:
                    held.add(chain)
        return results

    def after_status_change(self, backends: set[str] | None = None) -> list[ArtifactResult]:
        """Tell the trackers holding a deleted, quarantined or released version: each copy is
        tagged ``tracelet.status=<state>`` (``Backend.set_status``), in order. An event waits
        while its version's own delivery to that tracker is not done; a failure stays in the
        outbox for ``sync``."""
        catalog = self.store.catalog
        events = [e for e in catalog.status_events() if backends is None or e.backend in backends]
        results: list[ArtifactResult] = []
        with self._event_backends() as backend_for:
            for event in events:
                artifact = self.store._including_deleted(event.ref)
                if not self._held_by(artifact, event.backend):
                    continue
                backend = backend_for(event.backend, event.config)
                result = (ArtifactResult(**{**backend.to_dict(), "version": event.ref})
                          if isinstance(backend, ArtifactResult)
                          else deliver_status(backend, artifact, event.state, self.timeout))
                catalog.finish_status_event(event.id, ok=result.ok, error=result.error)
                results.append(result)
        return results

    # -- retries -------------------------------------------------------------------------------
    def sync(self, backends: Iterable[str] | None = None) -> list[ArtifactResult]:
        """Retry every pending, failed or unconfirmed delivery (optionally only to some
        backends), then every alias event not yet delivered (in order per name).

        Each backend is rebuilt from the name and ``config()`` recorded with the delivery and
        started once per original run; backends deliver idempotently, so a version the
        tracker already holds is not uploaded twice. Returns one result per attempt; raises
        ``ConfigurationError`` at the end where a backend could not be built at all."""
        wanted = set(backends) if backends is not None else None
        todo = [d for d in self.store.catalog.deliveries(statuses=["pending", "failed", "unconfirmed"])
                if wanted is None or d.backend in wanted]
        groups: dict[tuple[str, str, str | None], list[DeliveryRecord]] = {}
        for row in todo:
            groups.setdefault((row.backend, json.dumps(row.config, sort_keys=True), row.run_id), []).append(row)
        results: list[ArtifactResult] = []
        unavailable: list[ArtifactResult] = []
        for (name, _config, run_id), rows in groups.items():
            results += self._retry_group(name, run_id, rows, unavailable)
        results += self.after_alias_change(backends=wanted)
        results += self.after_status_change(backends=wanted)
        if wanted is None or LINEAGE_BACKEND in wanted:
            results += self._lineage_queue(unavailable)
        if unavailable:
            names = ", ".join(sorted({r.backend for r in unavailable}))
            details = "; ".join(dict.fromkeys(r.error or "" for r in unavailable))
            raise ConfigurationError(f"cannot deliver to {names} from here ({details}); their deliveries "
                                     "stay in the outbox")
        return results

    def _retry_group(self, name: str, run_id: str | None, rows: list[DeliveryRecord],
                     unavailable: list[ArtifactResult]) -> list[ArtifactResult]:
        """Retry the deliveries of one backend configuration and run."""
        backend = self._resolve(name, rows[0].config)
        if isinstance(backend, ArtifactResult):
            unavailable.append(backend)
            return self._fail_rows(rows, backend)
        try:  # one backend that cannot start fails its own deliveries, not the others'
            backend.start(rows[0].run_name or "tracelet-sync", run_id or "tracelet-sync")
        except Exception as exc:  # noqa: BLE001 - recorded in the outbox and returned, never swallowed
            error = BackendError(f"backend {name!r} could not start: {type(exc).__name__}: {exc}")
            return self._fail_rows(rows, failure(name, error))
        results: list[ArtifactResult] = []
        try:
            for row in rows:
                artifact = self.store.get(row.ref)
                result = deliver(backend, artifact, self.timeout)
                self.record(artifact, result)
                results.append(result)
        finally:
            backend.stop()
        return results

    def _lineage_queue(self, unavailable: list[ArtifactResult]) -> list[ArtifactResult]:
        """Send the OpenLineage export's queued events (``sync``); an export that cannot load
        here joins ``unavailable``."""
        if not self.store.catalog.lineage_queue():
            return []
        try:
            return list(exporter().flush(self.store))
        except ConfigurationError as exc:
            unavailable.append(failure(LINEAGE_BACKEND, exc))
            return unavailable[-1:]

    def _fail_rows(self, rows: list[DeliveryRecord], result: ArtifactResult) -> list[ArtifactResult]:
        for row in rows:
            self.record(self.store.get(row.ref), result)
        return [result] * len(rows)
