"""Tracker backends: ``mlflow``, ``wandb``, ``clearml`` and ``aim``, and what a backend of
your own needs (see ``docs/writing-a-backend.md``).

Each tracker module imports its tracker's SDK, so import one only when you use it (the
registry in ``tracelet_core._backends`` does that lazily for names passed to
``Experiment(backend=...)``). This package itself imports no SDK: it is the public face for
backend authors.
"""

from .._backends import (
    ArtifactResult,
    Backend,
    BackendCopy,
    UploadPlan,
    available_backends,
    config_params,
    delivery_target,
    flatten,
    media_entries,
    plan_upload,
    register_backend,
    sdk_errors,
    tracelet_tags,
    unregister_backend,
)
from .._catalog import AliasEventRecord, DeliveryRecord, DeliverySpec

__all__ = [
    "AliasEventRecord",
    "ArtifactResult",
    "Backend",
    "BackendCopy",
    "DeliveryRecord",
    "DeliverySpec",
    "UploadPlan",
    "available_backends",
    "config_params",
    "delivery_target",
    "flatten",
    "media_entries",
    "plan_upload",
    "register_backend",
    "sdk_errors",
    "tracelet_tags",
    "unregister_backend",
]
