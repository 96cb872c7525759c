"""tracelet core: versioned, content-addressed ML artifacts with lineage.

Everything here is orchestrator-free; ``tracelet_prefect`` and ``tracelet_dagster`` are thin
adapters over it. Importing this package imports no tracker SDK, torch, prefect or dagster.
"""

from . import _json_form
from ._artifact import TraceletArtifact
from ._catalog import DraftRecord
from ._delivery import route
from ._diff import VersionDiff
from ._errors import (
    ArtifactDeletedError,
    ArtifactNotFoundError,
    BackendError,
    ConfigurationError,
    IntegrityError,
    InvalidArtifactError,
    NotReproducibleError,
    PermanentBackendError,
    ProtectedVersionError,
    QuarantinedError,
    StorageError,
    TraceletError,
    TransientBackendError,
    UnsafeDeserializationError,
)
from ._experiment import Experiment, ExperimentConfig
from ._lifecycle import AliasChange, PruneReport
from ._lineage import LineageEdge, LineageGraph
from ._logged import LoggedArtifact
from ._maintenance import GcReport
from ._model import ArtifactFile, ArtifactObject, ArtifactReference, ArtifactType, RunInfo
from ._quarantine import ImpactReport
from ._reproduce import ReproduceReport
from ._serializers import Serializer, register_serializer
from ._settings import TraceletSettings
from ._store import ArtifactStore
from ._trackers import ArtifactResult, Backend, available_backends, register_backend, resolve_backend
from ._values import add_value

__version__ = "0.1.0"

_json_form.attach_json_form()  # LoggedArtifact in pydantic and Prefect JSON results (needs the store)

__all__ = [
    "AliasChange",
    "ArtifactDeletedError",
    "ArtifactFile",
    "ArtifactNotFoundError",
    "ArtifactObject",
    "ArtifactReference",
    "ArtifactResult",
    "ArtifactStore",
    "ArtifactType",
    "Backend",
    "BackendError",
    "ConfigurationError",
    "DraftRecord",
    "Experiment",
    "ExperimentConfig",
    "GcReport",
    "ImpactReport",
    "IntegrityError",
    "InvalidArtifactError",
    "LineageEdge",
    "LineageGraph",
    "LoggedArtifact",
    "NotReproducibleError",
    "PermanentBackendError",
    "ProtectedVersionError",
    "PruneReport",
    "QuarantinedError",
    "ReproduceReport",
    "RunInfo",
    "Serializer",
    "StorageError",
    "TraceletArtifact",
    "TraceletError",
    "TraceletSettings",
    "TransientBackendError",
    "UnsafeDeserializationError",
    "VersionDiff",
    "__version__",
    "add_value",
    "available_backends",
    "register_backend",
    "register_serializer",
    "resolve_backend",
    "route",
]
