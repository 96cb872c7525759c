"""Content diffs of one changed entry: tables, JSON/YAML objects, tensors and text.

The format is chosen from the object's serializer key, or from a file's suffix (a file of
another suffix under ``TEXT_MAX_BYTES`` that decodes as UTF-8 is text). Tables are read in
record batches with pyarrow (parquet: only the numeric columns, a row group at a time, without
pre-buffering; CSV: 1 MiB blocks on one thread), so memory stays bounded by a batch, not the
table: pyarrow's allocator peaks near 15 MB (parquet) and 40 MB (CSV) for any table size. Arrays and tensors are
compared in chunks of ``CHUNK_ELEMENTS``. Pickled entries are compared by digest only,
unless ``allow_pickle``. pandas, pyarrow, numpy and torch are imported only when needed.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import TraceletError
from ._serializers import load_with

if TYPE_CHECKING:
    from ._logged import LoggedArtifact

TEXT_MAX_BYTES = 1 << 20
TEXT_MAX_LINES = 200
BATCH_ROWS = 65_536
CHUNK_ELEMENTS = 1 << 20

_TABLE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv"}
_OBJECT_SUFFIXES = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}
_TENSOR_SUFFIXES = {".npy", ".npz", ".safetensors", ".pt", ".pth"}
_OBJECT_SERIALIZERS = {"json", "json-tagged", "yaml"}
_KNOWN_SUFFIXES = {*_TABLE_SUFFIXES, *_OBJECT_SUFFIXES, *_TENSOR_SUFFIXES}


def content_diff(a: LoggedArtifact, entry_a: dict[str, Any], b: LoggedArtifact, entry_b: dict[str, Any],
                 *, allow_pickle: bool = False) -> dict[str, Any] | None:
    """The content diff of an entry changed between ``a`` and ``b``, or ``None`` where its
    format is not understood (or is pickle and ``allow_pickle`` is false)."""
    kind = entry_a.get("kind")
    if kind != entry_b.get("kind") or kind == "reference":
        return None
    suffix = Path(entry_a["path"]).suffix.lower()
    if kind == "object":
        serializer = str(entry_a.get("serializer"))
        if serializer != entry_b.get("serializer") or (serializer == "pickle" and not allow_pickle):
            return None
    elif suffix not in _KNOWN_SUFFIXES and max(int(e.get("size") or 0) for e in (entry_a, entry_b)) >= TEXT_MAX_BYTES:
        return None  # not a format it reads, and too large for a text diff: never fetched
    path_a, path_b = a.path(entry_a["path"]), b.path(entry_b["path"])  # verified local copies
    try:
        if kind == "object":
            return _object_entry(path_a, path_b, serializer, str(entry_a["name"]), allow_pickle)
        if suffix in _TABLE_SUFFIXES:
            return table_diff(path_a, path_b, _TABLE_SUFFIXES[suffix])
        if suffix in _OBJECT_SUFFIXES:
            return object_diff(_read_object(path_a, suffix), _read_object(path_b, suffix))
        if suffix in _TENSOR_SUFFIXES:
            return tensor_diff(_tensor_file(path_a), _tensor_file(path_b))
    except _unreadable():  # not the format its name or serializer says: diffed as text, if it is
        if kind == "object":
            return None
    return text_diff(path_a, path_b, f"{a.ref}/{entry_a['path']}", f"{b.ref}/{entry_b['path']}")


def _unreadable() -> tuple[type[BaseException], ...]:
    """What a parser raises on bytes that are not the format it expected."""
    errors: list[type[BaseException]] = [ValueError, OSError, TypeError, KeyError, RuntimeError, TraceletError]
    try:
        import yaml  # Deferred for import perf

        errors.append(yaml.YAMLError)
    except ImportError:  # pragma: no cover - yaml is a dependency
        pass
    return tuple(errors)


def _object_entry(path_a: Path, path_b: Path, serializer: str, name: str,
                  allow_pickle: bool) -> dict[str, Any] | None:
    if serializer == "parquet":
        return table_diff(path_a, path_b, "parquet")
    if serializer in _OBJECT_SERIALIZERS:
        return object_diff(load_with(serializer, path_a, allow_pickle=False),
                           load_with(serializer, path_b, allow_pickle=False))
    if serializer in ("numpy", "torch"):
        return tensor_diff(_as_tensors(load_with(serializer, path_a, allow_pickle=False), name),
                           _as_tensors(load_with(serializer, path_b, allow_pickle=False), name))
    if serializer == "pickle" and allow_pickle:
        return value_diff(load_with(serializer, path_a, allow_pickle=True),
                          load_with(serializer, path_b, allow_pickle=True), name)
    return None


def value_diff(before: Any, after: Any, name: str) -> dict[str, Any] | None:
    """The content diff of two loaded values (an unpickled entry), by their type."""
    if _is_frame(before) and _is_frame(after):
        return _table_stats_diff(_frame_table(before), _frame_table(after))
    tensors_a, tensors_b = _as_tensors(before, name), _as_tensors(after, name)
    if tensors_a or tensors_b:
        return tensor_diff(tensors_a, tensors_b)
    return object_diff(before, after)


# -- objects ------------------------------------------------------------------------------------
def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of nested dicts by dotted key path (a non-dict value is its own leaf)."""
    if not isinstance(value, dict) or (prefix and not value):
        return {prefix: value}
    found: dict[str, Any] = {}
    for key, item in value.items():
        found.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return found


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        return repr(value)


def object_diff(before: Any, after: Any) -> dict[str, Any]:
    """``{"kind": "object", "changed": {path: [b, a]}, "added": [...], "removed": [...]}``."""
    flat_a, flat_b = flatten(before), flatten(after)
    changed = {key: [_jsonable(flat_a[key]), _jsonable(flat_b[key])]
               for key in sorted(set(flat_a) & set(flat_b)) if not same_value(flat_a[key], flat_b[key])}
    return {"kind": "object", "changed": changed, "added": sorted(set(flat_b) - set(flat_a)),
            "removed": sorted(set(flat_a) - set(flat_b))}


def same_value(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except (TypeError, ValueError):  # arrays and the like: compare their text
        return repr(a) == repr(b)


def _read_object(path: Path, suffix: str) -> Any:
    if _OBJECT_SUFFIXES[suffix] == "yaml":
        import yaml  # Deferred for import perf

        with path.open(encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


# -- tables ------------------------------------------------------------------------------------
def table_diff(path_a: Path, path_b: Path, fmt: str) -> dict[str, Any]:
    """Rows, columns, dtypes and numeric statistics of two tables, read in batches."""
    return _table_stats_diff(_open_table(path_a, fmt), _open_table(path_b, fmt))


class _Table:
    """A table's schema and a way to stream its numeric columns in record batches."""

    def __init__(self, dtypes: dict[str, str], numeric: list[str], batches: Any, rows: int | None) -> None:
        self.dtypes, self.numeric, self.batches, self.rows = dtypes, numeric, batches, rows


def _is_numeric(arrow_type: Any) -> bool:
    import pyarrow as pa  # Deferred for import perf

    return bool(pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type))


def _open_table(path: Path, fmt: str) -> _Table:
    import pyarrow.parquet as pq  # Deferred for import perf

    if fmt == "parquet":
        # no pre-buffering, one thread and a 1 MiB read buffer: a row group's column chunks
        # are streamed, not the file (the defaults held ~the whole file: 61 MB of a 64 MB table)
        parquet = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
        schema = parquet.schema_arrow
        numeric = [f.name for f in schema if _is_numeric(f.type)]
        return _Table({f.name: str(f.type) for f in schema}, numeric,
                      lambda cols: parquet.iter_batches(batch_size=BATCH_ROWS, columns=cols, use_threads=False),
                      parquet.metadata.num_rows)
    import pyarrow.csv as pacsv  # Deferred for import perf

    parse = pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",")
    # 1 MiB blocks, one thread: pyarrow's peak stays near 40 MB for any file (measured on 100 MB
    # and 480 MB files); it grows with the block size (4 MiB blocks peaked at 110 MB)
    read = pacsv.ReadOptions(use_threads=False, block_size=1 << 20)
    with pacsv.open_csv(path, read_options=read, parse_options=parse) as reader:
        schema = reader.schema
    # the first block decides each column's type; a later float in an int column would fail
    # the stream, so integer columns are read as float64 (their statistics are the same)
    import pyarrow as pa

    types = {f.name: (pa.float64() if pa.types.is_integer(f.type) else f.type) for f in schema}
    numeric = [f.name for f in schema if _is_numeric(f.type)]

    def batches(cols: list[str]) -> Iterator[Any]:
        convert = pacsv.ConvertOptions(column_types=types, include_columns=cols or [schema[0].name])
        with pacsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert) as stream:
            yield from stream

    return _Table({f.name: str(f.type) for f in schema}, numeric, batches, None)


def _is_frame(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas")


def _frame_table(frame: Any) -> _Table:
    import pyarrow as pa  # Deferred for import perf

    table = pa.Table.from_pandas(frame, preserve_index=False)
    numeric = [f.name for f in table.schema if _is_numeric(f.type)]
    return _Table({f.name: str(f.type) for f in table.schema}, numeric,
                  lambda cols: table.select(cols).to_batches(max_chunksize=BATCH_ROWS), table.num_rows)


def _stats(table: _Table, columns: list[str]) -> tuple[int, dict[str, dict[str, Any]]]:
    """Rows and ``{column: {mean, min, max, nulls}}``, one record batch at a time."""
    import pyarrow as pa  # Deferred for import perf
    import pyarrow.compute as pc

    acc: dict[str, dict[str, Any]] = {c: {"sum": 0.0, "count": 0, "min": None, "max": None, "nulls": 0}
                                      for c in columns}
    rows = 0
    if not columns and table.rows is not None:
        return table.rows, {}
    for batch in table.batches(columns):
        rows += batch.num_rows
        for column in columns:
            values = batch.column(column)
            state = acc[column]
            state["nulls"] += values.null_count
            state["count"] += len(values) - values.null_count
            if len(values) == values.null_count:
                continue
            state["sum"] += pc.sum(pc.cast(values, pa.float64())).as_py() or 0.0
            low, high = pc.min_max(values).values()
            state["min"] = low.as_py() if state["min"] is None else min(state["min"], low.as_py())
            state["max"] = high.as_py() if state["max"] is None else max(state["max"], high.as_py())
    stats = {c: {"mean": _finite(s["sum"] / s["count"]) if s["count"] else None,
                 "min": _finite(s["min"]), "max": _finite(s["max"]), "nulls": s["nulls"]}
             for c, s in acc.items()}
    return (table.rows if table.rows is not None else rows), stats


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _table_stats_diff(a: _Table, b: _Table) -> dict[str, Any]:
    both = [c for c in a.numeric if c in b.numeric]
    rows_a, stats_a = _stats(a, both)
    rows_b, stats_b = _stats(b, both)
    return {
        "kind": "table", "rows": [rows_a, rows_b],
        "columns_added": [c for c in b.dtypes if c not in a.dtypes],
        "columns_removed": [c for c in a.dtypes if c not in b.dtypes],
        "dtypes_changed": {c: [a.dtypes[c], b.dtypes[c]] for c in a.dtypes
                           if c in b.dtypes and a.dtypes[c] != b.dtypes[c]},
        "stats": {c: {k: [stats_a[c][k], stats_b[c][k]] for k in ("mean", "min", "max", "nulls")} for c in both},
    }


# -- tensors -----------------------------------------------------------------------------------
def _as_tensors(value: Any, name: str) -> dict[str, Any]:
    """Arrays and tensors in ``value`` by dotted key (a single one under ``name``)."""
    if _is_array(value):
        return {name: value}
    if isinstance(value, dict):
        return {key: leaf for key, leaf in flatten(value).items() if _is_array(leaf)}
    return {}


def _is_array(value: Any) -> bool:
    module = type(value).__module__
    return (module == "numpy" and type(value).__name__ == "ndarray") or (
        module.startswith("torch") and type(value).__name__ in ("Tensor", "Parameter"))


def _tensor_file(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        import numpy as np  # Deferred for import perf

        loaded = np.load(path, allow_pickle=False)
        return {path.stem: loaded} if suffix == ".npy" else {k: loaded[k] for k in loaded.files}
    if suffix == ".safetensors":
        from safetensors.numpy import load_file  # Deferred for import perf

        return dict(load_file(str(path)))
    return _as_tensors(load_with("torch", path, allow_pickle=False), path.stem)  # weights_only


def _numpy(value: Any) -> Any:
    import numpy as np  # Deferred for import perf

    if isinstance(value, np.ndarray):
        return value
    tensor = value.detach().to("cpu")  # a torch tensor (bfloat16 has no numpy dtype)
    return tensor.double().numpy() if tensor.dtype.is_floating_point else tensor.numpy()


def _max_abs_diff(a: Any, b: Any) -> float | None:
    import numpy as np  # Deferred for import perf

    flat_a, flat_b = _numpy(a).reshape(-1), _numpy(b).reshape(-1)
    worst: float | None = None
    for start in range(0, flat_a.size, CHUNK_ELEMENTS):
        part_a = flat_a[start:start + CHUNK_ELEMENTS].astype(np.float64 if not np.iscomplexobj(flat_a) else complex)
        part_b = flat_b[start:start + CHUNK_ELEMENTS].astype(part_a.dtype)
        delta = np.abs(part_a - part_b)
        if np.isnan(delta).all():
            continue
        found = float(np.nanmax(delta))
        worst = found if worst is None else max(worst, found)
    return 0.0 if flat_a.size == 0 else _finite(worst)


def tensor_diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``{"kind": "tensors", "added", "removed", "shape_changed", "max_abs_diff"}``."""
    shape_changed: dict[str, list[list[int]]] = {}
    max_abs: dict[str, float | None] = {}
    for key in sorted(set(before) & set(after)):
        shape_a, shape_b = list(before[key].shape), list(after[key].shape)
        if shape_a != shape_b:
            shape_changed[key] = [shape_a, shape_b]
        else:
            max_abs[key] = _max_abs_diff(before[key], after[key])
    return {"kind": "tensors", "added": sorted(set(after) - set(before)),
            "removed": sorted(set(before) - set(after)), "shape_changed": shape_changed,
            "max_abs_diff": max_abs}


# -- text --------------------------------------------------------------------------------------
def _text(path: Path) -> list[str] | None:
    if path.stat().st_size >= TEXT_MAX_BYTES:
        return None
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return None


def text_diff(path_a: Path, path_b: Path, label_a: str, label_b: str) -> dict[str, Any] | None:
    """A unified diff of two UTF-8 files under 1 MiB, at most ``TEXT_MAX_LINES`` lines."""
    lines_a, lines_b = _text(path_a), _text(path_b)
    if lines_a is None or lines_b is None:
        return None
    lines = list(difflib.unified_diff(lines_a, lines_b, fromfile=label_a, tofile=label_b, lineterm=""))
    if len(lines) > TEXT_MAX_LINES:
        more = len(lines) - (TEXT_MAX_LINES - 1)
        lines = [*lines[:TEXT_MAX_LINES - 1], f"... ({more} more lines)"]
    return {"kind": "text", "diff": "\n".join(lines)}
