"""Plain data types shared by every layer: artifact types, runs and manifest entries."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class ArtifactType(str, enum.Enum):
    """The 13 semantic artifact types; routing and automagic capture key off them."""

    MODEL = "model"
    CHECKPOINT = "checkpoint"
    WEIGHTS = "weights"
    DATASET = "dataset"
    SAMPLE = "sample"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    VISUALIZATION = "visualization"
    REPORT = "report"
    CONFIG = "config"
    CODE = "code"
    CUSTOM = "custom"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RunInfo:
    """Who produced or consumed a version: an orchestrator run (and step) or an experiment."""

    orchestrator: str
    run_id: str
    step: str | None = None
    name: str | None = None
    partition: str | None = None
    code_version: str | None = None
    #: Descriptive (provenance, names), not identity: left out of equality, like the hash.
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        """Stable identity of the run step: ``orchestrator/run_id[/step][[partition]]`` (one
        step of a backfill run handles several partitions, each its own run record)."""
        base = f"{self.orchestrator}/{self.run_id}"
        base = f"{base}/{self.step}" if self.step else base
        return f"{base}[{self.partition}]" if self.partition is not None else base

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunInfo:
        return cls(orchestrator=str(data["orchestrator"]), run_id=str(data["run_id"]),
                   step=data.get("step"), name=data.get("name"), partition=data.get("partition"),
                   code_version=data.get("code_version"), extra=dict(data.get("extra") or {}))

    def __hash__(self) -> int:
        return hash(self.key)


@dataclass(frozen=True)
class ArtifactFile:
    """A file inside a version: where it sits in the artifact, its size and digest."""

    path: str
    size: int
    digest: str | None = None
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ArtifactObject:
    """A serialized Python object: its name, the serializer key that wrote it, and its bytes."""

    name: str
    path: str
    serializer: str
    size: int
    digest: str | None = None
    python_type: str | None = None
    description: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ArtifactReference:
    """An external object recorded by URI (credentials stripped), never copied."""

    uri: str
    name: str
    size: int | None = None
    checksum: str | None = None
    description: str | None = None
    #: The object's version where the store keeps versions (an S3 ``VersionId``).
    version_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["version_id"] is None:  # unversioned: the same entry as before version ids
            del data["version_id"]
        return data
