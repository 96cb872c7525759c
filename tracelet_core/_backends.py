"""The tracker backend interface, its lazy registry and the default routing table.

A backend needs one method, ``log(artifact) -> ArtifactResult``; ``fetch``, ``start`` and
``stop`` have defaults. Backends are found by name, lazily: first those registered in this
process with :func:`register_backend`, then the ``tracelet.backends`` entry-point group
(``name = "package.module:Class"``). Nothing is imported until a backend is asked for, so
``import tracelet_core`` pulls in no tracker SDK.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from ._errors import BackendError, ConfigurationError
from ._model import ArtifactType

if TYPE_CHECKING:
    from ._logged import LoggedArtifact

ENTRY_POINT_GROUP = "tracelet.backends"

#: Known backends that ship as extras: name -> install hint. The modules arrive with the
#: backends issue; until then asking for them explains what is missing.
INSTALL_HINTS = {
    "mlflow": "pip install tracelet-artifacts[mlflow]",
    "wandb": "pip install tracelet-artifacts[wandb]",
    "clearml": "pip install tracelet-artifacts[clearml]",
    "aim": "pip install tracelet-artifacts[aim]",
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backend(ABC):
    """A tracker that receives committed versions."""

    #: The name routing and ``Experiment(backend=[...])`` know this backend by.
    name: str = "backend"

    @abstractmethod
    def log(self, artifact: LoggedArtifact) -> ArtifactResult:
        """Deliver one committed version; raise (any error) or return ``ok=False`` on failure."""

    def fetch(self, name: str, version: str = "latest") -> LoggedArtifact:
        """Read a version back through the tracker's own client (optional)."""
        raise BackendError(f"backend {self.name!r} cannot read artifacts back")

    def start(self, experiment_name: str, run_id: str) -> None:  # noqa: B027 - optional hook
        """Open the tracker run for an experiment (optional)."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Close the tracker run (optional)."""


BackendFactory = Callable[[], Backend]
_registry: dict[str, BackendFactory] = {}
_registry_lock = threading.Lock()


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``name`` resolvable in this process (a class or any zero-argument factory)."""
    with _registry_lock:
        _registry[name] = factory


def unregister_backend(name: str) -> None:
    with _registry_lock:
        _registry.pop(name, None)


def available_backends() -> list[str]:
    """Names that resolve without importing anything: registered and entry points."""
    names = set(_registry) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def resolve_backend(spec: str | Backend) -> Backend:
    """A backend instance from a configured instance or a name."""
    if isinstance(spec, Backend):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigurationError(f"a backend is a name or a Backend instance, got {spec!r}")
    name = spec.strip().lower()
    with _registry_lock:
        factory = _registry.get(name)
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
    backend = factory()
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
