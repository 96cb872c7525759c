"""How an input value is read back from a version, and the markdown preview the Dagster UI shows.

How an output value becomes entries is the core's ``tracelet_core.add_value`` (the same rule a
Prefect task's return value follows); the IO manager records what it stored in the version's
metadata (``tracelet/value``: kind and entry), so loading never guesses:

- ``object`` / ``model``: loaded with the entry's recorded serializer (pickle only with
  ``allow_pickle``);
- ``file``: a verified local ``Path``; ``directory``: the verified local folder.

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
from pathlib import Path
from typing import Any

from tracelet_core import ArtifactNotFoundError, LoggedArtifact
from tracelet_core._containers import outer_objects
from tracelet_core._values import StoredValue

from . import _keys

MAX_TEXT_CHARS = 2_000
MAX_TABLE_ROWS = 5
MAX_TABLE_COLUMNS = 12
MAX_IMAGE_SIDE = 384
MAX_EMBEDDED_BYTES = 192 * 1024
_MIME_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp"}
#: How a Dagster user picks a format, named in the refusal of a value only pickle can hold.
SERIALIZER_HINT = f"set metadata {{'{_keys.SERIALIZER}': ...}}"


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
    if len(outer_objects(objects)) == 1 or any(o.name == "model" for o in objects):  # a container is one value
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
        embedded = embedded_image(path, Path(stored.entry).name)
        if embedded is not None:
            return embedded
    return f"**file** `{stored.entry}`, {path.stat().st_size:,} bytes"


def embedded_image(path: Path, name: str | None = None) -> str | None:
    """The image as a markdown ``data:`` image named ``name`` (default: the file's), shrunk to a
    thumbnail when PIL is installed."""
    data, mime = _thumbnail_png(path), "image/png"
    if data is None:
        data, mime = path.read_bytes(), _MIME_TYPES[path.suffix.lower()]
    if len(data) > MAX_EMBEDDED_BYTES:
        return None
    return f"![{name or path.name}](data:{mime};base64,{base64.b64encode(data).decode('ascii')})"


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
