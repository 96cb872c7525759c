"""``TraceletArtifact``: the builder users fill with files, directories, objects, references
and models before logging it as a version.

Nothing is hashed or copied into the store here: ``add_file``/``add_dir`` check the paths and
record them, ``add_object``/``add_model`` serialize into a per-process staging folder (each
builder's files are removed when it is garbage collected, the folder at exit),
``add_reference`` records a URI. The store streams and hashes everything when the artifact is
logged.

``add_reference`` on a prefix (an object-store URI ending in ``/``, or a local folder)
records one reference per object under it, each with its size, checksum/etag and version
id, up to ``max_objects``. ``tags`` label the version the artifact becomes; they are not
part of its content (see ``ArtifactStore.log``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ._containers import Layout, add_container, plan
from ._errors import InvalidArtifactError
from ._frameworks import model_payload
from ._model import ArtifactFile, ArtifactObject, ArtifactReference, ArtifactType
from ._names import validate_artifact_path, validate_name
from ._serializers import AUTO, get_serializer, resolve_auto
from ._uris import describe_reference, list_prefix, redact_uri, validate_reference_uri

#: At most this many objects under one reference prefix (as W&B does).
DEFAULT_MAX_OBJECTS = 10_000
MAX_TAG_LENGTH = 128


def _is_prefix(uri: str) -> bool:
    """An object-store URI ending in ``/``, or a local folder (a path or ``file://``)."""
    if "://" not in uri or uri.startswith(("file://", "local://")):
        local = uri.split("://", 1)[1] if "://" in uri else uri
        return os.path.isdir(local)
    return uri.endswith("/")


def coerce_type(artifact_type: object) -> ArtifactType:
    """``ArtifactType`` from an enum member or its string value."""
    try:
        return ArtifactType(artifact_type)
    except ValueError:
        known = ", ".join(t.value for t in ArtifactType)
        raise InvalidArtifactError(f"unknown artifact type {artifact_type!r}; known: {known}") from None


def validate_tag(tag: object) -> str:
    """Return ``tag`` if it can label a version: 1-128 printable characters, no surrounding
    blanks (unlike aliases, any wording: ``"needs review"``, ``"lr=0.1"``)."""
    if not isinstance(tag, str) or not tag or tag != tag.strip():
        raise InvalidArtifactError(f"invalid tag {tag!r}: a non-empty string without surrounding blanks")
    if len(tag) > MAX_TAG_LENGTH:
        raise InvalidArtifactError(f"tag {tag[:40]!r}... is longer than {MAX_TAG_LENGTH} characters")
    if not tag.isprintable():
        raise InvalidArtifactError(f"tag {tag!r} contains a control character")
    return tag


def validate_tags(tags: Iterable[str] | None) -> list[str]:
    """Each tag validated, duplicates dropped, first occurrence order kept."""
    if isinstance(tags, str):
        raise InvalidArtifactError(f"tags must be a list of strings, not the string {tags!r}")
    return list(dict.fromkeys(validate_tag(t) for t in (tags or ())))


def _parent_folders(path: str) -> list[str]:
    """``a/b/c.txt`` -> ``["a", "a/b"]``."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


_staging_lock = threading.Lock()
_staging_folder: tuple[int, Path] | None = None


def _process_staging_dir() -> Path:
    """One staging folder per process, made on first use and removed at exit (a folder per
    builder cost a mkdir and an rmtree per tiny version)."""
    global _staging_folder
    with _staging_lock:
        if _staging_folder is None or _staging_folder[0] != os.getpid():  # a forked child makes its own
            folder = Path(tempfile.mkdtemp(prefix="tracelet-staging-"))
            atexit.register(_remove_folder, os.getpid(), folder)
            _staging_folder = (os.getpid(), folder)
        return _staging_folder[1]


def _remove_folder(owner_pid: int, folder: Path) -> None:
    if os.getpid() == owner_pid:  # not a forked child's copy of the parent's registration
        shutil.rmtree(folder, ignore_errors=True)


def _remove_files(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class StagedEntry:
    """One entry waiting to be logged: the entry itself and where its bytes are now.

    ``source`` is a local file for new content, or ``None`` when the bytes are already a blob in
    the store (an entry carried over by ``LoggedArtifact.new_draft``).
    """

    entry: ArtifactFile | ArtifactObject
    source: Path | None


class TraceletArtifact:
    """A chainable builder for one artifact version."""

    def __init__(
        self,
        name: str,
        artifact_type: ArtifactType | str = ArtifactType.CUSTOM,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: Iterable[str] | None = None,
    ) -> None:
        self._name = validate_name(name)
        self._type = coerce_type(artifact_type)
        self.description = description
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._tags = validate_tags(tags)
        self._entries: dict[str, StagedEntry] = {}
        self._folders: set[str] = set()
        self._references: dict[str, ArtifactReference] = {}
        self._staged_files: list[Path] | None = None

    # -- properties -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def type(self) -> ArtifactType:
        return self._type

    @property
    def tags(self) -> list[str]:
        """Labels for the version this becomes (not unique, not part of its content)."""
        return list(self._tags)

    @tags.setter
    def tags(self, tags: Iterable[str]) -> None:
        self._tags = validate_tags(tags)

    @property
    def files(self) -> list[ArtifactFile]:
        return [s.entry for s in self._entries.values() if isinstance(s.entry, ArtifactFile)]

    @property
    def objects(self) -> list[ArtifactObject]:
        return [s.entry for s in self._entries.values() if isinstance(s.entry, ArtifactObject)]

    @property
    def references(self) -> list[ArtifactReference]:
        return list(self._references.values())

    @property
    def size_bytes(self) -> int:
        """Bytes of files and objects, plus the known sizes of references."""
        stored = sum(s.entry.size for s in self._entries.values())
        return stored + sum(r.size or 0 for r in self._references.values())

    @property
    def staged_entries(self) -> list[StagedEntry]:
        """Files and objects with the location of their bytes (used by the store)."""
        return list(self._entries.values())

    # -- builders ---------------------------------------------------------------------------
    def add_file(
        self,
        local_path: str | os.PathLike[str],
        artifact_path: str | None = None,
        description: str | None = None,
    ) -> TraceletArtifact:
        """Add one local file (hashed and copied when the artifact is logged)."""
        source = Path(local_path)
        if not source.exists():
            raise InvalidArtifactError(f"add_file: {source} does not exist")
        if not source.is_file():
            raise InvalidArtifactError(f"add_file: {source} is not a regular file (use add_dir for folders)")
        path = validate_artifact_path(artifact_path if artifact_path is not None else source.name)
        self._stage(path, ArtifactFile(path=path, size=source.stat().st_size, description=description),
                    source.resolve())
        return self

    def add_dir(
        self, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> TraceletArtifact:
        """Add every file under a folder; symlinks pointing outside it are refused."""
        root = Path(local_path)
        if not root.is_dir():
            raise InvalidArtifactError(f"add_dir: {root} is not an existing directory")
        real_root = root.resolve()
        prefix = validate_artifact_path(artifact_path) if artifact_path else None
        found: list[tuple[str, Path, int]] = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            current = Path(dirpath)
            for dirname in list(dirnames):
                if (current / dirname).is_symlink():
                    self._check_inside(real_root, current / dirname)
                    dirnames.remove(dirname)  # content inside the root is reached directly
            for filename in sorted(filenames):
                file_path = current / filename
                resolved = self._check_inside(real_root, file_path)
                if not resolved.is_file():
                    raise InvalidArtifactError(f"add_dir: {file_path} is not a regular file")
                relative = file_path.relative_to(root).as_posix()
                path = validate_artifact_path(f"{prefix}/{relative}" if prefix else relative)
                found.append((path, resolved, resolved.stat().st_size))
        for path, _, _ in found:  # check every path before adding any: all or nothing
            self._check_free(path)
        for path, resolved, size in sorted(found):
            self._stage(path, ArtifactFile(path=path, size=size), resolved)
        return self

    def add_object(
        self, obj: Any, name: str, serializer: str = "json", description: str | None = None
    ) -> TraceletArtifact:
        """Serialize ``obj`` now (a snapshot) with the serializer ``serializer``; with ``auto``, a
        dict, list or tuple of DataFrames, arrays, tensors... is one entry per leaf plus its
        structure entry ``name`` (``_containers``), loaded back as the same container."""
        if serializer == AUTO:
            layout = plan(obj, validate_artifact_path(name))
            if isinstance(layout, Layout):
                add_container(self, layout, name, description)
                return self
        return self._add_object(obj, name, serializer, description, {})

    def add_reference(
        self,
        uri: str,
        size_bytes: int | None = None,
        description: str | None = None,
        name: str | None = None,
        max_objects: int = DEFAULT_MAX_OBJECTS,
    ) -> TraceletArtifact:
        """Record an external object by URI; its bytes are never copied.

        A prefix (``s3://bucket/images/``, any fsspec URI ending in ``/``, or a local folder)
        records every object under it, named by its path below the prefix (below ``name``
        when given), each with size, checksum/etag and version id; more than
        ``max_objects`` objects, or none, raise ``InvalidArtifactError`` and add nothing.
        """
        validate_reference_uri(uri)
        if size_bytes is not None and (not isinstance(size_bytes, int) or size_bytes < 0):
            raise InvalidArtifactError(f"size_bytes must be a non-negative int, got {size_bytes!r}")
        if _is_prefix(uri):
            if size_bytes is not None:
                raise InvalidArtifactError(f"{redact_uri(uri)} is a prefix: its objects' sizes are read, "
                                           "size_bytes does not apply")
            return self._add_prefix(uri, description, name, max_objects)
        clean_uri = redact_uri(uri)
        ref_name = validate_artifact_path(name or self._default_reference_name(clean_uri))
        if ref_name in self._references or ref_name in self._entries:
            raise InvalidArtifactError(f"artifact {self._name!r} already has an entry {ref_name!r}")
        probed_size, checksum, version_id = describe_reference(uri)
        self._references[ref_name] = ArtifactReference(
            uri=clean_uri,
            name=ref_name,
            size=size_bytes if size_bytes is not None else probed_size,
            checksum=checksum,
            description=description,
            version_id=version_id,
        )
        return self

    def _add_prefix(self, uri: str, description: str | None, name: str | None,
                    max_objects: int) -> TraceletArtifact:
        if not isinstance(max_objects, int) or max_objects < 1:
            raise InvalidArtifactError(f"max_objects must be a positive int, got {max_objects!r}")
        base = validate_artifact_path(name) if name else None
        found = list_prefix(uri, max_objects)
        if not found:
            raise InvalidArtifactError(f"no objects under {redact_uri(uri)}")
        references = []
        for item in found:
            ref_name = validate_artifact_path(f"{base}/{item.relative}" if base else item.relative)
            references.append(ArtifactReference(uri=redact_uri(item.uri), name=ref_name, size=item.size,
                                                checksum=item.checksum, description=description,
                                                version_id=item.version_id))
        names = {r.name for r in references}
        for reference in references:  # every name checked before any is added: all or nothing
            self._check_free(reference.name)
            for folder in _parent_folders(reference.name):
                if folder in self._references or folder in names:
                    raise InvalidArtifactError(f"reference {reference.name!r} conflicts with {folder!r}: "
                                               "a path cannot be both object and folder")
        for reference in references:
            self._references[reference.name] = reference
            self._folders.update(_parent_folders(reference.name))
        return self

    def add_model(
        self,
        model: Any,
        framework: str | None = None,
        input_example: Any = None,
        description: str | None = None,
    ) -> TraceletArtifact:
        """Store a model in its framework's safe format (PyTorch: ``state_dict``)."""
        payload = model_payload(model, framework)
        name = self._free_object_name("model")
        try:
            self._add_object(payload.obj, name, payload.serializer, description, payload.extra)
        except InvalidArtifactError as exc:  # skops cannot write it: pickle, loaded only where allowed
            if payload.fallback is None:
                raise
            self._add_object(payload.obj, name, payload.fallback, description,
                             {**payload.extra, "fallback_from": payload.serializer, "fallback_reason": str(exc)[:300]})
        self.metadata.setdefault("framework", payload.extra["framework"])
        if input_example is not None:
            self._add_object(input_example, self._free_object_name(f"{name}_input_example"), AUTO,
                             "input example", {})
        return self

    def _add_rendered(self, artifact_path: str, render: Callable[[Path], None],
                     description: str | None = None) -> Path:
        """Add a file that ``render`` writes now (a plot saved as PNG), staged like an object's
        bytes (removed with this builder); the staged file, for a caller that shows it."""
        path = validate_artifact_path(artifact_path)
        self._check_free(path)
        fd, tmp_name = tempfile.mkstemp(dir=self._staging_dir(), suffix=Path(path).suffix)
        os.close(fd)
        target = Path(tmp_name)
        assert self._staged_files is not None
        self._staged_files.append(target)
        try:
            render(target)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        self._stage(path, ArtifactFile(path=path, size=target.stat().st_size, description=description), target)
        return target

    # -- serialization ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self._name,
            "type": self._type.value,
            "description": self.description,
            "metadata": dict(self.metadata),
            "tags": list(self._tags),
            "size_bytes": self.size_bytes,
            "files": [f.to_dict() for f in self.files],
            "objects": [o.to_dict() for o in self.objects],
            "references": [r.to_dict() for r in self.references],
        }

    def __repr__(self) -> str:
        return (f"TraceletArtifact(name={self._name!r}, type={self._type.value!r}, "
                f"entries={len(self._entries)}, references={len(self._references)})")

    # -- internals --------------------------------------------------------------------------
    def _add_object(
        self, obj: Any, name: str, serializer: str, description: str | None, extra: dict[str, Any]
    ) -> TraceletArtifact:
        object_name = validate_artifact_path(name)
        key = resolve_auto(obj) if serializer == AUTO else serializer
        writer = get_serializer(key)
        path = validate_artifact_path(object_name + writer.extension)
        self._check_free(path)
        fd, tmp_name = tempfile.mkstemp(dir=self._staging_dir(), suffix=writer.extension)
        os.close(fd)
        target = Path(tmp_name)
        assert self._staged_files is not None
        self._staged_files.append(target)
        try:
            writer.dump(obj, target)
        except InvalidArtifactError:
            target.unlink(missing_ok=True)
            raise
        except Exception as exc:
            target.unlink(missing_ok=True)
            raise InvalidArtifactError(
                f"serializer {key!r} cannot write object {name!r} ({type(obj).__name__}): {exc}"
            ) from exc
        entry = ArtifactObject(
            name=object_name,
            path=path,
            serializer=key,
            size=target.stat().st_size,
            python_type=f"{type(obj).__module__}.{type(obj).__qualname__}",
            description=description,
            extra=dict(extra),
        )
        self._stage(path, entry, target)
        return self

    def _stage(self, path: str, entry: ArtifactFile | ArtifactObject, source: Path | None) -> None:
        self._check_free(path)
        self._entries[path] = StagedEntry(entry=entry, source=source)
        self._folders.update(_parent_folders(path))

    def _carry(self, entry: ArtifactFile | ArtifactObject) -> None:
        """Add an entry whose bytes already live in the store (used by ``new_draft``)."""
        self._stage(entry.path, entry, None)

    def _carry_reference(self, reference: ArtifactReference) -> None:
        self._references[reference.name] = replace(reference)

    def _check_free(self, path: str) -> None:
        """Refuse a path already taken, or one that would be both a file and a folder.

        O(depth of the path), not O(entries): ``_folders`` holds every folder an entry sits in.
        """
        if path in self._entries or path in self._references:
            raise InvalidArtifactError(f"artifact {self._name!r} already has an entry at {path!r}")
        if path in self._folders:
            raise InvalidArtifactError(f"entry {path!r} conflicts with entries inside the folder {path!r}")
        for folder in _parent_folders(path):
            if folder in self._entries:
                raise InvalidArtifactError(
                    f"entry {path!r} conflicts with {folder!r}: a path cannot be both file and folder")

    def _free_object_name(self, base: str) -> str:
        names = {o.name for o in self.objects}
        candidate, counter = base, 1
        while candidate in names:
            candidate = f"{base}_{counter}"
            counter += 1
        return candidate

    @staticmethod
    def _default_reference_name(uri: str) -> str:
        tail = uri.rstrip("/").rsplit("/", 1)[-1]
        cleaned = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in tail).lstrip("._-")
        return cleaned or "reference"

    @staticmethod
    def _check_inside(real_root: Path, path: Path) -> Path:
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # dangling link, symlink loop
            raise InvalidArtifactError(f"add_dir: {path} cannot be resolved ({exc})") from exc
        if resolved != real_root and real_root not in resolved.parents:
            raise InvalidArtifactError(
                f"add_dir: {path} is a symlink pointing outside {real_root} ({resolved}); refused"
            )
        return resolved

    def _staging_dir(self) -> Path:
        if self._staged_files is None:
            self._staged_files = []
            weakref.finalize(self, _remove_files, self._staged_files)
        return _process_staging_dir()
