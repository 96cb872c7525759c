"""Turning a Python value into entries of an artifact: one rule for every producer.

``add_value`` is what a Dagster output, a Prefect task's return value and
``add_object(serializer="auto")``-style callers share, so the same value is stored the same way
wherever it comes from:

- ``model``: a model ``add_model`` knows (``_frameworks.model_framework``: a torch module, an
  estimator or keras model that can ``fit`` or ``save``), stored in its framework's format
  (torch as ``state_dict``; sklearn with skops, or pickle where skops cannot, which is refused
  unless pickle is allowed);
- ``file`` / ``directory``: a ``pathlib.Path`` (any ``os.PathLike``), added as is;
- ``file`` also for matplotlib figures and PIL images, rendered to ``<name>.png``;
- ``object``: everything else, with the serializer asked for, or for ``auto`` the safest one for
  its type (``_serializers.resolve_safe``); a dict, list or tuple of values that have a safe
  format (DataFrames, arrays, tensors...) is one entry per leaf plus a structure entry
  (``_containers``, serializer ``container``). A value only pickle can hold is refused (the
  error names ``TRACELET_ALLOW_PICKLE``, ``allow_pickle`` and, in a container, where it sits)
  unless pickle is allowed or asked for by name.

``inferred_type`` is the artifact type such a value gets when the caller names none, and
``serializes_to`` answers whether a value is one a version already holds (same bytes as an
object entry), so adapters never hash files themselves.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._artifact import TraceletArtifact
from ._containers import CONTAINER, Layout, UnsafeLeaf, add_container, plan
from ._errors import InvalidArtifactError
from ._frameworks import SkopsSerializer, is_model, untrusted_types
from ._hashing import hash_file
from ._model import ArtifactObject, ArtifactType
from ._serializers import AUTO, PickleSerializer, get_serializer, resolve_safe
from ._settings import TraceletSettings

#: The entry name a value is stored under unless the caller names another.
VALUE_ENTRY = "value"
#: The entry name ``add_model`` gives a model.
MODEL_ENTRY = "model"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg"})
_DATA_ROOTS = frozenset({"numpy", "pyarrow", "polars"})
#: What the refusal suggests for picking a format; adapters name their own way.
DEFAULT_SERIALIZER_HINT = "pass serializer= one of json, json-tagged, yaml, numpy, parquet, torch"


@dataclass(frozen=True)
class StoredValue:
    """Where in a version a value lives and how it was written."""

    kind: str  # "object" | "model" | "file" | "directory"
    entry: str  # object name (object, model) or artifact path (file, directory)
    serializer: str | None = None
    source: Path | None = None  # the local file or folder a file value was logged from

    def to_metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "entry": self.entry}


def _class_roots(obj: Any) -> set[str]:
    return {(klass.__module__ or "").split(".")[0] for klass in type(obj).__mro__}


def is_figure(obj: Any) -> bool:
    """A matplotlib figure (anything of matplotlib that can ``savefig``)."""
    return "matplotlib" in _class_roots(obj) and callable(getattr(obj, "savefig", None))


def is_pil_image(obj: Any) -> bool:
    return "PIL" in _class_roots(obj) and callable(getattr(obj, "save", None)) and hasattr(obj, "mode")


def inferred_type(obj: Any) -> ArtifactType:
    """The artifact type a value gets when the caller names none."""
    if isinstance(obj, os.PathLike):
        return ArtifactType.IMAGE if Path(obj).suffix.lower() in IMAGE_SUFFIXES else ArtifactType.CUSTOM
    if is_model(obj):
        return ArtifactType.MODEL
    if is_figure(obj):
        return ArtifactType.VISUALIZATION
    if is_pil_image(obj):
        return ArtifactType.IMAGE
    if type(obj).__name__ == "DataFrame" or (_class_roots(obj) & _DATA_ROOTS):
        return ArtifactType.DATASET
    return ArtifactType.CUSTOM


def add_value(artifact: TraceletArtifact, obj: Any, name: str = VALUE_ENTRY, *, serializer: str = AUTO,
              allow_pickle: bool | None = None, serializer_hint: str = DEFAULT_SERIALIZER_HINT) -> StoredValue:
    """Add ``obj`` to ``artifact`` in the safest format for its type; what was stored, and where.

    ``serializer`` applies to plain objects (models always use their framework's format);
    ``allow_pickle`` (default ``TRACELET_ALLOW_PICKLE``) lets ``auto`` fall back to pickle for a
    value no safe format holds, which is refused otherwise with an ``InvalidArtifactError``
    naming ``TRACELET_ALLOW_PICKLE`` and ``serializer_hint``.
    """
    if isinstance(obj, os.PathLike):
        return _add_path(artifact, Path(obj), name)
    if is_model(obj):
        artifact.add_model(obj)
        entry = artifact.objects[-1]
        if not get_serializer(entry.serializer).safe_to_load and not _pickle_allowed(allow_pickle):
            reason = entry.extra.get("fallback_reason")
            raise _only_pickle(obj, f"the model ({reason})" if reason else None, serializer_hint)
        _refuse_untrusted(artifact, [entry.name], allow_pickle)
        return StoredValue("model", entry.name, entry.serializer)
    if is_figure(obj) or is_pil_image(obj):
        return _add_rendered_image(artifact, obj, name)
    if serializer == AUTO:
        layout = plan(obj, name)
        if isinstance(layout, Layout):
            add_container(artifact, layout, name)
            _refuse_untrusted(artifact, list(layout.leaves), allow_pickle)
            return StoredValue("object", name, CONTAINER)
        if isinstance(layout, UnsafeLeaf) and not _pickle_allowed(allow_pickle):
            raise _only_pickle(layout.obj, layout.where, serializer_hint)
    artifact.add_object(obj, name, choose_serializer(obj, serializer, allow_pickle, serializer_hint))
    return StoredValue("object", name, _object_serializer(artifact, name))


def choose_serializer(obj: Any, serializer: str = AUTO, allow_pickle: bool | None = None,
                      serializer_hint: str = DEFAULT_SERIALIZER_HINT) -> str:
    """``serializer``, or for ``auto`` the safest one for ``obj``; refuses, when it is logged, a
    value only pickle can hold unless pickle is allowed (it could not be loaded otherwise)."""
    if serializer != AUTO:
        return serializer
    safe = resolve_safe(obj)
    if safe is not None:
        return safe
    if _pickle_allowed(allow_pickle):
        return PickleSerializer.key
    raise _only_pickle(obj, None, serializer_hint)


def _pickle_allowed(allow_pickle: bool | None) -> bool:
    return TraceletSettings.load().allow_pickle if allow_pickle is None else allow_pickle


def _refuse_untrusted(artifact: TraceletArtifact, names: list[str], allow_pickle: bool | None) -> None:
    """Refuse, unless pickle is allowed, a model just written with skops that holds types skops
    does not trust (a user's own estimator class): reading it back would be refused."""
    if _pickle_allowed(allow_pickle):
        return
    for entry in artifact.objects:
        staged = artifact._entries[entry.path].source
        if entry.name in names and entry.serializer == SkopsSerializer.key and staged is not None:
            untrusted = untrusted_types(staged)
            if untrusted:
                raise InvalidArtifactError(
                    f"{entry.name} ({entry.python_type}) holds types outside skops' trusted list "
                    f"({', '.join(untrusted)}), which tracelet refuses to load by default; set "
                    "TRACELET_ALLOW_PICKLE=true (or allow_pickle=True) if you trust the store")


def _only_pickle(obj: Any, where: str | None, serializer_hint: str) -> InvalidArtifactError:
    """The refusal of a value only pickle can hold (``where``: its place in a container)."""
    what = f"a {type(obj).__module__}.{type(obj).__qualname__}"
    subject = f"{where} ({what})" if where else what
    return InvalidArtifactError(
        f"{subject} can only be stored with pickle, which tracelet refuses to load by default; set "
        f"TRACELET_ALLOW_PICKLE=true (or allow_pickle=True) if you trust the store, {serializer_hint} to pick "
        "a format, or return a value a safe format holds (DataFrame, Series, ndarray, tensors, JSON-able "
        "data, tuples, or dicts, lists and tuples of these)")


def serializes_to(obj: Any, entry: ArtifactObject) -> bool:
    """Whether ``obj``, written with ``entry``'s serializer, gives exactly ``entry``'s bytes (a value
    that cannot be written that way is not that entry)."""
    if entry.digest is None:
        return False
    try:
        writer = get_serializer(entry.serializer)
        with tempfile.TemporaryDirectory(prefix="tracelet-confirm-") as tmp:
            target = Path(tmp) / f"object{writer.extension}"
            writer.dump(obj, target)
            return hash_file(target)[0] == entry.digest
    except Exception:  # noqa: BLE001 - any failure to write it means it is not that entry
        return False


def _object_serializer(artifact: TraceletArtifact, name: str) -> str | None:
    return next((o.serializer for o in artifact.objects if o.name == name), None)


def _add_path(artifact: TraceletArtifact, path: Path, name: str) -> StoredValue:
    if path.is_dir():
        artifact.add_dir(path, name)
        return StoredValue("directory", name, source=path)
    entry = f"{name}{''.join(path.suffixes)}"
    artifact.add_file(path, entry)
    return StoredValue("file", entry, source=path)


def _add_rendered_image(artifact: TraceletArtifact, obj: Any, name: str) -> StoredValue:
    entry = f"{name}.png"
    if is_figure(obj):
        def render(target: Path) -> None:  # no version stamp: the same plot gives the same bytes
            obj.savefig(target, format="png", metadata={"Software": None})
    else:
        def render(target: Path) -> None:
            obj.save(target, format="PNG")
    source = artifact._add_rendered(entry, render)
    return StoredValue("file", entry, source=source)
