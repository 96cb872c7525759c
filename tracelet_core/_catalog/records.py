"""The catalog's record types: what it is asked to commit and what its reads return.

Plain dataclasses with no database in them, shared by the read path, the write path, the
outbox and the store; plus the two functions that define a version's content order and
digest (``entry_order``, ``entries_digest``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import ArtifactNotFoundError
from .._hashing import hash_json
from .._model import RunInfo
from .._names import LATEST, format_version, version_number


@dataclass
class VersionRecord:
    """One catalog row of ``versions`` with everything a ``LoggedArtifact`` shows."""

    id: int
    name: str
    version: int
    type: str
    digest: str
    manifest_digest: str
    description: str | None
    metadata: dict[str, Any]
    size_bytes: int
    created_at: float
    producer: RunInfo | None = None
    inputs: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    partition: str | None = None
    #: When the version was deleted (epoch seconds) and why; ``None`` for a live version.
    deleted_at: float | None = None
    deleted_reason: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{format_version(self.version)}"


@dataclass(frozen=True)
class PreparedManifest:
    """A manifest written before the catalog's lock was taken, for a predicted version."""

    version: int
    inputs: list[str]
    created_at: float
    digest: str


#: Where an alias points, as the alias journal records it: ``{"version": 3, "digest": ...}``.
AliasTarget = dict[str, Any]
#: ``journal(after, before)``: persist a name's alias targets (see ``CommitHooks``).
AliasJournal = Callable[[dict[str, AliasTarget], dict[str, AliasTarget]], None]


@dataclass(frozen=True)
class DeliverySpec:
    """A backend a version is routed to, and how to rebuild that backend later."""

    backend: str
    config: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None  # the tracker run it belongs to (an experiment's run)
    run_name: str | None = None


@dataclass
class DeliveryRecord:
    """One row of the outbox."""

    id: int
    ref: str
    backend: str
    config: dict[str, Any]
    run_id: str | None
    run_name: str | None
    status: str
    attempts: int
    last_error: str | None
    result: dict[str, Any] | None
    updated_at: float


@dataclass
class AliasEventRecord:
    """One row of the alias-event outbox: ``alias`` of ``name`` was set on (``action="set"``)
    or taken off (``"remove"``) the version ``ref``, to be told to ``backend``."""

    id: int
    name: str
    alias: str
    action: str
    ref: str
    backend: str
    config: dict[str, Any]
    status: str
    attempts: int
    last_error: str | None


@dataclass
class DraftRecord:
    """An open ``upsert`` group waiting for ``finish``."""

    id: int
    name: str
    group: str
    type: str
    description: str | None
    metadata: dict[str, Any]
    created_at: float
    entries: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class VersionRequest:
    """A version to commit (``Catalog.commit_version``): its content, provenance and what
    goes with it in the same transaction.

    ``entry_rows`` are ``entries`` rows without ``version_id``; ``inputs`` are
    ``(name, selector)`` pairs; ``deliveries`` become pending outbox rows; ``sealed_draft`` (what
    ``finish`` read) is deleted in the same transaction after checking it did not change;
    ``prepared`` is a manifest already written, outside the lock, for the version number and
    inputs ``next_version`` predicted."""

    name: str
    type: str
    digest: str
    size_bytes: int
    entry_rows: Sequence[dict[str, Any]]
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    producer: RunInfo | None = None
    inputs: Sequence[tuple[str, str]] = ()
    aliases: Sequence[str] = ()
    idempotency_key: str | None = None
    partition: str | None = None
    deliveries: Sequence[DeliverySpec] = ()
    sealed_draft: DraftRecord | None = None
    prepared: PreparedManifest | None = None


@dataclass(frozen=True)
class CommitHooks:
    """The store's side effects that must run inside the commit's transaction, under its lock.

    ``write_manifest(version, created_at, input_labels) -> manifest digest`` writes the pending
    manifest when ``prepared`` did not predict the number and inputs (called at most once per
    distinct ``(version, input_labels)``, even when the transaction is retried).
    ``check_blobs()`` restores or refuses blobs ``gc`` collected since they were staged; it
    runs under the lock ``gc`` deletes under and must be idempotent (it re-puts only missing,
    content-addressed blobs), as a retried transaction runs it again.
    ``journal(after, before)`` persists the name's alias targets when they change, as the
    last step before the commit; it writes a whole snapshot, so a retry simply writes the
    newer one (and the store rewrites it from the committed state if the commit fails)."""

    write_manifest: Callable[[int, float, list[str]], str]
    check_blobs: Callable[[], None] | None = None
    journal: AliasJournal | None = None


def entry_order(entry: dict[str, Any]) -> tuple[bool, str]:
    """Manifest order: files and objects by path, then references by name."""
    return entry["kind"] == "reference", entry.get("path") or entry["name"]


def entries_digest(entry_dicts: Iterable[dict[str, Any]]) -> str:
    """A version's digest: the hash of the content-defining parts of its entries (not their
    descriptions), in manifest order."""
    keep = ("kind", "path", "name", "digest", "size", "serializer", "uri", "checksum", "version_id")
    return hash_json([{k: e[k] for k in keep if e.get(k) is not None}
                      for e in sorted(entry_dicts, key=entry_order)])


def entry_key(entry: dict[str, Any]) -> str:
    """The ``path`` column of an entry: its path, or a reference's name."""
    return str(entry["path"] if entry.get("kind") != "reference" else entry["name"])


def entry_row(entry: dict[str, Any]) -> dict[str, Any]:
    """The ``entries`` row of a manifest entry dict: its key, kind, digest, size and the dict."""
    return {"path": entry_key(entry), "kind": entry["kind"], "digest": entry.get("digest"),
            "size": entry.get("size"), "data": entry}


def label_order(label: str) -> tuple[str, int]:
    """``name:vN`` in the order reads list inputs: by name, then version number."""
    name, _, version = label.rpartition(":")
    return name, version_number(version) or 0


def from_json(value: Any) -> Any:
    """A JSON column's value (SQLite returns the text, PostgreSQL's drivers the object)."""
    return json.loads(value) if isinstance(value, str) else value


def run_from_row(row: Any) -> RunInfo:
    return RunInfo(orchestrator=row.orchestrator, run_id=row.run_id, step=row.step, name=row.name,
                   partition=row.partition, code_version=row.code_version, extra=from_json(row.extra) or {})


def no_such_version(name: str, selector: str, partition: str | None) -> ArtifactNotFoundError:
    what = "no versions" if selector == LATEST else f"no version or alias {selector!r}"
    where = f" for partition {partition!r}" if partition is not None and selector == LATEST else ""
    return ArtifactNotFoundError(f"artifact {name!r} has {what}{where}")
