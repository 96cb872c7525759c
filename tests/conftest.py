"""Shared fixtures: every test gets its own store and a clean ``TRACELET_*`` environment; files,
catalogs (SQLite, PostgreSQL), stores on local disk, S3 (moto) and ``memory://``, and one Prefect
server.

Types and plain helpers the test modules import live in ``support.py``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import FolderBackend
from support import MakeFile, StoreLocation, free_port

from tracelet_core import ArtifactStore, TraceletSettings
from tracelet_core.backends import register_backend, unregister_backend

# Trackers decide at import time whether to phone home (this runs before any test module
# imports one); no test may reach outside hosts.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # boto would probe 169.254.169.254
# Prefect reads its settings when first imported (test modules import it during collection):
# its home is a scratch folder, never the developer's ~/.prefect, and its server stays quiet.
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # otherwise the server calls an outside host
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="tracelet-tests-prefect-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], True)


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
def make_file(tmp_path: Path) -> MakeFile:
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


# -- stores on every kind of storage ------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server, in this process, listening on loopback only."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3_admin(s3_endpoint: str) -> Any:
    """An s3fs client of its own on moto's server (not the store's): makes buckets and reads
    what landed in them. One for the session: a new botocore client costs about half a second."""
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=s3_endpoint, key="testing", secret="testing",
                             skip_instance_cache=True)


@pytest.fixture
def s3_env(s3_endpoint: str, s3_admin: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; credentials and endpoint through the provider's own env vars."""
    import s3fs

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(key, value)
    bucket = f"tracelet-{uuid.uuid4().hex[:12]}"
    s3_admin.mkdir(bucket)
    s3fs.S3FileSystem.clear_instance_cache()  # each test's store makes its own client
    return f"s3://{bucket}/store"


@pytest.fixture
def memory_uri() -> Iterator[str]:
    """A ``memory://`` store URI (fsspec's in-process filesystem), emptied before and after."""
    from fsspec.implementations.memory import MemoryFileSystem

    def clear() -> None:
        MemoryFileSystem.store.clear()
        MemoryFileSystem.pseudo_dirs[:] = [""]

    clear()
    yield f"memory://tracelet-{uuid.uuid4().hex[:12]}/store"
    clear()


def _location(request: pytest.FixtureRequest, kind: str, catalog: str, tmp_path: Path) -> StoreLocation:
    """A store location of ``kind`` (local, s3, memory) with a fresh ``catalog`` (sqlite, postgresql)."""
    store_dir: Path = request.getfixturevalue("store_dir")
    if catalog == "sqlite":
        catalog_url = f"sqlite:///{store_dir.parent / 'catalog.db'}"
    else:
        catalog_url = str(request.getfixturevalue("postgres_url"))
    if kind == "local":
        from fsspec.implementations.local import LocalFileSystem

        return StoreLocation(kind, catalog, str(store_dir), catalog_url, LocalFileSystem(),
                             str(store_dir.resolve()))
    settings = TraceletSettings(cache_dir=str(tmp_path / "cache"))
    if kind == "s3":
        uri = str(request.getfixturevalue("s3_env"))
        return StoreLocation(kind, catalog, uri, catalog_url, request.getfixturevalue("s3_admin"),
                             uri.removeprefix("s3://"), settings)
    if kind == "memory":
        from fsspec.implementations.memory import MemoryFileSystem

        uri = str(request.getfixturevalue("memory_uri"))
        return StoreLocation(kind, catalog, uri, catalog_url, MemoryFileSystem(),
                             "/" + uri.removeprefix("memory://"), settings)
    raise ValueError(f"unknown store kind {kind!r}")


# The store contract runs on this matrix: every storage kind with SQLite, and PostgreSQL with the
# storage kinds that talk to it differently (a local folder, a bucket). memory x PostgreSQL adds
# nothing the other two rows do not cover.
CONTRACT_MATRIX = [("local", "sqlite"), ("local", "postgresql"), ("s3", "sqlite"), ("s3", "postgresql"),
                   ("memory", "sqlite")]


@pytest.fixture(params=CONTRACT_MATRIX, ids=[f"{kind}-{catalog}" for kind, catalog in CONTRACT_MATRIX])
def contract_location(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    """Where ``contract_store`` lives (parametrized over ``CONTRACT_MATRIX``)."""
    kind, catalog = request.param
    return _location(request, kind, catalog, tmp_path)


@pytest.fixture
def contract_store(contract_location: StoreLocation) -> Iterator[ArtifactStore]:
    """The store the contract suite runs on: local disk, S3 (moto) or ``memory://``, with a SQLite
    or PostgreSQL catalog. Tests about one kind of storage use ``store`` or their own fixture."""
    with contract_location.open() as opened:
        yield opened


@pytest.fixture(params=["local", "s3", "memory"])
def blob_location(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    """Each kind of storage with a SQLite catalog: for tests that open several catalogs on one
    store (``reindex``)."""
    return _location(request, request.param, "sqlite", tmp_path)


# -- Prefect ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A temporary Prefect server (SQLite, a subprocess on loopback) for the rest of the session;
    Prefect's harness waits for its health check, at most 120 s, and stops it at the end.

    Flow-run heartbeats are off: their thread is joined in one-second steps when a flow ends,
    which would add a second to every flow run and tests nothing of ours.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from tracelet_prefect._ui import drain

    with prefect_test_harness(server_startup_timeout=120), \
            temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
        drain(60)  # what the last tests published reaches the server before it stops


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[FolderBackend]:
    """A folder tracker (``backend_support.FolderBackend``) registered as ``folder``, so ``sync``
    and alias events can rebuild it by name."""
    register_backend("folder", FolderBackend)
    yield FolderBackend(str(tmp_path / "tracker"))
    unregister_backend("folder")
