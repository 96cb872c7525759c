"""What every tracker backend shares: what to upload and what to send as a reference, which
tags, which parameters and media, how SDK errors become tracelet's.

The interface itself (``Backend``, ``ArtifactResult``, ``BackendCopy``) and the lazy backend
registry live in ``tracelet_core._trackers`` and are re-exported here; routing and delivery
(time limits, the outbox) live in ``tracelet_core._delivery``.

What a backend in another package needs is public in ``tracelet_core.backends``:
``Backend``, ``ArtifactResult``, ``BackendCopy``, ``plan_upload`` / ``UploadPlan``,
``sdk_errors``, ``tracelet_tags``, ``delivery_target``, ``config_params``,
``media_entries``, ``DeliveryRecord`` and ``register_backend``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import BackendError, TraceletError
from ._model import ArtifactFile, ArtifactObject, ArtifactReference, ArtifactType
from ._trackers import (
    BUILTIN_BACKENDS,
    ENTRY_POINT_GROUP,
    INSTALL_HINTS,
    ArtifactResult,
    Backend,
    BackendCopy,
    BackendFactory,
    available_backends,
    backend_error_class,
    register_backend,
    resolve_backend,
    unregister_backend,
)

if TYPE_CHECKING:
    from ._logged import LoggedArtifact
    from ._model import RunInfo

__all__ = [
    "BUILTIN_BACKENDS", "ENTRY_POINT_GROUP", "INSTALL_HINTS", "MANIFEST_NAME", "REFERENCE_THRESHOLD_BYTES",
    "ArtifactResult", "Backend", "BackendCopy", "BackendFactory", "UploadPlan", "available_backends",
    "config_params", "delivery_target", "flatten", "media_entries", "plan_upload", "producer_experiment",
    "register_backend", "release_displaced_aliases",
    "resolve_backend", "sdk_errors", "tracelet_tags", "unregister_backend",
]


logger = logging.getLogger(__name__)


# -- what every backend shares --------------------------------------------------------------
REFERENCE_THRESHOLD_BYTES = 100 * 1024 * 1024
MANIFEST_NAME = "tracelet-manifest.json"


@dataclass(frozen=True)
class UploadPlan:
    """How one version reaches a remote tracker.

    ``root`` holds verified copies of the entries to upload at their artifact paths (plus the
    version's description as ``MANIFEST_NAME`` beside them, in ``manifest``); entries over
    the reference threshold, or all of them with ``metadata["force_reference"]``, are sent as
    references to the store's blobs instead; ``external`` are the version's own references.
    """

    root: Path
    manifest: Path
    uploads: list[str]
    references: dict[str, str]
    external: list[ArtifactReference]


def plan_upload(artifact: LoggedArtifact, staging: Path, threshold: int | None = None) -> UploadPlan:
    """Stage ``artifact`` for a tracker under ``staging`` (files under ``staging/files``)."""
    limit = artifact.store.settings.reference_threshold_bytes if threshold is None else threshold
    force = bool(artifact.metadata.get("force_reference"))
    entries: list[ArtifactFile | ArtifactObject] = [*artifact.files, *artifact.objects]
    referenced = {e.path: artifact.store.blobs.blob_uri(e.digest or "") for e in entries
                  if force or e.size >= limit}
    uploads = [e.path for e in entries if e.path not in referenced]
    root = staging / "files"
    if not _link_verified(artifact, root, [e for e in entries if e.path not in referenced]):
        artifact.download(root, paths=uploads)
    manifest = staging / MANIFEST_NAME
    manifest.write_text(json.dumps({**artifact.to_dict(), "referenced": referenced}, indent=2, default=str))
    return UploadPlan(root=root, manifest=manifest, uploads=uploads, references=referenced,
                      external=artifact.references)


def _link_verified(artifact: LoggedArtifact, root: Path, entries: Sequence[ArtifactFile | ArtifactObject]) -> bool:
    """Stage a local store's blobs under ``root`` as hard links (a copy across devices),
    each verified against its digest first: trackers copy what they upload, so the bytes are
    written once, by the tracker, as its own call would. False (nothing staged) where the
    store's blobs are not local files."""
    from ._errors import IntegrityError
    from ._hashing import hash_file
    from ._logged import LoggedArtifact as Logged

    linkable = [(entry, artifact.store.blobs.linkable_blob(entry.digest or "")) for entry in entries]
    sources = [(entry, source) for entry, source in linkable if source is not None]
    if len(sources) < len(linkable):
        return False
    root.mkdir(parents=True, exist_ok=True)
    real_root = root.resolve()
    for entry, source in sources:
        try:
            digest, _size = hash_file(source)
        except FileNotFoundError as exc:
            raise IntegrityError(f"{artifact.ref}: blob of {entry.path} is missing",
                                 [f"{entry.path}: missing"]) from exc
        if digest != entry.digest:
            raise IntegrityError(f"{artifact.ref}: blob of {entry.path} does not match its digest",
                                 [f"{entry.path}: digest mismatch"])
        target = Logged._target(real_root, entry.path)  # refuses paths that leave root
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:  # another device, or links not allowed: copy
            shutil.copyfile(source, target)
    return True


@contextmanager
def sdk_errors(backend: str, action: str, errors: tuple[type[BaseException], ...]) -> Iterator[None]:
    """Translate a tracker SDK's ``errors`` raised while doing ``action`` into a
    ``BackendError``, the cause chained: ``TransientBackendError`` where the tracker did not
    answer (a timeout, a refused connection, a 5xx), ``PermanentBackendError`` where it
    answered and refused. A ``BackendError`` passes through unchanged."""
    try:
        yield
    except BackendError:
        raise
    except errors as exc:
        raise backend_error_class(exc)(f"{backend}: {action} failed: {type(exc).__name__}: {exc}") from exc


class RunPerStartBackend(Backend):
    """A backend whose tracker run follows ``start``: the run opened for one ``(experiment,
    run id)`` is ended when another is started and at ``stop``. Subclasses end their run in
    ``_end_run`` and read ``_context`` (``None`` outside ``start``/``stop``) under ``_lock``."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._context: tuple[str, str] | None = None  # (experiment name, tracelet run id) since start()

    @abstractmethod
    def _end_run(self) -> None:
        """End the tracker run this backend holds open, if any."""

    def start(self, experiment_name: str, run_id: str) -> None:
        with self._lock:
            if self._context != (experiment_name, run_id):
                self._end_run()
            self._context = (experiment_name, run_id)

    def stop(self) -> None:
        with self._lock:
            try:
                self._end_run()
            finally:
                self._context = None


#: Names orchestrators give runs that no user chose (Dagster's job for ``materialize``).
_GENERATED_RUN_NAMES = frozenset({"__ephemeral_asset_job__"})


def producer_experiment(producer: RunInfo | None) -> str | None:
    """The tracker experiment an orchestrated version belongs to: the Dagster job or Prefect
    flow that produced it (``producer.name``), else (Dagster's ``__ephemeral_asset_job__``
    and other names no user chose) the step that made it (the asset's step key); None for a
    tracelet ``Experiment`` or no producer, whose started name is used instead."""
    if producer is None or producer.orchestrator == "tracelet":
        return None
    name = producer.name if producer.name and producer.name not in _GENERATED_RUN_NAMES else None
    if name is None and producer.orchestrator == "dagster":
        name = producer.step
    return name or None


def delivery_target(artifact: LoggedArtifact, started: tuple[str, str] | None,
                    experiment: str | None) -> tuple[str, str, str]:
    """(tracker experiment, tracelet run id, run name) a version is delivered to: the started
    experiment's run; else (a retry from the outbox) the run of the version's producer; else a
    run of its own. ``experiment`` is the name the backend was configured with, if any; else a
    version made by an orchestrator goes to the experiment named after its job or flow
    (:func:`producer_experiment`), also when the adapter started the backend under another
    name."""
    producer = artifact.producer
    orchestrated = producer_experiment(producer)
    if started is not None:
        started_name, run_id = started
        if orchestrated is not None and producer is not None and producer.run_id == run_id:
            return experiment or orchestrated, run_id, orchestrated
        return experiment or started_name, run_id, started_name
    if producer is not None:
        name = orchestrated or producer.name or "tracelet"
        return experiment or name, producer.run_id, orchestrated or producer.name or producer.key
    return experiment or "tracelet", artifact.ref, f"tracelet {artifact.ref}"


def tracelet_tags(artifact: LoggedArtifact) -> dict[str, str]:
    """The tags every tracker copy carries, so each side can find the other."""
    producer = artifact.producer
    return {
        "tracelet.ref": artifact.ref,
        "tracelet.name": artifact.name,
        "tracelet.version": artifact.version,
        "tracelet.digest": artifact.digest,
        "tracelet.type": artifact.type.value,
        "tracelet.inputs": ",".join(artifact.inputs),
        "tracelet.producer": producer.key if producer else "",
        "tracelet.aliases": ",".join(artifact.aliases),
    }


def _displaced_aliases(artifact: LoggedArtifact, backend: str) -> list[tuple[LoggedArtifact, str]]:
    """(previous version, alias) for each alias ``log(aliases=...)`` took from another
    version of the name that tracker ``backend`` holds: the commit queues no alias event for
    that move (the new version's own delivery carries its aliases), so a tracker whose
    aliases are plain tags takes them off the previous version's copy when it delivers the
    new one (``remove_alias``, idempotent). The previous holder comes from the alias history."""
    store = artifact.store
    moved: list[tuple[LoggedArtifact, str]] = []
    for alias in artifact.aliases:
        taken = [c.before for c in store.alias_history(artifact.name, alias) if c.after == artifact.ref]
        before = taken[-1] if taken else None
        if before is None or before == artifact.ref:
            continue
        try:
            previous = store.get(before)
        except TraceletError:  # deleted since: nothing left to untag
            continue
        if any(row.backend == backend and row.status in ("delivered", "unconfirmed")
               for row in store.deliveries(previous.ref)):
            moved.append((previous, alias))
    return moved


def release_displaced_aliases(backend: Backend, artifact: LoggedArtifact) -> None:
    """After delivering ``artifact``: ``backend.remove_alias`` on the previous holder of each
    alias ``log(aliases=...)`` moved to it (see :func:`_displaced_aliases`); a failure is
    logged, never raised over the delivery of ``artifact`` itself."""
    for previous, alias in _displaced_aliases(artifact, backend.name):
        try:
            backend.remove_alias(previous, alias)
        except Exception as exc:  # noqa: BLE001 - the new version is delivered; the old tag stays
            logger.warning("%s: alias %r moved to %s is still on %s there: %s", backend.name, alias,
                           artifact.ref, previous.ref, exc)


# -- native parameters and media ----------------------------------------------------------
#: Serializers whose objects are read as configuration (safe to load: no pickle).
CONFIG_SERIALIZERS = ("json", "yaml")
CONFIG_FILE_SUFFIXES = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}
MEDIA_SUFFIXES: dict[str, set[str]] = {
    "image": {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"},
    "audio": {".wav", ".mp3", ".flac", ".ogg"},
    "video": {".mp4", ".webm", ".mov", ".avi"},
}
MEDIA_TYPES = {ArtifactType.IMAGE: "image", ArtifactType.AUDIO: "audio", ArtifactType.VIDEO: "video"}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level, keys joined with ``.`` (lists stay values)."""
    if not isinstance(value, dict):
        return {prefix or "value": value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(item, dict) and item:
            flat.update(flatten(item, name))
        else:
            flat[name] = item
    return flat


def config_params(artifact: LoggedArtifact) -> dict[str, Any]:
    """The parameters a ``config`` version stands for: the keys of its json / yaml objects
    and files holding a mapping, flattened with ``.`` (a later entry wins a key); ``{}`` for
    other types. Values keep their JSON types; each tracker converts them as it needs."""
    if artifact.type is not ArtifactType.CONFIG:
        return {}
    params: dict[str, Any] = {}
    for obj in artifact.objects:
        if obj.serializer in CONFIG_SERIALIZERS:
            loaded = artifact.load(obj.name)
            if isinstance(loaded, dict):
                params.update(flatten(loaded))
    for entry in artifact.files:
        kind = CONFIG_FILE_SUFFIXES.get(Path(entry.path).suffix.lower())
        if kind is None:
            continue
        loaded = _parse_config(artifact.path(entry.path).read_text(encoding="utf-8", errors="replace"), kind)
        if isinstance(loaded, dict):
            params.update(flatten(loaded))
    return params


def _parse_config(text: str, kind: str) -> Any:
    """A json / yaml file's value, or None where it does not parse (then it is no config)."""
    if kind == "json":
        try:
            return json.loads(text)
        except ValueError:
            return None
    import yaml  # Deferred for import perf

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def media_entries(artifact: LoggedArtifact) -> list[tuple[str, str]]:
    """``(kind, artifact path)`` of the files and objects of an ``image`` / ``audio`` /
    ``video`` version that trackers show as native media (judged by the file suffix)."""
    kind = MEDIA_TYPES.get(artifact.type)
    if kind is None:
        return []
    entries: list[ArtifactFile | ArtifactObject] = [*artifact.files, *artifact.objects]
    return [(kind, e.path) for e in entries if Path(e.path).suffix.lower() in MEDIA_SUFFIXES[kind]]
