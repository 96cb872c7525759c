"""Shared fixtures: every test gets its own store and a clean ``TRACELET_*`` environment."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tracelet_core import ArtifactStore

# Trackers decide at import time whether to phone home (this runs before any test module
# imports one); no test may reach outside hosts.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # boto would probe 169.254.169.254
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="tracelet-tests-prefect-"))


@pytest.fixture(autouse=True)
def clean_tracelet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's settings or writes to ~/.tracelet."""
    for key in list(os.environ):
        if key.startswith("TRACELET_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TRACELET_STORE_URI", str(tmp_path / "default-store"))
    yield


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_dir: Path) -> Iterator[ArtifactStore]:
    with ArtifactStore.open(store_dir) as opened:
        yield opened


@pytest.fixture
def make_file(tmp_path: Path) -> Callable[..., Path]:
    """``make_file("a/b.txt", b"bytes")`` writes a file under a scratch folder."""
    scratch = tmp_path / "files"

    def _make(relative: str, content: bytes | str = b"data") -> Path:
        path = scratch / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    return _make


POSTGRES_ADMIN_URL = os.environ.get(
    "TRACELET_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the local server, dropped afterwards.

    Fails loudly (never skips) when the server is not running: CI starts it.
    """
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"tracelet_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, store_dir: Path) -> str:
    """The same tests against the default SQLite catalog and a PostgreSQL one."""
    if request.param == "sqlite":
        return f"sqlite:///{store_dir.parent / 'catalog.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def any_store(store_dir: Path, catalog_url: str) -> Iterator[ArtifactStore]:
    """A store whose catalog is SQLite or PostgreSQL (parametrized)."""
    with ArtifactStore.open(store_dir, catalog_url=catalog_url) as opened:
        yield opened
