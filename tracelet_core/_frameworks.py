"""Model framework detection and the native, safe formats ``add_model`` stores models in.

Detection looks at the module names of the model's class and its bases (so a user's
``class Net(torch.nn.Module)`` defined in ``__main__`` is still ``pytorch``); no framework is
imported to detect it. PyTorch models are stored as their ``state_dict`` (loaded back with
``weights_only=True``), never as a pickled module. scikit-learn models are stored with skops
(``.skops``, when skops is installed), whose loading refuses any type outside skops' trusted
list unless pickle is allowed; pickle is the fallback when skops is missing or cannot write the
model (loaded only with ``allow_pickle``).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import InvalidArtifactError, UnsafeDeserializationError
from ._serializers import PickleSerializer, Serializer, normalise_zip, register_serializer

FRAMEWORKS = ("pytorch", "sklearn", "tensorflow", "xgboost", "lightgbm")

_MODULE_TO_FRAMEWORK = {
    "torch": "pytorch",
    "pytorch_lightning": "pytorch",
    "lightning": "pytorch",
    "sklearn": "sklearn",
    "tensorflow": "tensorflow",
    "keras": "tensorflow",
    "tf_keras": "tensorflow",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
}


def detect_framework(model: Any) -> str | None:
    """The framework a model belongs to, judged by the modules of its class hierarchy."""
    for klass in type(model).__mro__:
        root = (klass.__module__ or "").split(".")[0]
        if root in _MODULE_TO_FRAMEWORK:
            return _MODULE_TO_FRAMEWORK[root]
    return None


def model_framework(obj: Any) -> str | None:
    """The framework of ``obj`` when it is a model ``add_model`` stores, else None: the one rule
    every value path (``add_value``, Dagster outputs, Prefect returns) uses.

    A PyTorch model is a ``torch.nn.Module`` (a tensor is not a model); a model of another
    framework is an object of that framework that can ``fit`` or ``save`` (an estimator, a keras
    model), not a bare array or booster.
    """
    framework = detect_framework(obj)
    if framework is None:
        return None
    if framework == "pytorch":
        is_module = any(k.__name__ == "Module" and (k.__module__ or "").startswith("torch.nn")
                        for k in type(obj).__mro__)
        return framework if is_module else None
    fits_or_saves = callable(getattr(obj, "fit", None)) or callable(getattr(obj, "save", None))
    return framework if fits_or_saves else None


def is_model(obj: Any) -> bool:
    """Whether ``obj`` is a model ``add_model`` stores in its framework's format."""
    return model_framework(obj) is not None


def class_path(obj: Any) -> str:
    klass = type(obj)
    return f"{klass.__module__}.{klass.__qualname__}"


@dataclass
class ModelPayload:
    """What ``add_model`` stores: the object to serialize, with which serializer, and notes."""

    obj: Any
    serializer: str
    extra: dict[str, Any] = field(default_factory=dict)
    #: the serializer used when ``serializer`` cannot write the model (skops -> pickle)
    fallback: str | None = None


class XGBoostSerializer(Serializer):
    key = "xgboost"
    extension = ".ubj"

    def dump(self, obj: Any, path: Path) -> None:
        obj.save_model(str(path))

    def load(self, path: Path) -> Any:
        import xgboost  # Deferred for import perf

        booster = xgboost.Booster()
        booster.load_model(str(path))
        return booster


class LightGBMSerializer(Serializer):
    key = "lightgbm"
    extension = ".txt"

    def dump(self, obj: Any, path: Path) -> None:
        booster = getattr(obj, "booster_", obj)
        booster.save_model(str(path))

    def load(self, path: Path) -> Any:
        import lightgbm  # Deferred for import perf

        return lightgbm.Booster(model_file=str(path))


class KerasSerializer(Serializer):
    key = "keras"
    extension = ".keras"

    def dump(self, obj: Any, path: Path) -> None:
        obj.save(str(path))

    def load(self, path: Path) -> Any:
        import keras  # Deferred for import perf

        return keras.models.load_model(str(path), safe_mode=True)


def _normalise_skops(source: Path, target: Path) -> None:
    """A skops archive whose object ids (``id()`` of each object when it was written, used in
    ``schema.json`` and as the names of its ``.npy`` members) are renumbered in the order the
    schema names them, with fixed zip timestamps: the same model gives the same bytes in any
    process. Ids only tie a node to its file and to the other nodes of the same object, so a
    one-to-one renumbering loads back the same model."""
    import zipfile

    renumbered: dict[str, str] = {}

    def number(old: object) -> str:
        return renumbered.setdefault(str(old), str(len(renumbered)))

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "__id__" and isinstance(value, int):
                out[key] = int(number(value))
            elif key == "file" and isinstance(value, str) and value.endswith(".npy"):
                out[key] = number(value[:-len(".npy")]) + ".npy"
            else:
                out[key] = walk(value)
        return out

    with zipfile.ZipFile(source) as archive:
        schema = walk(json.loads(archive.read("schema.json")))
        members = {f"{renumbered[info.filename[:-4]]}.npy" if info.filename.endswith(".npy")
                   and info.filename[:-4] in renumbered else info.filename: info.filename
                   for info in archive.infolist() if info.filename != "schema.json"}
    staged = target.with_name(target.name + ".renamed")
    try:
        with zipfile.ZipFile(source) as archive_in, zipfile.ZipFile(staged, "w", zipfile.ZIP_STORED) as archive_out:
            archive_out.writestr("schema.json", json.dumps(schema, indent=2))
            for new_name in sorted(members):
                archive_out.writestr(new_name, archive_in.read(members[new_name]))
        normalise_zip(staged, target)  # fixed timestamps
    finally:
        staged.unlink(missing_ok=True)


class SkopsSerializer(Serializer):
    """A scikit-learn model with skops: loading refuses types outside skops' trusted list
    (``UnsafeDeserializationError`` naming them) unless pickle is allowed."""

    key = "skops"
    extension = ".skops"

    def dump(self, obj: Any, path: Path) -> None:
        import skops.io  # Deferred for import perf

        raw = path.with_name(path.name + ".raw")
        try:
            skops.io.dump(obj, raw)
            _normalise_skops(raw, path)
        except InvalidArtifactError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever skops cannot write falls back to pickle
            raise InvalidArtifactError(f"skops cannot write {class_path(obj)}: {type(exc).__name__}: {exc}") from exc
        finally:
            raw.unlink(missing_ok=True)

    def load(self, path: Path) -> Any:
        return self.load_allowing(path, False)

    def load_allowing(self, path: Path, allow_unsafe: bool) -> Any:
        import skops.io  # Deferred for import perf

        untrusted = untrusted_types(path)
        if untrusted and not allow_unsafe:
            raise UnsafeDeserializationError(
                f"the skops file holds types outside skops' trusted list ({', '.join(untrusted)}), which can "
                "run code when loaded; pass allow_pickle=True or set TRACELET_ALLOW_PICKLE=true if you trust "
                "this store")
        return skops.io.load(path, trusted=untrusted or None)


def untrusted_types(path: Path) -> list[str]:
    """The types in a skops file that skops does not trust by default (loading them needs
    ``allow_pickle``)."""
    import skops.io  # Deferred for import perf

    return list(skops.io.get_untrusted_types(file=path))


def skops_available() -> bool:
    return importlib.util.find_spec("skops") is not None


def safe_model_serializer(obj: Any) -> str | None:
    """The safe format a model is stored in as a value of its own (a container's leaf): skops for
    a scikit-learn model when skops is installed, else None."""
    return SkopsSerializer.key if model_framework(obj) == "sklearn" and skops_available() else None


for _serializer in (XGBoostSerializer(), LightGBMSerializer(), KerasSerializer(), SkopsSerializer()):
    register_serializer(_serializer)


def model_payload(model: Any, framework: str | None) -> ModelPayload:
    """Choose how to store ``model``; raise ``InvalidArtifactError`` for unknown frameworks."""
    detected = detect_framework(model)
    framework = framework or detected
    if framework is None:
        raise InvalidArtifactError(
            f"cannot detect the framework of {class_path(model)}; pass framework= one of "
            f"{', '.join(FRAMEWORKS)}, or use add_object()"
        )
    if framework not in FRAMEWORKS:
        raise InvalidArtifactError(f"unknown framework {framework!r}; known: {', '.join(FRAMEWORKS)}")
    if detected is not None and detected != framework:
        raise InvalidArtifactError(f"model {class_path(model)} is {detected}, not {framework}")
    extra: dict[str, Any] = {"framework": framework, "model_class": class_path(model)}
    if framework == "pytorch":
        state_dict = getattr(model, "state_dict", None)
        if not callable(state_dict):
            raise InvalidArtifactError(f"{class_path(model)} has no state_dict(); not a torch model")
        return ModelPayload(dict(state_dict()), "torch", extra)
    if framework == "sklearn":
        if skops_available():
            return ModelPayload(model, SkopsSerializer.key, extra, fallback=PickleSerializer.key)
        return ModelPayload(model, PickleSerializer.key, extra)
    if framework == "xgboost":
        return ModelPayload(model, XGBoostSerializer.key, extra)
    if framework == "lightgbm":
        return ModelPayload(model, LightGBMSerializer.key, extra)
    return ModelPayload(model, KerasSerializer.key, extra)
