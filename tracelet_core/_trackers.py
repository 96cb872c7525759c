"""The tracker backend interface (``Backend``, ``ArtifactResult``, ``BackendCopy``) and its registry.

A backend needs one method, ``log(artifact) -> ArtifactResult``; ``fetch``, ``start``,
``stop``, ``config``, ``set_alias`` and ``remove_alias`` have defaults (see
``docs/writing-a-backend.md``). Backends are found by name through one lazy ``Registry``:
first those registered in this process with :func:`register_backend`, then the built-in ones
(by dotted path, imported on first use, like fsspec's registry), then the ``tracelet.backends``
entry-point group (``name = "package.module:Class"``). Nothing is imported until a backend is
asked for, so ``import tracelet_core`` pulls in no tracker SDK.

A backend's ``log`` must be idempotent per ``artifact.ref``: the delivery outbox retries
failed deliveries (``tracelet sync``), so a second call for a version the tracker already
holds returns the existing copy instead of making another.

:func:`failure` turns what a delivery raised into an ``ok=False`` result that keeps the
exception's type; :func:`backend_error_class` says whether an SDK error means the tracker did
not answer (``TransientBackendError``) or answered and refused (``PermanentBackendError``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import BackendError, ConfigurationError, PermanentBackendError, TransientBackendError
from ._registry import Registry

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
    #: The exact type of the exception a failed delivery raised (``TransientBackendError``,
    #: ``TimeoutError``, ...), also recorded in the outbox row's result; ``error`` starts with
    #: the public name (``BackendError`` for its whole family, as before the split).
    error_type: str | None = None

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

    def set_status(self, artifact: LoggedArtifact, status: str) -> ArtifactResult:
        """Tag the tracker's copy of ``artifact`` ``tracelet.status=<status>`` (``deleted``,
        ``quarantined``, or ``active`` once released); called through the status-event outbox
        for every backend that holds the version. Idempotent; raise or return ``ok=False`` on
        failure (``sync`` retries it). The default does nothing and reports success."""
        return ArtifactResult(backend=self.name, ok=True, version=artifact.ref)


BackendFactory = Callable[..., Backend]
_backends: Registry[BackendFactory] = Registry("backend", ENTRY_POINT_GROUP, BUILTIN_BACKENDS, hints=INSTALL_HINTS)


def register_backend(name: str, factory: BackendFactory, *, clobber: bool = False) -> None:
    """Make ``name`` resolvable in this process (a class or any factory taking the backend's
    ``config()`` as keyword arguments). A name that is taken (registered, built in, or an
    entry point) is refused with ``ConfigurationError`` unless ``clobber=True``, as fsspec's
    ``register_implementation`` does; registering the same factory again is allowed."""
    if not isinstance(name, str) or not name.strip() or name != name.strip().lower():
        raise ConfigurationError(f"a backend name is a non-empty lowercase string, got {name!r}")
    _backends.register(name, factory, clobber=clobber)


def unregister_backend(name: str) -> None:
    _backends.unregister(name)


def available_backends() -> list[str]:
    """Names that can be asked for: registered, built-in and entry points (nothing imported)."""
    return _backends.names()


def resolve_backend(spec: str | Backend, config: dict[str, Any] | None = None) -> Backend:
    """A backend instance from a configured instance, or a name (plus its ``config()``)."""
    if isinstance(spec, Backend):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigurationError(f"a backend is a name or a Backend instance, got {spec!r}")
    name = spec.strip().lower()
    factory = _backends.get(name)
    try:
        backend = factory(**(config or {}))
    except TypeError as exc:
        raise ConfigurationError(f"backend {name!r} rejected its configuration {config!r}: {exc}") from exc
    if not isinstance(backend, Backend):
        raise ConfigurationError(f"backend {name!r} did not produce a Backend instance")
    if backend.name == Backend.name:
        backend.name = name
    return backend


# -- why a delivery failed -------------------------------------------------------------------
#: Exception class names (anywhere in an error's MRO or cause chain) meaning "no answer".
_NO_ANSWER = frozenset({
    "TimeoutError", "ConnectionError", "Timeout", "ConnectTimeout", "ReadTimeout", "TimeoutException",
    "NewConnectionError", "MaxRetryError", "ProtocolError", "RemoteDisconnected", "ConnectError",
    "NetworkError", "IncompleteRead",
})
#: HTTP statuses meaning the tracker is overloaded or down for now, not refusing.
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _status(exc: BaseException) -> int | None:
    for holder in (exc, getattr(exc, "response", None)):
        status = getattr(holder, "status_code", None) or getattr(holder, "status", None)
        if isinstance(status, int):
            return status
    return None


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or what it was raised from) says the tracker did not answer: a
    timeout, a refused or lost connection, or an HTTP 408/429/5xx."""
    for link in _chain(exc):
        if isinstance(link, TransientBackendError):
            return True
        if isinstance(link, PermanentBackendError):
            return False
        if any(k.__name__ in _NO_ANSWER for k in type(link).__mro__) or _status(link) in _RETRY_STATUSES:
            return True
    return False


def backend_error_class(exc: BaseException) -> type[BackendError]:
    """``TransientBackendError`` where the tracker did not answer, else ``PermanentBackendError``."""
    return TransientBackendError if is_transient(exc) else PermanentBackendError


def failure(backend: str, exc: BaseException, version: str | None = None) -> ArtifactResult:
    """The ``ok=False`` result of a delivery that raised ``exc``: ``error`` is ``"Type: message"``
    (``BackendError`` for that whole family, as before it was split), ``error_type`` the exact type."""
    label = "BackendError" if isinstance(exc, BackendError) else type(exc).__name__
    return ArtifactResult(backend=backend, ok=False, version=version, error=f"{label}: {exc}",
                          error_type=type(exc).__name__)


def status_tag(ref: str, status: str) -> str:
    """The tag a tracker whose tags are plain strings (ClearML, Aim) puts on the task or run
    holding ``ref``: ``tracelet.status=<status>:<ref>`` (one per version: it may hold several)."""
    return f"tracelet.status={status}:{ref}"
