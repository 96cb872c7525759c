"""Fixtures for every tracker test: no tracker SDK may reach beyond this machine."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def patient_deliveries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A generous delivery time limit: a first delivery imports the tracker SDK (and torch),
    which on a loaded CI machine can take longer than the 10 s default; the test of the
    default limit sets it back."""
    monkeypatch.setenv("TRACELET_BACKEND_TIMEOUT", "120")


@pytest.fixture(autouse=True)
def no_outside_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Refuse (and record) any connection or name lookup beyond loopback and local sockets."""
    attempts: list[str] = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def local(host: object) -> bool:
        return isinstance(host, str) and host in {"127.0.0.1", "::1", "localhost"}

    def connect(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not local(address[0]):
            attempts.append(f"connect {address}")
            raise OSError(f"test forbids connecting to {address}")
        return real_connect(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not local(host):
            attempts.append(f"lookup {host}")
            raise OSError(f"test forbids looking up {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    assert attempts == []


# -- MLflow's tracking store (for test_mlflow*.py) ----------------------------------------
@pytest.fixture(scope="session")
def empty_tracking_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite tracking store (MLflow's migrations take 1-2 s), copied into
    each test that needs one."""
    from mlflow import MlflowClient  # Deferred: only MLflow's tests import it

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_uri(tmp_path: Path, empty_tracking_db: Path) -> str:
    shutil.copy(empty_tracking_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def artifact_root(tmp_path: Path) -> str:
    return (tmp_path / "mlartifacts").as_uri()
