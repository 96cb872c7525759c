"""Model framework detection and the native, safe formats ``add_model`` stores models in.

Detection looks at the module names of the model's class and its bases (so a user's
``class Net(torch.nn.Module)`` defined in ``__main__`` is still ``pytorch``); no framework is
imported to detect it. PyTorch models are stored as their ``state_dict`` (loaded back with
``weights_only=True``), never as a pickled module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import InvalidArtifactError
from ._serializers import Serializer, register_serializer

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


for _serializer in (XGBoostSerializer(), LightGBMSerializer(), KerasSerializer()):
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
        return ModelPayload(model, "pickle", extra)
    if framework == "xgboost":
        return ModelPayload(model, XGBoostSerializer.key, extra)
    if framework == "lightgbm":
        return ModelPayload(model, LightGBMSerializer.key, extra)
    return ModelPayload(model, KerasSerializer.key, extra)
