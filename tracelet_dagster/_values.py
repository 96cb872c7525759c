"""How an output value becomes entries of a version, how an input value is read back, and the
markdown preview the Dagster UI shows.

The kind of value is decided once, when it is logged, and recorded in the version's metadata
(``tracelet/value``), so loading never guesses:

- ``model``: torch modules, sklearn / xgboost / lightgbm estimators and keras models, through
  ``TraceletArtifact.add_model`` (torch as ``state_dict``, loaded with ``weights_only=True``;
  sklearn as pickle, loaded only with ``allow_pickle``).
- ``file`` / ``directory``: a ``pathlib.Path`` output; loaded as a verified local ``Path``.
- ``file`` also for matplotlib figures and PIL images, rendered to ``value.png``.
- ``object``: everything else, through ``add_object`` with a serializer picked by type (``auto``:
  DataFrame, Series, arrow Table -> parquet, ndarray -> numpy, tensors -> torch, JSON-able ->
  json, JSON-able with tuples -> json-tagged). A value only pickle can hold fails in the
  producing step unless pickle is allowed (``TRACELET_ALLOW_PICKLE`` / ``allow_pickle``) or
  asked for (``tracelet/serializer``).

Versions logged outside Dagster carry no ``tracelet/value``; their single object (or
``model``, or single file) is loaded, or the entry ``AssetIn(metadata={"tracelet/entry": ...})``
names.

Previews: tables show their shape and first rows, arrays their shape, dtype and first values,
models their class and parameter count, JSON-able values their first lines; images and figures
are embedded as a small PNG (Dagster's markdown renders ``data:`` images), capped in size.
"""

from __future__ import annotations

import base64
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracelet_core import ArtifactNotFoundError, ArtifactType, InvalidArtifactError, LoggedArtifact, TraceletArtifact
from tracelet_core._serializers import AUTO, resolve_safe

from . import _keys

VALUE_ENTRY = "value"
MAX_TEXT_CHARS = 2_000
MAX_TABLE_ROWS = 5
MAX_TABLE_COLUMNS = 12
MAX_IMAGE_SIDE = 384
MAX_EMBEDDED_BYTES = 192 * 1024
_MIME_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp"}

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg"}
_MODEL_ROOTS = {"torch", "sklearn", "xgboost", "lightgbm", "keras", "tensorflow", "tf_keras"}


@dataclass(frozen=True)
class StoredValue:
    """Where in a version an output value lives and how it was written."""

    kind: str  # "object" | "model" | "file" | "directory"
    entry: str  # object name (object, model) or artifact path (file, directory)
    serializer: str | None = None
    source: Path | None = None  # the local file or folder a file value was logged from

    def to_metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "entry": self.entry}


def _class_roots(obj: Any) -> set[str]:
    return {(klass.__module__ or "").split(".")[0] for klass in type(obj).__mro__}


def is_model(obj: Any) -> bool:
    """A model ``add_model`` knows: a torch module or an estimator of a known framework."""
    roots = _class_roots(obj)
    if "torch" in roots:
        return any(k.__name__ == "Module" and k.__module__.startswith("torch.nn") for k in type(obj).__mro__)
    return bool(roots & _MODEL_ROOTS) and (callable(getattr(obj, "fit", None)) or callable(getattr(obj, "save", None)))


def is_figure(obj: Any) -> bool:
    return "matplotlib" in _class_roots(obj) and callable(getattr(obj, "savefig", None))


def is_pil_image(obj: Any) -> bool:
    return "PIL" in _class_roots(obj) and callable(getattr(obj, "save", None)) and hasattr(obj, "mode")


def inferred_type(obj: Any) -> ArtifactType:
    """The artifact type a value gets unless ``tracelet/type`` says otherwise."""
    if isinstance(obj, os.PathLike):
        return ArtifactType.IMAGE if Path(obj).suffix.lower() in _IMAGE_SUFFIXES else ArtifactType.CUSTOM
    if is_model(obj):
        return ArtifactType.MODEL
    if is_figure(obj):
        return ArtifactType.VISUALIZATION
    if is_pil_image(obj):
        return ArtifactType.IMAGE
    if type(obj).__name__ == "DataFrame" or (_class_roots(obj) & {"numpy", "pyarrow", "polars"}):
        return ArtifactType.DATASET
    return ArtifactType.CUSTOM


def add_value(artifact: TraceletArtifact, obj: Any, serializer: str, scratch: Path, *,
              allow_pickle: bool) -> StoredValue:
    """Add ``obj`` to ``artifact`` in the safest format for its type; ``scratch`` holds any file
    rendered on the way (it must live until the artifact is logged)."""
    if isinstance(obj, os.PathLike):
        return _add_path(artifact, Path(obj))
    if is_model(obj):
        artifact.add_model(obj)
        return StoredValue("model", "model", _object_serializer(artifact, "model"))
    if is_figure(obj) or is_pil_image(obj):
        return _add_rendered_image(artifact, obj, scratch)
    artifact.add_object(obj, VALUE_ENTRY, _chosen_serializer(obj, serializer, allow_pickle))
    return StoredValue("object", VALUE_ENTRY, _object_serializer(artifact, VALUE_ENTRY))


def _chosen_serializer(obj: Any, serializer: str, allow_pickle: bool) -> str:
    """``serializer``, or for ``auto`` the safest one for ``obj``; refuses, in the producing step,
    a value only pickle can hold unless pickle is allowed (it could not be loaded otherwise)."""
    if serializer != AUTO:
        return serializer
    safe = resolve_safe(obj)
    if safe is not None:
        return safe
    if allow_pickle:
        return "pickle"
    raise InvalidArtifactError(
        f"a {type(obj).__module__}.{type(obj).__qualname__} can only be stored with pickle, which tracelet "
        "refuses to load by default; set TRACELET_ALLOW_PICKLE=true (or TraceletIOManager(allow_pickle=True)) "
        "if you trust the store, set metadata {'tracelet/serializer': ...} to pick a format, or return a "
        "value a safe format holds (DataFrame, Series, ndarray, tensors, JSON-able data, tuples)")


def _object_serializer(artifact: TraceletArtifact, name: str) -> str | None:
    return next((o.serializer for o in artifact.objects if o.name == name), None)


def _add_path(artifact: TraceletArtifact, path: Path) -> StoredValue:
    if path.is_dir():
        artifact.add_dir(path, VALUE_ENTRY)
        return StoredValue("directory", VALUE_ENTRY, source=path)
    entry = f"{VALUE_ENTRY}{''.join(path.suffixes)}"
    artifact.add_file(path, entry)
    return StoredValue("file", entry, source=path)


def _add_rendered_image(artifact: TraceletArtifact, obj: Any, scratch: Path) -> StoredValue:
    target = scratch / f"{VALUE_ENTRY}.png"
    if is_figure(obj):
        obj.savefig(target, format="png", metadata={"Software": None})  # no version stamp: same plot, same bytes
    else:
        obj.save(target, format="PNG")
    artifact.add_file(target, target.name)
    return StoredValue("file", target.name, source=target)


# -- reading back ---------------------------------------------------------------------------------
def load_value(logged: LoggedArtifact, *, allow_pickle: bool | None, entry: str | None = None) -> Any:
    """The value of ``logged`` as the IO manager stored it (or ``entry`` of a foreign version)."""
    stored = logged.metadata.get(_keys.VALUE)
    if entry is not None:
        return _load_entry(logged, entry, allow_pickle)
    if isinstance(stored, dict) and {"kind", "entry"} <= set(stored):
        return _load_stored(logged, str(stored["kind"]), str(stored["entry"]), allow_pickle)
    return _load_foreign(logged, allow_pickle)


def _load_stored(logged: LoggedArtifact, kind: str, entry: str, allow_pickle: bool | None) -> Any:
    if kind in {"object", "model"}:
        return logged.load(entry, allow_pickle=allow_pickle)
    if kind == "file":
        return logged.path(entry)
    if kind == "directory":
        return _local_directory(logged, entry)
    raise ArtifactNotFoundError(f"{logged.ref} stores its value as {kind!r}, which this version cannot read")


def _load_entry(logged: LoggedArtifact, entry: str, allow_pickle: bool | None) -> Any:
    if any(o.name == entry or o.path == entry for o in logged.objects):
        return logged.load(entry, allow_pickle=allow_pickle)
    if any(f.path == entry for f in logged.files):
        return logged.path(entry)
    if any(f.path.startswith(entry.rstrip("/") + "/") for f in logged.files):
        return _local_directory(logged, entry.rstrip("/"))
    raise ArtifactNotFoundError(f"{logged.ref} has no object, file or folder {entry!r}")


def _load_foreign(logged: LoggedArtifact, allow_pickle: bool | None) -> Any:
    """A version logged outside Dagster: its one object, its ``model``, or its one file."""
    objects, files = logged.objects, logged.files
    if len(objects) == 1 or any(o.name == "model" for o in objects):
        return logged.load(allow_pickle=allow_pickle)
    if not objects and len(files) == 1:
        return logged.path(files[0].path)
    entries = ", ".join([o.name for o in objects] + [f.path for f in files]) or "none"
    raise ArtifactNotFoundError(
        f"{logged.ref} holds several entries ({entries}); name one with "
        f"AssetIn(metadata={{'{_keys.ENTRY}': ...}}) or annotate the input as LoggedArtifact")


def _local_directory(logged: LoggedArtifact, prefix: str) -> Path:
    """Verified local copies of every file under ``prefix``; the folder that holds them."""
    files = [f.path for f in logged.files if f.path.startswith(prefix + "/")]
    if not files:
        raise ArtifactNotFoundError(f"{logged.ref} has no files under {prefix!r}")
    depth = len(Path(files[0]).relative_to(prefix).parts)
    first = logged.path(files[0])
    for path in files[1:]:
        logged.path(path)
    return first.parents[depth - 1]


# -- previews --------------------------------------------------------------------------------------
def preview_markdown(obj: Any, stored: StoredValue, stored_file: Path | None) -> str | None:
    """A markdown preview of ``obj`` (``stored_file`` is the file a file value was logged from),
    or None when there is nothing to show (an image too large to embed)."""
    if stored_file is not None:
        return _file_preview(stored_file, stored)
    if stored.kind == "model":
        return _model_preview(obj)
    if type(obj).__name__ == "DataFrame" and hasattr(obj, "head"):
        return _table_preview(obj)
    if type(obj).__name__ == "ndarray":
        return _array_preview(obj)
    return _text_preview(obj)


def _code_block(text: str, language: str = "") -> str:
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS] + "\n..."
    return f"```{language}\n{text}\n```"


def _text_preview(obj: Any) -> str:
    try:
        return _code_block(json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False), "json")
    except (TypeError, ValueError):
        return _code_block(repr(obj))


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")[:40]


def _table_preview(frame: Any) -> str:
    columns = list(frame.columns)[:MAX_TABLE_COLUMNS]
    head = frame.head(MAX_TABLE_ROWS)[columns]
    lines = [f"**{frame.shape[0]} rows x {frame.shape[1]} columns**", "",
             "| " + " | ".join(_cell(c) for c in columns) + " |",
             "|" + "---|" * len(columns)]
    for row in head.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _array_preview(array: Any) -> str:
    flat = array.reshape(-1)[:20].tolist()
    return f"**array** shape `{tuple(array.shape)}`, dtype `{array.dtype}`\n\n" + _code_block(repr(flat))


def _model_preview(model: Any) -> str:
    klass = type(model)
    lines = [f"**model** `{klass.__module__}.{klass.__qualname__}`"]
    parameters = getattr(model, "parameters", None)
    if callable(parameters) and any(k.__module__.startswith("torch") for k in klass.__mro__):
        count = sum(int(p.numel()) for p in parameters())
        lines.append(f"\n{count:,} parameters")
    get_params = getattr(model, "get_params", None)
    if callable(get_params):
        lines.append("\n" + _code_block(json.dumps(get_params(deep=False), default=repr, indent=2), "json"))
    return "\n".join(lines)


def _file_preview(path: Path, stored: StoredValue) -> str:
    if path.is_dir():
        files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        shown = "\n".join(files[:50]) + ("\n..." if len(files) > 50 else "")
        return f"**folder** with {len(files)} files\n\n" + _code_block(shown)
    if path.suffix.lower() in _MIME_TYPES:
        embedded = embedded_image(path)
        if embedded is not None:
            return embedded
    return f"**file** `{stored.entry}`, {path.stat().st_size:,} bytes"


def embedded_image(path: Path) -> str | None:
    """The image as a markdown ``data:`` image, shrunk to a thumbnail when PIL is installed."""
    data, mime = _thumbnail_png(path), "image/png"
    if data is None:
        data, mime = path.read_bytes(), _MIME_TYPES[path.suffix.lower()]
    if len(data) > MAX_EMBEDDED_BYTES:
        return None
    return f"![{path.name}](data:{mime};base64,{base64.b64encode(data).decode('ascii')})"


def _thumbnail_png(path: Path) -> bytes | None:
    try:
        from PIL import Image  # Deferred for import perf
    except ImportError:
        return None
    with Image.open(path) as image:
        image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        return buffer.getvalue()
