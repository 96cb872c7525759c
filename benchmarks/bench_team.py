"""Team scale: a store on S3 (moto's server on loopback) and a PostgreSQL catalog.

    python -m benchmarks --only s3_log,pg_tiny

- ``s3_log``: log a 256 MiB [16 MiB] file to an S3 store (SQLite catalog) against
  ``s3fs.S3FileSystem.put_file`` of the same file to the same server.
- ``pg_tiny``: 200 [20] tiny versions with a PostgreSQL catalog against MLflow ``log_dict``
  with a PostgreSQL tracking store, both on the local server (``TRACELET_BENCH_POSTGRES_URL``,
  default ``postgresql+psycopg2://postgres@127.0.0.1:5432/postgres``), each in a fresh database.

A row whose server is not there (no moto, no PostgreSQL) is skipped and says why.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from ._peers import MlflowRun, remove
from ._runner import MIB, Case, Contender, Skip, age, installed, scratch, timed, write_random_file

POSTGRES_ADMIN_URL = os.environ.get("TRACELET_BENCH_POSTGRES_URL",
                                    "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def s3_log_case(quick: bool) -> Case:
    size = 16 * MIB if quick else 256 * MIB
    state: dict[str, Any] = {}

    def setup() -> None:
        if not (installed("moto") and installed("s3fs")):
            raise Skip("moto and s3fs are needed")
        import s3fs
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
        server.start()
        state["server"] = server
        endpoint = f"http://127.0.0.1:{server._port}"  # noqa: SLF001 - moto keeps its port here
        for key, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
            state.setdefault("env", {})[key] = os.environ.get(key)
            os.environ[key] = value
        state["fs"] = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
        state["fs"].mkdir("bench")
        src = scratch("s3-data") / "big.bin"
        write_random_file(src, size)
        age(src)
        state["src"] = src

    def teardown() -> None:
        for key, value in state.get("env", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if "server" in state:
            state["server"].stop()

    def tracelet() -> float:
        from tracelet_core import ArtifactStore, TraceletArtifact, TraceletSettings

        local = scratch("s3-store")
        store = ArtifactStore.open(f"s3://bench/{uuid.uuid4().hex}", catalog_url=f"sqlite:///{local / 'catalog.db'}",
                                   settings=TraceletSettings(cache_dir=str(local / "cache")))
        try:
            return timed(lambda: store.log(TraceletArtifact("big", "dataset").add_file(state["src"])))
        finally:
            store.close()
            remove(local)

    def put_file() -> float:
        key = f"bench/put-{uuid.uuid4().hex}"
        try:
            return timed(lambda: state["fs"].put_file(str(state["src"]), key))
        finally:
            state["fs"].rm(key)

    return Case(key="s3_log", title=f"log {size // MIB} MiB to S3 (moto on loopback)",
                contenders=[Contender("tracelet (full)", tracelet, tracelet=True),
                            Contender("s3fs put_file", put_file)],
                target="<= 1.2x s3fs put_file", setup=setup, teardown=teardown)


def pg_tiny_case(quick: bool) -> Case:
    count = 20 if quick else 200
    state: dict[str, Any] = {"databases": []}

    def fresh_database() -> str:
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        name = f"tracelet_bench_{uuid.uuid4().hex[:12]}"
        with state["admin"].connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        state["databases"].append(name)
        return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def setup() -> None:
        from sqlalchemy import create_engine, text

        if not installed("mlflow"):
            raise Skip("mlflow is not installed")
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - no server: the row says so
            raise Skip(f"no PostgreSQL at {POSTGRES_ADMIN_URL}: {type(exc).__name__}") from exc
        state["admin"] = admin
        state["mlflow"] = MlflowRun(tracking_uri=fresh_database())  # its migrations run here, untimed

    def teardown() -> None:
        from sqlalchemy import text

        if state.get("mlflow") is not None:
            state["mlflow"].close()
        if "admin" in state:
            with state["admin"].connect() as conn:
                for name in state["databases"]:
                    conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                                 {"n": name})
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            state["admin"].dispose()

    def tracelet() -> float:
        from tracelet_core import ArtifactStore, TraceletArtifact

        root = scratch("pg-store")
        store = ArtifactStore.open(root, catalog_url=fresh_database())
        store.catalog.latest(None, None)  # the schema exists before the clock starts
        try:
            def many() -> None:
                for i in range(count):
                    store.log(TraceletArtifact("tiny", "config").add_object({"step": i, "lr": 0.001}, "x"))
            return timed(many)
        finally:
            store.close()
            remove(root)

    def mlflow() -> float:
        run = state["mlflow"]
        prefix = uuid.uuid4().hex[:8]

        def many() -> None:
            for i in range(count):
                run.log_dict({"step": i, "lr": 0.001}, f"{prefix}/tiny/{i}/x.json")
        try:
            return timed(many)
        finally:
            run.forget(prefix)

    return Case(key="pg_tiny", title=f"{count} tiny versions, PostgreSQL catalog",
                contenders=[Contender("tracelet (full)", tracelet, tracelet=True),
                            Contender("MLflow log_dict (PostgreSQL)", mlflow)],
                target="<= 1.0x MLflow on the same server", setup=setup, teardown=teardown, per_item=count)


def cases(quick: bool) -> list[Case]:
    return [s3_log_case(quick), pg_tiny_case(quick)]
