"""Short markdown previews of logged values, for the Dagster UI.

Tables show their shape and first rows, arrays their shape, dtype and first values, models
their class and parameter count, JSON-able values their first lines; images and figures are
embedded as a small PNG (Dagster's markdown renders ``data:`` images). Previews are capped in
size so the event log stays small; nothing here fails a step (a value that cannot be previewed
gets none).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

from ._values import StoredValue

MAX_TEXT_CHARS = 2_000
MAX_TABLE_ROWS = 5
MAX_TABLE_COLUMNS = 12
MAX_IMAGE_SIDE = 384
MAX_EMBEDDED_BYTES = 192 * 1024
_MIME_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp"}


def preview_markdown(obj: Any, stored: StoredValue, stored_file: Path | None) -> str | None:
    """A markdown preview of ``obj`` (``stored_file`` is the file a file value was logged from)."""
    try:
        if stored_file is not None:
            return _file_preview(stored_file, stored)
        if stored.kind == "model":
            return _model_preview(obj)
        if type(obj).__name__ == "DataFrame" and hasattr(obj, "head"):
            return _table_preview(obj)
        if type(obj).__name__ == "ndarray":
            return _array_preview(obj)
        return _text_preview(obj)
    except Exception:  # noqa: BLE001 - a preview is decoration; logging already succeeded
        return None


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
