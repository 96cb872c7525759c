"""The public face: what the packages export and what importing them pulls in."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import tracelet_core

CONTRACT_NAMES = {
    "ArtifactType", "TraceletArtifact", "ArtifactStore", "LoggedArtifact", "RunInfo", "Experiment",
    "ExperimentConfig", "ArtifactResult", "TraceletSettings", "LineageGraph", "TraceletError",
    "InvalidArtifactError", "ArtifactNotFoundError", "IntegrityError", "UnsafeDeserializationError",
    "BackendError", "ConfigurationError", "VersionDiff",
    # round 3, lifecycle
    "AliasChange", "ArtifactDeletedError", "ProtectedVersionError", "PruneReport",
}


def test_core_exports_the_contract_and_nothing_unlisted() -> None:
    assert set(tracelet_core.__all__) >= CONTRACT_NAMES
    for name in tracelet_core.__all__:
        assert hasattr(tracelet_core, name), name
    public = {n for n in dir(tracelet_core)
              if not n.startswith("_") and not isinstance(getattr(tracelet_core, n), types.ModuleType)}
    assert public - set(tracelet_core.__all__) == set()


def test_error_hierarchy() -> None:
    from tracelet_core import (
        ArtifactNotFoundError,
        BackendError,
        ConfigurationError,
        IntegrityError,
        InvalidArtifactError,
        TraceletError,
        UnsafeDeserializationError,
    )

    for error in (InvalidArtifactError, ArtifactNotFoundError, IntegrityError, UnsafeDeserializationError,
                  BackendError, ConfigurationError):
        assert issubclass(error, TraceletError)
    assert issubclass(InvalidArtifactError, ValueError)
    assert issubclass(ArtifactNotFoundError, KeyError)
    assert str(ArtifactNotFoundError("no artifact named 'x'")) == "no artifact named 'x'"


def test_backend_errors_split_into_transient_and_permanent() -> None:
    from tracelet_core import BackendError, PermanentBackendError, TransientBackendError

    assert issubclass(TransientBackendError, BackendError) and issubclass(PermanentBackendError, BackendError)
    assert not issubclass(TransientBackendError, PermanentBackendError)


def test_serializer_keys_are_not_replaced_unless_asked() -> None:
    from tracelet_core import ConfigurationError, register_serializer
    from tracelet_core._serializers import JsonSerializer, _serializers, get_serializer

    class Other(JsonSerializer):
        key = "test-public-api"

    try:
        mine = Other()
        register_serializer(mine)
        register_serializer(mine)  # the same instance again: fine
        assert get_serializer("test-public-api") is mine
        with pytest.raises(ConfigurationError, match="'test-public-api' is already taken"):
            register_serializer(Other())
        with pytest.raises(ConfigurationError, match="'json' is already taken"):
            register_serializer(type("Json", (JsonSerializer,), {})())
        replacement = Other()
        register_serializer(replacement, clobber=True)
        assert get_serializer("test-public-api") is replacement
    finally:
        _serializers.unregister("test-public-api")


def test_importing_core_pulls_in_no_sdk_or_framework() -> None:
    heavy = ["torch", "lightning", "pytorch_lightning", "mlflow", "wandb", "clearml", "aim", "prefect",
             "dagster", "numpy", "pandas", "pyarrow", "sklearn", "s3fs", "typer", "rich"]
    code = ("import sys, tracelet_core, tracelet_prefect, tracelet_dagster; "
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_packages_are_typed() -> None:
    from importlib.resources import files

    for package in ("tracelet_core", "tracelet_prefect", "tracelet_dagster"):
        assert files(package).joinpath("py.typed").is_file()
