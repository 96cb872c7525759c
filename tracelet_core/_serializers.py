"""Typed, keyed serializers for ``add_object`` and ``add_model``.

Each serializer is a small class with a frozen ``key``; the key is saved with the entry, so
loading never guesses. Built-ins are registered lazily by dotted path (heavy libraries such as
numpy, pandas and torch are imported only when their serializer runs); third parties register
more through the ``tracelet.serializers`` entry-point group.

``auto`` is not a serializer of its own: :func:`resolve_auto` picks the safest concrete one for
an object (DataFrame, Series, arrow Table -> parquet, ndarray -> numpy, tensors -> torch,
JSON-able -> json, JSON-able holding tuples -> json-tagged, else pickle), and that concrete key
is what gets recorded. :func:`resolve_safe` is the same choice without the pickle fallback.

``json-tagged`` is JSON in which each value plain JSON cannot hold is one tagged object:
``{"__tuple__": [...]}``, ``{"__set__": [...]}`` and ``{"__frozenset__": [...]}`` (items in a
fixed order, so equal sets give equal bytes), ``{"__items__": [[key, value], ...]}`` for a dict
with int, float, bool or tuple keys, ``{"__bytes__": "<base64>"}``, ``{"__datetime__": iso}``,
``{"__date__": iso}``, ``{"__decimal__": "1.10"}`` and ``{"__uuid__": "..."}`` (a dict whose
only key is a tag is wrapped ``{"__dict__": {...}}``), so these come back equal and of the same
type, nested at any depth, without pickle. Parquet holds a pandas Series (name and index kept) or a pyarrow
Table as well as a DataFrame; which one it was is saved in the file's schema metadata.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
import pickle
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from ._capture_guard import suppress_capture
from ._errors import ConfigurationError, IntegrityError, InvalidArtifactError, UnsafeDeserializationError
from ._registry import Registry

AUTO = "auto"


class Serializer(ABC):
    """Writes one object to one file and reads it back."""

    key: ClassVar[str]
    extension: ClassVar[str]
    #: False for formats whose loading can execute code (pickle): refused unless allowed.
    safe_to_load: ClassVar[bool] = True

    @abstractmethod
    def dump(self, obj: Any, path: Path) -> None:
        """Write ``obj`` to ``path``; raise ``InvalidArtifactError`` if it cannot."""

    @abstractmethod
    def load(self, path: Path) -> Any:
        """Read the object back from ``path``."""

    def load_allowing(self, path: Path, allow_unsafe: bool) -> Any:
        """``load``; a format that checks what it may load (skops' trusted types) trusts
        everything in the file when ``allow_unsafe`` (what ``allow_pickle`` allows)."""
        return self.load(path)


class JsonSerializer(Serializer):
    key = "json"
    extension = ".json"

    def dump(self, obj: Any, path: Path) -> None:
        try:
            text = json.dumps(obj, allow_nan=False, indent=2, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise InvalidArtifactError(f"object is not JSON-serializable: {exc}") from exc
        path.write_text(text, encoding="utf-8")

    def load(self, path: Path) -> Any:
        return json.loads(path.read_text(encoding="utf-8"))


_TUPLE_TAG = "__tuple__"
_DICT_TAG = "__dict__"
_ITEMS_TAG = "__items__"
#: in a container's structure, where a leaf stored as an entry of its own goes (``_containers``)
ENTRY_TAG = "__entry__"
#: scalar types plain JSON cannot hold -> (tag, encode); exact types only (a pandas Timestamp,
#: a datetime subclass, would not come back as itself)
_SCALAR_TAGS: dict[type, tuple[str, Callable[[Any], str]]] = {
    bytes: ("__bytes__", lambda b: base64.b64encode(b).decode("ascii")),
    datetime.datetime: ("__datetime__", lambda d: d.isoformat()),
    datetime.date: ("__date__", lambda d: d.isoformat()),
    decimal.Decimal: ("__decimal__", str),
    uuid.UUID: ("__uuid__", str),
}
_SCALAR_DECODERS: dict[str, Callable[[str], Any]] = {
    "__bytes__": lambda text: base64.b64decode(text.encode("ascii"), validate=True),
    "__datetime__": datetime.datetime.fromisoformat,
    "__date__": datetime.date.fromisoformat,
    "__decimal__": decimal.Decimal,
    "__uuid__": uuid.UUID,
}
_SET_TAGS: dict[type, str] = {set: "__set__", frozenset: "__frozenset__"}
_TAGS = frozenset({_TUPLE_TAG, _DICT_TAG, _ITEMS_TAG, ENTRY_TAG, *_SCALAR_DECODERS, *_SET_TAGS.values()})
#: dict keys ``__items__`` keeps (besides str, which plain JSON keeps)
_KEY_TYPES = (int, float, bool, tuple)


def _canonical(encoded: Any) -> str:
    return json.dumps(encoded, sort_keys=True, ensure_ascii=False)


def _tagged(obj: Any, entries: Mapping[int, str] | None = None) -> Any:
    """``obj`` with every value plain JSON cannot hold tagged, and tag-shaped dicts wrapped; an
    object whose ``id`` is in ``entries`` becomes ``{"__entry__": name}`` (a container's leaf)."""
    if entries and id(obj) in entries:
        return {ENTRY_TAG: entries[id(obj)]}
    kind = type(obj)
    if kind is tuple:
        return {_TUPLE_TAG: [_tagged(item, entries) for item in obj]}
    if isinstance(obj, list):
        return [_tagged(item, entries) for item in obj]
    if kind in _SET_TAGS:
        return {_SET_TAGS[kind]: sorted((_tagged(item) for item in obj), key=_canonical)}
    if kind in _SCALAR_TAGS:
        tag, encode = _SCALAR_TAGS[kind]
        return {tag: encode(obj)}
    if isinstance(obj, dict):
        if not all(isinstance(key, str) for key in obj):
            return {_ITEMS_TAG: [[_tagged(key), _tagged(value, entries)] for key, value in obj.items()]}
        encoded = {key: _tagged(value, entries) for key, value in obj.items()}
        return {_DICT_TAG: encoded} if len(obj) == 1 and next(iter(obj)) in _TAGS else encoded
    return obj


def _untagged(obj: Any, load_entry: Callable[[str], Any] | None = None) -> Any:
    """The value ``_tagged`` encoded; ``load_entry`` reads back a leaf stored as an entry."""
    if isinstance(obj, list):
        return [_untagged(item, load_entry) for item in obj]
    if not isinstance(obj, dict):
        return obj
    tag = next(iter(obj)) if len(obj) == 1 else None
    if tag == _TUPLE_TAG:
        return tuple(_untagged(item, load_entry) for item in obj[tag])
    if tag == _DICT_TAG:
        return {key: _untagged(value, load_entry) for key, value in obj[tag].items()}
    if tag == _ITEMS_TAG:
        return {_untagged(key): _untagged(value, load_entry) for key, value in obj[tag]}
    if tag == "__set__":
        return {_untagged(item) for item in obj[tag]}
    if tag == "__frozenset__":
        return frozenset(_untagged(item) for item in obj[tag])
    if tag in _SCALAR_DECODERS:
        return _SCALAR_DECODERS[tag](obj[tag])
    if tag == ENTRY_TAG and load_entry is not None:
        return load_entry(obj[tag])
    return {key: _untagged(value, load_entry) for key, value in obj.items()}


class TaggedJsonSerializer(JsonSerializer):
    """JSON that keeps tuples (at any depth) as tuples."""

    key = "json-tagged"

    def dump(self, obj: Any, path: Path) -> None:
        super().dump(_tagged(obj), path)

    def load(self, path: Path) -> Any:
        return _untagged(super().load(path))


class YamlSerializer(Serializer):
    key = "yaml"
    extension = ".yaml"

    def dump(self, obj: Any, path: Path) -> None:
        import yaml  # Deferred for import perf

        try:
            text = yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)
        except yaml.YAMLError as exc:
            raise InvalidArtifactError(f"object is not YAML-serializable: {exc}") from exc
        path.write_text(text, encoding="utf-8")

    def load(self, path: Path) -> Any:
        import yaml  # Deferred for import perf

        return yaml.safe_load(path.read_text(encoding="utf-8"))


class PickleSerializer(Serializer):
    key = "pickle"
    extension = ".pkl"
    safe_to_load = False

    def dump(self, obj: Any, path: Path) -> None:
        try:
            with path.open("wb") as handle:
                pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise InvalidArtifactError(f"object cannot be pickled: {exc}") from exc

    def load(self, path: Path) -> Any:
        with path.open("rb") as handle:
            return pickle.load(handle)


class NumpySerializer(Serializer):
    key = "numpy"
    extension = ".npy"

    def dump(self, obj: Any, path: Path) -> None:
        import numpy as np  # Deferred for import perf

        if not isinstance(obj, np.ndarray):
            raise InvalidArtifactError(f"numpy serializer needs an ndarray, got {type(obj).__name__}")
        if obj.dtype.hasobject:
            raise InvalidArtifactError("numpy serializer refuses object arrays (they need pickle)")
        with path.open("wb") as handle:
            np.save(handle, obj, allow_pickle=False)

    def load(self, path: Path) -> Any:
        import numpy as np  # Deferred for import perf

        return np.load(path, allow_pickle=False)


_PARQUET_KIND = b"tracelet.kind"  # schema metadata: what the table was before it was written
_SERIES_COLUMN = "value"


class ParquetSerializer(Serializer):
    """A pandas DataFrame or Series, or a pyarrow Table, as parquet (loaded back as the same kind)."""

    key = "parquet"
    extension = ".parquet"

    def dump(self, obj: Any, path: Path) -> None:
        try:
            import pandas as pd  # Deferred for import perf
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError("parquet needs pandas and pyarrow: pip install pandas pyarrow") from exc
        try:
            if isinstance(obj, pd.DataFrame):
                obj.to_parquet(path)
            elif isinstance(obj, pd.Series):
                table = pa.Table.from_pandas(obj.to_frame(_SERIES_COLUMN))
                kind = json.dumps({"kind": "series", "name": obj.name})
                pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                              _PARQUET_KIND: kind.encode()}), path)
            elif isinstance(obj, pa.Table):
                kind = json.dumps({"kind": "arrow"})
                pq.write_table(obj.replace_schema_metadata({**(obj.schema.metadata or {}),
                                                            _PARQUET_KIND: kind.encode()}), path)
            else:
                raise InvalidArtifactError(
                    f"parquet serializer needs a DataFrame, Series or pyarrow Table, got {type(obj).__name__}")
        except (TypeError, ValueError, pa.ArrowException) as exc:
            raise InvalidArtifactError(f"{type(obj).__name__} cannot be written as parquet: {exc}") from exc

    def load(self, path: Path) -> Any:
        import pandas as pd  # Deferred for import perf
        import pyarrow.parquet as pq

        metadata = pq.read_schema(path).metadata or {}
        kind = json.loads(metadata[_PARQUET_KIND]) if _PARQUET_KIND in metadata else {"kind": "frame"}
        if kind["kind"] == "arrow":
            table = pq.read_table(path)
            return table.replace_schema_metadata({k: v for k, v in metadata.items() if k != _PARQUET_KIND} or None)
        frame = pd.read_parquet(path)
        if kind["kind"] == "series":
            series = frame[_SERIES_COLUMN]
            series.name = kind.get("name")
            return series
        return frame


_TORCH_SAFE_LEAVES = (int, float, bool, str, bytes, type(None))


def _check_torch_safe(obj: Any, where: str = "object") -> None:
    """Refuse anything ``torch.load(weights_only=True)`` could not read back."""
    import torch  # Deferred for import perf

    if isinstance(obj, torch.nn.Module):
        raise InvalidArtifactError(
            f"{where} is a torch.nn.Module; log its weights with add_model() or "
            "add_object(model.state_dict(), ...) instead of pickling the module"
        )
    if isinstance(obj, (torch.Tensor, torch.Size, torch.dtype, torch.device) + _TORCH_SAFE_LEAVES):
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            _check_torch_safe(key, f"{where} key")
            _check_torch_safe(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple, set)):
        for index, value in enumerate(obj):
            _check_torch_safe(value, f"{where}[{index}]")
        return
    raise InvalidArtifactError(
        f"{where} of type {type(obj).__name__} cannot be loaded with torch.load(weights_only=True)"
    )


def normalise_zip(source: Path, target: Path, *, member_name: Callable[[str], str] = str,
                  blanked: Callable[[str], bool] = lambda name: False) -> None:
    """Copy the zip archive ``source`` to ``target`` member by member, with fixed timestamps,
    members renamed by ``member_name`` and the ``blanked`` ones' bytes replaced by zeros (what
    varies between saves of equal objects), so equal objects give equal bytes, and dedup, across
    processes. Streams; never holds the archive in memory."""
    import shutil
    import zipfile

    fixed_time = (1980, 1, 1, 0, 0, 0)
    with zipfile.ZipFile(source) as archive_in, \
            zipfile.ZipFile(target, "w", zipfile.ZIP_STORED, allowZip64=True) as archive_out:
        for info in archive_in.infolist():
            member = zipfile.ZipInfo(member_name(info.filename), date_time=fixed_time)
            if blanked(info.filename):
                archive_out.writestr(member, b"0" * info.file_size)
                continue
            with archive_in.open(info) as src, archive_out.open(member, "w", force_zip64=True) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _normalise_torch_archive(source: Path, target: Path) -> None:
    """A ``torch.save`` archive with the per-process ``serialization_id`` blanked and the root
    folder torch names after the file renamed ``archive``."""
    normalise_zip(source, target, member_name=lambda name: "archive/" + name.partition("/")[2],
                  blanked=lambda name: name.endswith("/.data/serialization_id"))


class TorchSerializer(Serializer):
    """Tensors and (nested) state dicts, read back with ``torch.load(weights_only=True)``."""

    key = "torch"
    extension = ".pt"

    def dump(self, obj: Any, path: Path) -> None:
        try:
            import torch  # Deferred for import perf
        except ImportError as exc:
            raise ConfigurationError("the torch serializer needs torch: pip install tracelet-artifacts[torch]") from exc
        _check_torch_safe(obj)
        raw = path.with_name(path.name + ".raw")
        try:
            with suppress_capture():  # tracelet's own save is not a user's checkpoint
                torch.save(obj, raw)
            _normalise_torch_archive(raw, path)
        finally:
            raw.unlink(missing_ok=True)

    def load(self, path: Path) -> Any:
        import torch  # Deferred for import perf

        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:  # something other than tensors and plain data
            raise UnsafeDeserializationError(
                f"torch entry holds objects that torch.load(weights_only=True) refuses: {exc}") from exc


class ContainerSerializer(Serializer):
    """The structure of a container whose leaves are entries of their own (``_containers``):
    tagged JSON with ``{"__entry__": name}`` where each leaf goes. Loads back that structure as
    it is; ``LoggedArtifact.load`` puts the leaves in."""

    key = "container"
    extension = ".json"

    def dump(self, obj: Any, path: Path) -> None:
        JsonSerializer().dump(obj, path)

    def load(self, path: Path) -> Any:
        return json.loads(path.read_text(encoding="utf-8"))


_BUILTIN: dict[str, type[Serializer]] = {
    cls.key: cls
    for cls in (JsonSerializer, TaggedJsonSerializer, YamlSerializer, PickleSerializer, NumpySerializer,
                ParquetSerializer, TorchSerializer, ContainerSerializer)
}

def _instance(loaded: object) -> Serializer:
    serializer = loaded() if isinstance(loaded, type) else loaded
    if not isinstance(serializer, Serializer):
        raise ConfigurationError(f"serializer {loaded!r} is not a tracelet Serializer")
    return serializer


def _unknown(key: str, known: list[str]) -> InvalidArtifactError:
    return InvalidArtifactError(f"unknown serializer {key!r}; known: {', '.join(sorted({*known, AUTO}))}")


#: Serializers by key: built-ins (by class path), ``register_serializer``, the
#: ``tracelet.serializers`` entry-point group; instances are made once per process.
_serializers: Registry[Serializer] = Registry(
    "serializer", "tracelet.serializers", {key: f"{__name__}:{cls.__name__}" for key, cls in _BUILTIN.items()},
    prepare=_instance, unknown=_unknown, keep_loaded=True)


def register_serializer(serializer: Serializer, *, clobber: bool = False) -> None:
    """Register a serializer under its ``key``. A key that is taken (built in, registered or an
    entry point) is refused with ``ConfigurationError`` unless ``clobber=True``; registering the
    same instance again is allowed."""
    if not getattr(serializer, "key", None) or serializer.key == AUTO:
        raise ConfigurationError(f"serializer {serializer!r} needs a key other than 'auto'")
    _serializers.register(serializer.key, serializer, clobber=clobber)


def get_serializer(key: str) -> Serializer:
    """The serializer registered under ``key``: built-in, registered, or an entry point."""
    return _serializers.get(key)


def _json_kind(obj: Any, depth: int = 0) -> str | None:
    """``json`` for plain JSON, ``json-tagged`` when it holds what only tagged JSON keeps
    (tuples, sets, non-str keys, bytes, dates, decimals, UUIDs), None otherwise."""
    if depth > 100:
        return None
    kind = type(obj)
    if obj is None or kind in (bool, int, str):
        return JsonSerializer.key
    if kind is float:
        return JsonSerializer.key if math.isfinite(obj) else None
    if kind in _SCALAR_TAGS:
        return TaggedJsonSerializer.key if kind is not decimal.Decimal or obj.is_finite() else None
    tagged = kind is tuple or kind in _SET_TAGS
    if kind in (list, tuple, set, frozenset):  # named tuples and other subclasses would not come back
        items: list[Any] = list(obj)
    elif isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
        items = list(obj.values())
    elif kind is dict and all(isinstance(k, str) or _is_key(k) for k in obj):
        items, tagged = [*obj.keys(), *obj.values()], True
    else:
        return None
    kinds = {_json_kind(item, depth + 1) for item in items}
    if None in kinds:
        return None
    return TaggedJsonSerializer.key if tagged or TaggedJsonSerializer.key in kinds else JsonSerializer.key


def _is_key(key: Any) -> bool:
    """A dict key ``__items__`` brings back as itself (int, finite float, bool, tuples of these)."""
    if type(key) is tuple:
        return all(isinstance(k, str) or _is_key(k) for k in key)
    return type(key) in _KEY_TYPES and (type(key) is not float or math.isfinite(key))


def _module_root(obj: Any) -> str:
    return (type(obj).__module__ or "").split(".")[0]


def resolve_safe(obj: Any) -> str | None:
    """The safest concrete serializer for ``obj`` whose loading runs no code, or None when only
    pickle can hold it."""
    root, kind = _module_root(obj), type(obj).__name__
    if (root == "pandas" and kind in {"DataFrame", "Series"}) or (root == "pyarrow" and kind == "Table"):
        return ParquetSerializer.key
    if root == "numpy" and kind == "ndarray" and not obj.dtype.hasobject:
        return NumpySerializer.key
    if root == "torch" and kind in {"Tensor", "Parameter"}:
        return TorchSerializer.key
    json_kind = _json_kind(obj)
    if json_kind is not None:
        return json_kind
    if isinstance(obj, dict) and obj and any(_module_root(v) == "torch" for v in obj.values()):
        try:
            _check_torch_safe(obj)
            return TorchSerializer.key
        except InvalidArtifactError:
            pass
    return None


def resolve_auto(obj: Any) -> str:
    """The concrete serializer key ``auto`` stands for, chosen by the object's type."""
    return resolve_safe(obj) or PickleSerializer.key


def load_with(key: str, path: Path, *, allow_pickle: bool) -> Any:
    """Load ``path`` with the serializer ``key``, refusing unsafe formats unless allowed."""
    serializer = get_serializer(key)
    if not serializer.safe_to_load and not allow_pickle:
        raise UnsafeDeserializationError(
            f"entry was written with {key!r}, which can run arbitrary code when loaded; "
            "pass allow_pickle=True or set TRACELET_ALLOW_PICKLE=true if you trust this store"
        )
    try:
        return serializer.load_allowing(path, allow_pickle)
    except (UnsafeDeserializationError, ConfigurationError):
        raise
    except Exception as exc:  # noqa: BLE001 - bytes that match their digest yet do not parse
        raise IntegrityError(f"entry cannot be read back as {key!r}: {type(exc).__name__}: {exc}",
                             [f"{path.name}: unreadable as {key}"]) from exc
