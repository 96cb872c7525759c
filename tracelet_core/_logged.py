"""``LoggedArtifact``: one committed, immutable version, and how to read it back.

Every read (``download``, ``path``, ``load``) re-hashes the bytes it hands out and raises
``IntegrityError`` on a mismatch, so corrupted content is never returned silently.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._artifact import TraceletArtifact
from ._catalog import VersionRecord, entries_digest
from ._containers import CONTAINER, outer_objects, rebuild
from ._errors import ArtifactNotFoundError, IntegrityError, InvalidArtifactError
from ._hashing import hash_file
from ._model import ArtifactFile, ArtifactObject, ArtifactReference, ArtifactType, RunInfo
from ._names import format_version, validate_artifact_path, validate_name
from ._quarantine import quarantine_mark, refuse_quarantined
from ._serializers import load_with
from ._uris import open_reference, probe_reference, versioned

if TYPE_CHECKING:
    from ._store import ArtifactStore


def entry_from_dict(data: dict[str, Any]) -> ArtifactFile | ArtifactObject | ArtifactReference:
    """Rebuild a manifest entry, re-validating its path (a tampered manifest is refused)."""
    kind = data.get("kind")
    try:
        if kind == "file":
            return ArtifactFile(path=validate_artifact_path(data["path"]), size=int(data["size"]),
                                digest=data["digest"], description=data.get("description"))
        if kind == "object":
            return ArtifactObject(name=data["name"], path=validate_artifact_path(data["path"]),
                                  serializer=data["serializer"], size=int(data["size"]),
                                  digest=data["digest"], python_type=data.get("python_type"),
                                  description=data.get("description"), extra=dict(data.get("extra") or {}))
        if kind == "reference":
            return ArtifactReference(uri=data["uri"], name=validate_artifact_path(data["name"]),
                                     size=data.get("size"), checksum=data.get("checksum"),
                                     description=data.get("description"), version_id=data.get("version_id"))
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"malformed manifest entry {data!r}: {exc}", [f"entry {data!r}"]) from exc
    raise IntegrityError(f"unknown manifest entry kind {kind!r}", [f"entry {data!r}"])


def entry_to_dict(entry: ArtifactFile | ArtifactObject | ArtifactReference) -> dict[str, Any]:
    kind = {ArtifactFile: "file", ArtifactObject: "object", ArtifactReference: "reference"}[type(entry)]
    return {"kind": kind, **entry.to_dict()}


class LoggedArtifact:
    """A committed version: ``name:vN`` with its entries, lineage and aliases."""

    #: True on the version ``ArtifactStore.log`` returns when that call made it; False when
    #: identical content returned an existing version, and on versions read back.
    created: bool = False

    def __init__(self, record: VersionRecord, store: ArtifactStore) -> None:
        self._record = record
        self._store = store

    @functools.cached_property
    def _entries(self) -> tuple[list[ArtifactFile], list[ArtifactObject], list[ArtifactReference]]:
        """Entries parsed (and their paths re-validated) on first use, so one damaged row
        fails reads of its own version only, not listings of the whole store."""
        if entries_digest(self._record.entries) != self._record.digest:
            raise IntegrityError(f"{self.ref}: its entries do not hash to the version digest (the catalog "
                                 "was edited); refusing to serve them", [f"{self.ref}: entries differ from digest"])
        parsed = [entry_from_dict(e) for e in self._record.entries]
        return ([e for e in parsed if isinstance(e, ArtifactFile)],
                [e for e in parsed if isinstance(e, ArtifactObject)],
                [e for e in parsed if isinstance(e, ArtifactReference)])

    @property
    def _files(self) -> list[ArtifactFile]:
        return self._entries[0]

    @property
    def _objects(self) -> list[ArtifactObject]:
        return self._entries[1]

    @property
    def _references(self) -> list[ArtifactReference]:
        return self._entries[2]

    # -- identity ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._record.name

    @property
    def version(self) -> str:
        return format_version(self._record.version)

    @property
    def version_number(self) -> int:
        return self._record.version

    @property
    def ref(self) -> str:
        return self._record.ref

    @property
    def type(self) -> ArtifactType:
        return ArtifactType(self._record.type)

    @property
    def digest(self) -> str:
        return self._record.digest

    @property
    def aliases(self) -> list[str]:
        return list(self._record.aliases)

    @property
    def tags(self) -> list[str]:
        """The version's tags, read from the catalog (a later log of identical content may
        have added some)."""
        return self._store.catalog.tags_of(self._record.id)

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self._record.created_at, tz=timezone.utc)

    @property
    def size_bytes(self) -> int:
        return self._record.size_bytes

    @property
    def description(self) -> str | None:
        return self._record.description

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._record.metadata)

    @property
    def files(self) -> list[ArtifactFile]:
        return list(self._files)

    @property
    def objects(self) -> list[ArtifactObject]:
        return list(self._objects)

    @property
    def references(self) -> list[ArtifactReference]:
        return list(self._references)

    @property
    def producer(self) -> RunInfo | None:
        return self._record.producer

    @property
    def inputs(self) -> list[str]:
        return list(self._record.inputs)

    @property
    def partition(self) -> str | None:
        """The orchestrator partition this version belongs to, if any."""
        return self._record.partition

    @property
    def store(self) -> ArtifactStore:
        return self._store

    @property
    def quarantine(self) -> dict[str, Any] | None:
        """``None``, or ``{"reason", "at" (ISO time), "source" (the ref quarantined)}`` when
        this version is quarantined (read from the catalog each time)."""
        return quarantine_mark(self)

    def __repr__(self) -> str:
        return f"LoggedArtifact({self.ref!r}, type={self.type.value!r}, digest={self.digest[:19]!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles as its catalog record and how to reopen its store, so a version can cross to
        a Dask worker or into an orchestrator's result storage; no password travels."""
        return (type(self._store).restore_version, (*self._store.reopen_args(), self._record))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LoggedArtifact) and (self.ref, self.digest) == (other.ref, other.digest)

    def __hash__(self) -> int:
        return hash((self.ref, self.digest))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "ref": self.ref, "type": self.type.value,
            "digest": self.digest, "aliases": self.aliases, "created_at": self.created_at.isoformat(),
            "size_bytes": self.size_bytes, "description": self.description, "metadata": self.metadata,
            "files": [f.to_dict() for f in self._files],
            "objects": [o.to_dict() for o in self._objects],
            "references": [r.to_dict() for r in self._references],
            "producer": self.producer.to_dict() if self.producer else None,
            "inputs": self.inputs,
            "partition": self.partition,
            "quarantine": self.quarantine,
        }

    # -- reading ----------------------------------------------------------------------------
    def _safe_name(self) -> str:
        """The name, re-validated before it becomes part of a local path (a catalog edited
        to hold ``../..`` must not write outside the cache or the download folder)."""
        try:
            return validate_name(self.name)
        except InvalidArtifactError as exc:
            raise IntegrityError(f"the catalog holds an invalid artifact name {self.name!r}",
                                 [f"{self.name!r}: invalid name"]) from exc

    def _stored_entries(self) -> list[ArtifactFile | ArtifactObject]:
        return [*self._files, *self._objects]

    def _entry(self, artifact_path: str) -> ArtifactFile | ArtifactObject:
        path = validate_artifact_path(artifact_path)
        for entry in self._stored_entries():
            if entry.path == path:
                return entry
        raise ArtifactNotFoundError(f"{self.ref} has no file or object at {artifact_path!r}")

    def download(self, dest: str | os.PathLike[str] | None = None, *,
                 paths: Iterable[str] | None = None, references: bool = False,
                 allow_quarantined: bool = False) -> Path:
        """Write every file and object (or only ``paths``) into ``dest`` (default
        ``./artifacts/<name>/<vN>``).

        Each file is verified against its digest as it is written; files already present
        with the right content are kept. With ``references=True`` the referenced objects are
        fetched too (through fsspec): in a versioned S3 bucket the object version recorded
        (``version_id``), elsewhere what the URI holds after checking that its size and
        etag/checksum are still those recorded (a changed object raises ``IntegrityError``). A
        quarantined version raises ``QuarantinedError`` unless ``allow_quarantined``.
        """
        refuse_quarantined(self, allow_quarantined)
        root = Path(dest) if dest is not None else Path.cwd() / "artifacts" / self._safe_name() / self.version
        root.mkdir(parents=True, exist_ok=True)
        real_root = root.resolve()
        entries = self._stored_entries() if paths is None else [self._entry(p) for p in paths]
        total = sum(e.size for e in entries)
        with self._store.progress(f"download {self.ref}", total) as advance:
            for entry in entries:
                target = self._target(real_root, entry.path)
                if target.is_file() and not target.is_symlink() and target.stat().st_size == entry.size \
                        and hash_file(target)[0] == entry.digest:
                    advance(entry.size)
                    continue
                assert entry.digest is not None
                self._store.blobs.copy_blob_to(entry.digest, target, advance, label=entry.path, size=entry.size)
        if references:
            self._download_references(real_root)
        return root

    def _download_references(self, real_root: Path) -> None:
        changed = []
        for reference in self._references:
            if versioned(reference.uri, reference.version_id):
                continue  # the recorded object version is read: a newer one changes nothing
            size, checksum = probe_reference(reference.uri, strict=True)
            if (reference.size is not None and size is not None and size != reference.size) or (
                    reference.checksum is not None and checksum is not None and checksum != reference.checksum):
                changed.append(f"{reference.name}: {reference.uri} changed since it was logged "
                               f"(size {reference.size} -> {size}, checksum {reference.checksum} -> {checksum})")
        if changed:
            raise IntegrityError(f"{len(changed)} reference(s) of {self.ref} changed", changed)
        for reference in self._references:
            target = self._target(real_root, reference.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open_reference(reference.uri, reference.version_id) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)

    @staticmethod
    def _target(real_root: Path, artifact_path: str) -> Path:
        target = real_root / validate_artifact_path(artifact_path)
        parent = target.parent.resolve()
        if parent != real_root and real_root not in parent.parents:
            raise InvalidArtifactError(f"entry {artifact_path!r} would be written outside {real_root}")
        if target.is_symlink():
            raise InvalidArtifactError(f"refusing to write through the symlink {target}")
        return target

    def path(self, artifact_path: str, *, allow_quarantined: bool = False) -> Path:
        """A local, verified copy of one file or object (kept in the store's cache); a
        quarantined version raises ``QuarantinedError`` unless ``allow_quarantined``."""
        refuse_quarantined(self, allow_quarantined)
        entry = self._entry(artifact_path)
        cache_root = self._store.cache_dir / self._safe_name() / self.version
        cache_root.mkdir(parents=True, exist_ok=True)
        target = self._target(cache_root.resolve(), entry.path)
        assert entry.digest is not None
        if not (target.is_file() and hash_file(target)[0] == entry.digest):
            self._store.blobs.copy_blob_to(entry.digest, target, label=entry.path, size=entry.size)
        return target

    def load(self, name: str | None = None, *, allow_pickle: bool | None = None,
             allow_quarantined: bool = False) -> Any:
        """Deserialize an object entry (the only one, or ``model``, when ``name`` is omitted); a
        container stored one entry per leaf comes back whole, as the same container type.

        The blob is verified before the serializer sees it; pickle is refused unless
        ``allow_pickle`` (or ``TRACELET_ALLOW_PICKLE``) allows it. A quarantined version raises
        ``QuarantinedError`` unless ``allow_quarantined``.
        """
        refuse_quarantined(self, allow_quarantined)
        entry = self._object(name)
        allowed = self._store.settings.allow_pickle if allow_pickle is None else allow_pickle
        if entry.serializer == CONTAINER:
            return rebuild(self._load_entry(entry, allowed),
                           lambda leaf: self._load_entry(self._object(leaf), allowed))
        return self._load_entry(entry, allowed)

    def _load_entry(self, entry: ArtifactObject, allowed: bool) -> Any:
        assert entry.digest is not None
        with tempfile.TemporaryDirectory(prefix="tracelet-load-") as tmp:
            target = Path(tmp) / f"object{Path(entry.path).suffix}"
            self._store.blobs.copy_blob_to(entry.digest, target, label=entry.path, size=entry.size)
            return load_with(entry.serializer, target, allow_pickle=allowed)

    def _object(self, name: str | None) -> ArtifactObject:
        if name is None:
            outer = outer_objects(self._objects)  # a container's leaves are part of it
            if len(outer) == 1:
                return outer[0]
            models = [o for o in self._objects if o.name == "model"]
            if models:
                return models[0]
            names = ", ".join(o.name for o in self._objects) or "none"
            raise ArtifactNotFoundError(f"{self.ref}: say which object to load (objects: {names})")
        for obj in self._objects:
            if obj.name == name or obj.path == name:
                return obj
        raise ArtifactNotFoundError(f"{self.ref} has no object named {name!r}")

    def verify(self) -> None:
        """Re-hash every blob of this version; raise ``IntegrityError`` naming each bad one."""
        self._store.verify(self.ref)

    def new_draft(self) -> TraceletArtifact:
        """A builder holding this version's entries, to make the next version from."""
        draft = TraceletArtifact(self.name, self.type, self.description, self.metadata)
        for entry in self._stored_entries():
            draft._carry(entry)
        for reference in self._references:
            draft._carry_reference(reference)
        return draft
