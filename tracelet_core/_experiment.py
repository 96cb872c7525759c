"""``Experiment``: the Tracelet-guide facade over the store, backends and automagic capture.

An experiment is one run (``RunInfo(orchestrator="tracelet")``). Every artifact it logs is
committed to the local store first, then routed to the configured backends; a backend that
fails yields ``ok=False`` and never fails the local log (``strict=True`` raises
``BackendError`` after the commit). Versions read with ``get_artifact`` while the experiment
is started become the inputs of everything it logs afterwards.

With ``automagic_artifacts`` on, a started experiment captures ``torch.save`` calls and
attaches a ``tracelet_core.lightning.TraceletCallback`` to every Lightning ``Trainer``
created meanwhile; ``artifact_stats()`` counts what was logged, captured and failed.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ._artifact import TraceletArtifact, coerce_type
from ._automagic import AutomagicSession
from ._delivery import LogResult, configured_backends, log_and_deliver, start_all
from ._errors import BackendError, ConfigurationError, IntegrityError
from ._hashing import hash_file
from ._logged import LoggedArtifact
from ._model import ArtifactType, RunInfo
from ._settings import TraceletSettings
from ._store import ArtifactStore
from ._trackers import Backend

logger = logging.getLogger("tracelet.automagic")


class ExperimentConfig(BaseModel):
    """Artifact settings of one experiment (defaults come from ``TraceletSettings``)."""

    enable_artifacts: bool = True
    automagic_artifacts: bool = False
    watch_filesystem: bool = False
    artifact_watch_dirs: list[str] = Field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: TraceletSettings) -> ExperimentConfig:
        return cls(enable_artifacts=settings.enable_artifacts,
                   automagic_artifacts=settings.automagic_artifacts,
                   watch_filesystem=settings.watch_filesystem,
                   artifact_watch_dirs=list(settings.artifact_watch_dirs))


class Experiment:
    """One tracked run that logs, reads and routes artifacts."""

    def __init__(
        self,
        name: str,
        backend: str | Backend | Sequence[str | Backend] | None = None,
        artifacts: bool = True,
        automagic_artifacts: bool = False,
        config: ExperimentConfig | None = None,
        store: ArtifactStore | str | os.PathLike[str] | None = None,
        *,
        strict: bool = False,
        settings: TraceletSettings | None = None,
        run: RunInfo | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError("an experiment needs a non-empty name")
        self.name = name
        self.settings = settings or TraceletSettings.load()
        base = config or ExperimentConfig.from_settings(self.settings)
        # An explicit False wins; environment variables can switch automagic on.
        self.config = base.model_copy(update={
            "enable_artifacts": base.enable_artifacts and artifacts,
            "automagic_artifacts": base.automagic_artifacts or automagic_artifacts,
        })
        specs: Sequence[str | Backend]
        if backend is None:
            specs = list(self.settings.backends)
        elif isinstance(backend, (str, Backend)):
            specs = [backend]
        else:
            specs = list(backend)
        self.backends: dict[str, Backend] = configured_backends(specs)
        self.strict = strict
        self._store: ArtifactStore | None = store if isinstance(store, ArtifactStore) else None
        self._store_uri = None if isinstance(store, ArtifactStore) else store
        #: The run everything this experiment logs is produced by (an orchestrator's step run
        #: when an adapter passes one).
        self.run = run or RunInfo(orchestrator="tracelet", run_id=uuid.uuid4().hex, name=name)
        self._consumed: list[str] = []
        self._lock = threading.RLock()
        self._started = False
        self._automagic: AutomagicSession | None = None
        self._capture_errors: list[str] = []
        self._logged = 0
        self._captured: Counter[str] = Counter()
        self._delivery_failures = 0

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def store(self) -> ArtifactStore:
        """The store this experiment logs to (opened on first use)."""
        with self._lock:
            if self._store is None:
                self._store = ArtifactStore.open(self._store_uri, settings=self.settings)
            return self._store

    @property
    def is_started(self) -> bool:
        return self._started

    def start(self) -> Experiment:
        with self._lock:
            if self._started:
                return self
            self.store  # noqa: B018 - fail early on a bad store
            start_all(self.backends.values(), self.name, self.run.run_id)
            self._started = True
            if self.run.orchestrator == "tracelet":  # an adapter's step run starts and ends there
                self.store.delivery.run_started(self.run)
            cfg = self.config
            if cfg.enable_artifacts and (cfg.automagic_artifacts or cfg.watch_filesystem):
                watch = [Path(d) for d in cfg.artifact_watch_dirs] if cfg.watch_filesystem else []
                self._automagic = AutomagicSession(
                    self._log_captured, capture_saves=cfg.automagic_artifacts,
                    watch_dirs=watch, watch_interval=self.settings.watch_interval,
                    stable_checks=self.settings.watch_stable_checks,
                    max_wait=self.settings.watch_max_wait, attach_trainer=self._attach_lightning)
                self._automagic.start()
            return self

    def stop(self) -> None:
        """Stop capture (running a final scan of watched folders) and the backends' runs."""
        self._stop(None)

    def _stop(self, error: BaseException | None) -> None:
        """``stop()``; ``error``: what the experiment's block raised (its OpenLineage run fails)."""
        with self._lock:
            if not self._started:
                return
            session, self._automagic = self._automagic, None
        try:
            # Outside the lock: the watcher thread may be inside log_artifact, which takes it.
            if session is not None:
                session.stop()
                with self._lock:
                    self._capture_errors.extend(session.errors)
        finally:
            with self._lock:
                self._started = False
                for backend in self.backends.values():
                    backend.stop()
            if self.run.orchestrator == "tracelet":
                self.store.delivery.run_ended(self.run, error)

    def __enter__(self) -> Experiment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self._stop(exc[1] if isinstance(exc[1], BaseException) else None)

    @property
    def automagic_errors(self) -> list[str]:
        """Captures that failed (a failed capture never breaks the user's own save), also
        after ``stop()``."""
        with self._lock:
            recorded = list(self._capture_errors)
        live = list(self._automagic.errors) if self._automagic is not None else []
        return [*recorded, *live]

    def _capture_failed(self, line: str) -> None:
        """A capture outside the automagic session (the Lightning callback) failed."""
        with self._lock:
            self._capture_errors.append(line)
        logger.warning("automagic: %s", line)

    def _attach_lightning(self, trainer: Any) -> None:
        from .lightning import attach_callback  # Deferred: imports Lightning

        attach_callback(trainer, self)

    def _mark_captured(self, path: Path) -> None:
        """A capture logged ``path``: a watched folder does not log it again."""
        session = self._automagic
        if session is not None:
            session.mark_handled(path)

    def artifact_stats(self) -> dict[str, Any]:
        """What this experiment did: ``logged`` (``log_artifact`` calls that committed),
        ``captured`` (automagic captures by source: ``torch.save``, ``lightning``,
        ``watcher``), ``failed`` (captures that failed, with ``errors``),
        ``pending_deliveries`` (its deliveries to trackers not done yet, for ``tracelet
        sync``) and ``delivery_failures`` (delivery attempts that failed)."""
        errors = self.automagic_errors
        pending = [d for d in self.store.catalog.deliveries(statuses=["pending", "failed"])
                   if d.run_id == self.run.run_id]
        with self._lock:
            return {
                "logged": self._logged, "captured": dict(self._captured),
                "failed": len(errors), "errors": errors, "pending_deliveries": len(pending),
                "delivery_failures": self._delivery_failures, "backends": list(self.backends),
                "automagic": self._automagic is not None and self._automagic.capture_saves,
                "watching": [str(d) for d in self._automagic.watch_dirs] if self._automagic else [],
                "started": self._started,
            }

    # -- artifacts --------------------------------------------------------------------------
    def create_artifact(self, name: str, artifact_type: ArtifactType | str,
                        description: str | None = None) -> TraceletArtifact:
        return TraceletArtifact(name, artifact_type, description)

    def _require_artifacts(self) -> None:
        if not self.config.enable_artifacts:
            raise ConfigurationError(
                f"artifacts are disabled for experiment {self.name!r} "
                "(artifacts=False or TRACELET_ENABLE_ARTIFACTS=false)")

    def log_artifact(self, artifact: TraceletArtifact, aliases: Iterable[str] | None = None, *,
                     inputs: Iterable[str | LoggedArtifact] = (), idempotency_key: str | None = None,
                     partition: str | None = None) -> LogResult:
        """Commit locally, then deliver to every backend the artifact routes to.

        Inputs are what this experiment read with ``get_artifact`` plus ``inputs``;
        ``idempotency_key`` and ``partition`` are passed to ``ArtifactStore.log``. The
        deliveries are recorded in the store's outbox with the commit; a backend that fails
        (or times out) gets ``ok=False`` here and is retried by ``tracelet sync``. The result
        maps ``"local"`` and each routed backend to an ``ArtifactResult``; its ``.logged`` is
        the version (``.logged.created``: whether this call made it)."""
        self._require_artifacts()
        with self._lock:
            consumed: list[str | LoggedArtifact] = [*self._consumed, *inputs]
        results = log_and_deliver(self.store, artifact, self.backends, producer=self.run, run_name=self.name,
                                  inputs=consumed, aliases=aliases or (), idempotency_key=idempotency_key,
                                  partition=partition)
        failures = results.failures
        with self._lock:
            self._logged += 1
            self._delivery_failures += len(failures)
            source = artifact.metadata.get("captured_by")
            if isinstance(source, str):
                self._captured[source] += 1
        if failures and self.strict:
            raise BackendError(f"{results.logged.ref} was committed locally but delivery failed: "
                               + "; ".join(failures))
        return results

    def _log_captured(self, artifact: TraceletArtifact) -> LogResult:
        return self.log_artifact(artifact)

    def get_artifact(self, name: str, version: str = "latest", backend: str | None = None) -> LoggedArtifact:
        """A version by name and version/alias; inside a started experiment it becomes an input.

        With ``backend``, the tracker's copy is downloaded through the tracker's own client and
        every file is checked against the store's digests before the version is returned."""
        self._require_artifacts()
        logged = self.store.get(name, version)
        if backend is not None and backend != "local":
            if backend not in self.backends:
                raise ConfigurationError(f"backend {backend!r} is not configured for this experiment")
            logged = self._verified_backend_copy(self.backends[backend], logged)
        if self._started:
            with self._lock:
                if logged.ref not in self._consumed:
                    self._consumed.append(logged.ref)
            self.store.record_consumption(self.run, [logged.ref])
        return logged

    def _verified_backend_copy(self, backend: Backend, logged: LoggedArtifact) -> LoggedArtifact:
        with tempfile.TemporaryDirectory(prefix="tracelet-fetch-") as tmp:
            copy = backend.fetch(logged.name, logged.version, Path(tmp))
            if (copy.ref, copy.digest) != (logged.ref, logged.digest):
                raise IntegrityError(f"{backend.name} holds {copy.ref} ({copy.digest}) for {logged.ref} "
                                     f"({logged.digest})", [f"{backend.name}: {copy.ref}"])
            problems = []
            for entry in logged._stored_entries():
                if entry.path in copy.referenced:
                    continue
                local = copy.local_path / entry.path
                if not local.is_file() or hash_file(local)[0] != entry.digest:
                    problems.append(f"{backend.name}: {entry.path} missing or different")
            if problems:
                raise IntegrityError(f"{backend.name}'s copy of {logged.ref} does not match the store", problems)
        return logged

    def list_artifacts(self, type_filter: ArtifactType | str | None = None,
                       backend: str | None = None) -> list[LoggedArtifact]:
        """Latest version of each artifact, optionally only a type or only what a backend holds."""
        self._require_artifacts()
        kind = coerce_type(type_filter) if type_filter is not None else None
        if backend is None or backend == "local":
            return self.store.list(type=kind)
        if backend not in self.backends:
            raise ConfigurationError(f"backend {backend!r} is not configured for this experiment")
        newest: dict[str, LoggedArtifact] = {}
        for row in self.store.catalog.deliveries(statuses=["delivered"], backend=backend):
            found = self.store.get(row.ref)
            newer = found.name not in newest or found.version_number > newest[found.name].version_number
            if (kind is None or found.type is kind) and newer:
                newest[found.name] = found
        return [newest[n] for n in sorted(newest)]

    @property
    def inputs(self) -> list[str]:
        """Refs read so far with ``get_artifact`` while started."""
        with self._lock:
            return list(self._consumed)

    def __repr__(self) -> str:
        return f"Experiment({self.name!r}, backends={list(self.backends)}, started={self._started})"

