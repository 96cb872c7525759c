"""The tracker backend interface, its lazy registry, the default routing table and the
helpers every backend shares (what to upload, what to send as a reference, which tags).

A backend needs one method, ``log(artifact) -> ArtifactResult``; ``fetch``, ``start``,
``stop``, ``config``, ``set_alias`` and ``remove_alias`` have defaults (see
``docs/writing-a-backend.md``). Backends are found by name, lazily: first those
registered in this process with :func:`register_backend`, then the built-in ones (by dotted
path, imported on first use, like fsspec's registry), then the ``tracelet.backends``
entry-point group (``name = "package.module:Class"``). Nothing is imported until a backend is
asked for, so ``import tracelet_core`` pulls in no tracker SDK.

A backend's ``log`` must be idempotent per ``artifact.ref``: the delivery outbox retries
failed deliveries (``tracelet sync``), so a second call for a version the tracker already
holds returns the existing copy instead of making another. Alias moves reach a backend the
same way, through the outbox (``set_alias`` / ``remove_alias``), in order per name.

What a backend in another package needs is public in ``tracelet_core.backends``:
``Backend``, ``ArtifactResult``, ``BackendCopy``, ``plan_upload`` / ``UploadPlan``,
``sdk_errors``, ``tracelet_tags``, ``delivery_target``, ``config_params``,
``media_entries``, ``DeliveryRecord`` and ``register_backend``.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import BackendError, ConfigurationError
from ._model import ArtifactFile, ArtifactObject, ArtifactReference, ArtifactType

if TYPE_CHECKING:
    from ._logged import LoggedArtifact

ENTRY_POINT_GROUP = "tracelet.backends"

#: Built-in backends: name -> "module:Class", imported on first use.
BUILTIN_BACKENDS = {
    "mlflow": "tracelet_core.backends.mlflow:MlflowBackend",
    "wandb": "tracelet_core.backends.wandb:WandbBackend",
    "clearml": "tracelet_core.backends.clearml:ClearMLBackend",
    "aim": "tracelet_core.backends.aim:AimBackend",
    "openlineage": "tracelet_core.backends.openlineage:OpenLineageBackend",
}

#: What to install when a built-in backend's SDK is missing.
INSTALL_HINTS = {
    "mlflow": "pip install tracelet-artifacts[mlflow]",
    "wandb": "pip install tracelet-artifacts[wandb]",
    "clearml": "pip install tracelet-artifacts[clearml]",
    "aim": "pip install tracelet-artifacts[aim]",
    "openlineage": "pip install tracelet-artifacts[openlineage]",
}


@dataclass(frozen=True)
class ArtifactResult:
    """The outcome of delivering one version to one destination (``"local"`` or a backend)."""

    backend: str
    ok: bool
    version: str | None = None
    uri: str | None = None
    size_bytes: int | None = None
    error: str | None = None
    #: False when the tracker accepted the version but has not written it durably yet (W&B
    #: offline writes its run file when the run finishes): the outbox then keeps the delivery
    #: ``unconfirmed`` until the backend confirms it (``ArtifactStore.record_delivery``) and
    #: ``sync`` retries it if that never happens.
    confirmed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BackendCopy:
    """A version as a tracker holds it, read back through the tracker's own client."""

    backend: str
    ref: str  # the tracelet ref the tracker recorded (tag / metadata ``tracelet.ref``)
    digest: str  # the tracelet digest the tracker recorded
    local_path: Path  # where the tracker's files were downloaded
    version: str | None = None  # the tracker's own id or version
    uri: str | None = None
    #: artifact paths the tracker holds as references (to the store's blobs), not as files
    referenced: dict[str, str] = field(default_factory=dict)


class Backend(ABC):
    """A tracker that receives committed versions."""

    #: The name routing and ``Experiment(backend=[...])`` know this backend by.
    name: str = "backend"

    @abstractmethod
    def log(self, artifact: LoggedArtifact) -> ArtifactResult:
        """Deliver one committed version, idempotently per ``artifact.ref``; raise (any error)
        or return ``ok=False`` on failure."""

    def fetch(self, name: str, version: str, dest: Path) -> BackendCopy:
        """Download the tracker's copy of ``name:version`` into ``dest`` (optional)."""
        raise BackendError(f"backend {self.name!r} cannot read artifacts back")

    def config(self) -> dict[str, Any]:
        """JSON-able keyword arguments that rebuild this backend in another process
        (``tracelet sync``); never secrets, which come from the tracker's own env vars."""
        return {}

    def start(self, experiment_name: str, run_id: str) -> None:  # noqa: B027 - optional hook
        """Open the tracker run for an experiment (optional)."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Close the tracker run (optional)."""

    def set_alias(self, artifact: LoggedArtifact, alias: str) -> None:  # noqa: B027 - optional hook
        """Point the tracker's ``alias`` of ``artifact.name`` at this version (optional; the
        outbox calls it after ``store.set_alias`` for every backend that holds the version).
        Must be idempotent; raise on failure (``sync`` retries it)."""

    def remove_alias(self, artifact: LoggedArtifact, alias: str) -> None:  # noqa: B027 - optional hook
        """Take ``alias`` off the tracker's copy of ``artifact`` (the version that held it;
        optional, idempotent, called through the outbox like ``set_alias``)."""


BackendFactory = Callable[[], Backend]
_registry: dict[str, BackendFactory] = {}
_registry_lock = threading.Lock()


def register_backend(name: str, factory: BackendFactory, *, clobber: bool = False) -> None:
    """Make ``name`` resolvable in this process (a class or any factory taking the backend's
    ``config()`` as keyword arguments). A name that is taken (registered, built in, or an
    entry point) is refused with ``ConfigurationError`` unless ``clobber=True``, as fsspec's
    ``register_implementation`` does; registering the same factory again is allowed."""
    if not isinstance(name, str) or not name.strip() or name != name.strip().lower():
        raise ConfigurationError(f"a backend name is a non-empty lowercase string, got {name!r}")
    with _registry_lock:
        current = _registry.get(name)
        taken = current is not None and current is not factory
        taken = taken or (current is None and (name in BUILTIN_BACKENDS or any(
            ep.name == name for ep in entry_points(group=ENTRY_POINT_GROUP))))
        if taken and not clobber:
            raise ConfigurationError(f"backend name {name!r} is already taken; pass clobber=True to replace it")
        _registry[name] = factory


def unregister_backend(name: str) -> None:
    with _registry_lock:
        _registry.pop(name, None)


def available_backends() -> list[str]:
    """Names that can be asked for: registered, built-in and entry points (nothing imported)."""
    names = set(_registry) | set(BUILTIN_BACKENDS) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def _load_builtin(name: str) -> BackendFactory | None:
    path = BUILTIN_BACKENDS.get(name)
    if path is None:
        return None
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)  # Deferred: imports the tracker SDK
    except ImportError as exc:
        raise ConfigurationError(
            f"backend {name!r} is not available: {exc} ({INSTALL_HINTS.get(name, '')})") from exc
    factory: BackendFactory = getattr(module, attribute)
    return factory


def resolve_backend(spec: str | Backend, config: dict[str, Any] | None = None) -> Backend:
    """A backend instance from a configured instance, or a name (plus its ``config()``)."""
    if isinstance(spec, Backend):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigurationError(f"a backend is a name or a Backend instance, got {spec!r}")
    name = spec.strip().lower()
    with _registry_lock:
        factory = _registry.get(name)
    if factory is None:
        factory = _load_builtin(name)
    if factory is None:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if found:
            try:
                factory = found[0].load()
            except ImportError as exc:
                hint = INSTALL_HINTS.get(name, f"install the package that provides {name!r}")
                raise ConfigurationError(f"backend {name!r} cannot be imported ({exc}); {hint}") from exc
    if factory is None:
        if name in INSTALL_HINTS:
            raise ConfigurationError(
                f"backend {name!r} is not available in this installation ({INSTALL_HINTS[name]})")
        known = ", ".join(available_backends()) or "none installed"
        raise ConfigurationError(f"unknown backend {name!r}; available: {known}")
    try:
        backend = factory(**(config or {}))
    except TypeError as exc:
        raise ConfigurationError(f"backend {name!r} rejected its configuration {config!r}: {exc}") from exc
    if not isinstance(backend, Backend):
        raise ConfigurationError(f"backend {name!r} did not produce a Backend instance")
    if backend.name == Backend.name:
        backend.name = name
    return backend


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
        return ArtifactResult(backend=backend.name, ok=False, error=f"{type(result).__name__}: {result}")
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
        return ArtifactResult(backend=backend.name, ok=False, version=artifact.ref,
                              error=f"{type(outcome).__name__}: {outcome}")
    return ArtifactResult(backend=backend.name, ok=True, version=artifact.ref,
                          uri=f"tracelet://{artifact.name}:{alias}")


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
    """Translate a tracker SDK's ``errors`` raised while doing ``action`` into ``BackendError``
    (the cause chained); a ``BackendError`` passes through unchanged."""
    try:
        yield
    except BackendError:
        raise
    except errors as exc:
        raise BackendError(f"{backend}: {action} failed: {type(exc).__name__}: {exc}") from exc


def delivery_target(artifact: LoggedArtifact, started: tuple[str, str] | None,
                    experiment: str | None) -> tuple[str, str, str]:
    """(tracker experiment, tracelet run id, run name) a version is delivered to: the started
    experiment's run; else (a retry from the outbox) the run of the version's producer; else a
    run of its own. ``experiment`` is the name the backend was configured with, if any."""
    if started is not None:
        started_name, run_id = started
        return experiment or started_name, run_id, started_name
    producer = artifact.producer
    if producer is not None:
        return experiment or producer.name or "tracelet", producer.run_id, producer.name or producer.key
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
