"""Containers of safe values: one entry per leaf and a small structure entry, never pickle.

A dict, list or tuple (nested at any depth) that no single safe format holds, but whose every
leaf has one (a DataFrame, Series or arrow Table as parquet, an ndarray as numpy, a tensor as
torch, a scikit-learn model as skops, anything JSON-able inline), is stored as:

- one object entry per leaf that is not JSON-able, named after where it sits: ``value/train``
  (``value/train.parquet``), ``value/0``, ``value/a/b``; a key that is not a plain name segment
  (letters, digits, ``_``, ``-``) becomes ``_<position>``; the same object twice is one entry;
- the structure entry ``value`` (serializer ``container``, ``value.json``): the container in
  tagged JSON (``_serializers``: tuples stay tuples, non-str keys, sets, dates...) with
  ``{"__entry__": "value/train"}`` where a leaf goes; its ``extra`` lists the leaves.

``LoggedArtifact.load`` reads the structure and puts the leaves back: the same container types,
equal leaves. A value that is JSON-able as a whole stays one JSON entry; a dict of tensors stays
one torch entry (``resolve_safe`` holds them in one file already).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import IntegrityError
from ._frameworks import safe_model_serializer
from ._model import ArtifactObject
from ._serializers import ContainerSerializer, _is_key, _json_kind, _tagged, _untagged, resolve_safe

if TYPE_CHECKING:
    from ._artifact import TraceletArtifact

CONTAINER = ContainerSerializer.key
#: the structure file's format marker and version
FORMAT = "tracelet-container"
FORMAT_VERSION = 1
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_MAX_DEPTH = 100


@dataclass
class Layout:
    """How a container is stored: its leaves (entry name -> value, serializer) and the rest inline."""

    value: Any
    leaves: dict[str, tuple[Any, str]] = field(default_factory=dict)
    #: ``id`` of each leaf object -> its entry name (the same object twice is one entry)
    names: dict[int, str] = field(default_factory=dict)

    def structure(self) -> dict[str, Any]:
        """The structure entry's content."""
        return {"format": FORMAT, "version": FORMAT_VERSION, "value": _tagged(self.value, self.names)}


@dataclass(frozen=True)
class UnsafeLeaf:
    """Where in a container a value sits that only pickle can hold (``value['model']``)."""

    where: str
    obj: Any


def leaf_serializer(obj: Any) -> str | None:
    """The safe format a leaf is stored in as an entry of its own, or None when pickle alone holds it."""
    return resolve_safe(obj) or safe_model_serializer(obj)


def _children(obj: Any) -> list[tuple[Any, str, Any]] | None:
    """``(key, segment, value)`` for each item of a container this module stores, else None."""
    kind = type(obj)  # exact types: a subclass (named tuple, OrderedDict) would not come back as itself
    if kind in (list, tuple):
        return [(index, str(index), value) for index, value in enumerate(obj)]
    if kind is dict and all(isinstance(k, str) or _is_key(k) for k in obj):
        return [(key, key if isinstance(key, str) and _SEGMENT.fullmatch(key) else f"_{position}", value)
                for position, (key, value) in enumerate(obj.items())]
    return None


def _walk(obj: Any, where: str, entry: str, layout: Layout, depth: int) -> UnsafeLeaf | None:
    """Add ``obj``'s leaves to ``layout``; the first value only pickle can hold, if any."""
    if _json_kind(obj) is not None:
        return None  # inline in the structure
    children = _children(obj) if depth < _MAX_DEPTH else None
    if children is None:
        if depth == 0:
            return UnsafeLeaf(where, obj)  # not a container at all
        serializer = leaf_serializer(obj)
        if serializer is None:
            return UnsafeLeaf(where, obj)
        if id(obj) not in layout.names:
            layout.names[id(obj)] = entry
            layout.leaves[entry] = (obj, serializer)
        return None
    for key, segment, value in children:
        unsafe = _walk(value, f"{where}[{key!r}]", f"{entry}/{segment}", layout, depth + 1)
        if unsafe is not None:
            return unsafe
    return None


def plan(obj: Any, name: str) -> Layout | UnsafeLeaf | None:
    """How ``obj`` is stored as a container under ``name``: a ``Layout``; an ``UnsafeLeaf`` when
    it is a container with a value only pickle can hold; None when it is no container this module
    stores (not a dict, list or tuple, or one that a single safe entry holds)."""
    if _children(obj) is None or resolve_safe(obj) is not None:
        return None
    layout = Layout(obj)
    unsafe = _walk(obj, name, name, layout, 0)
    if unsafe is not None:
        return unsafe
    return layout if layout.leaves else None


def add_container(artifact: TraceletArtifact, layout: Layout, name: str, description: str | None = None) -> None:
    """Add the leaves of ``layout`` and its structure entry ``name`` to ``artifact``."""
    for entry, (leaf, serializer) in layout.leaves.items():
        artifact._add_object(leaf, entry, serializer, None, {})
    artifact._add_object(layout.structure(), name, CONTAINER, description,
                         {"container": type(layout.value).__name__, "entries": list(layout.leaves)})


def outer_objects(objects: Sequence[ArtifactObject]) -> list[ArtifactObject]:
    """The object entries that are values of their own: all but the leaves of a container."""
    leaves = {str(leaf) for o in objects if o.serializer == CONTAINER for leaf in o.extra.get("entries") or ()}
    return [o for o in objects if o.name not in leaves]


def rebuild(structure: Any, load_entry: Callable[[str], Any]) -> Any:
    """The container a structure entry describes, each leaf read with ``load_entry(name)``."""
    if not (isinstance(structure, dict) and structure.get("format") == FORMAT and "value" in structure):
        raise IntegrityError(f"a {CONTAINER!r} entry that is not a {FORMAT} structure",
                             [f"container structure unreadable: {str(structure)[:80]}"])
    return _untagged(structure["value"], load_entry)
