"""Versions per second with 1, 4 and 8 writer processes logging one name, per catalog.

    python benchmarks/bench_concurrency.py [--logs 50] [--postgres URL]

Each writer is its own process with its own ``ArtifactStore.open``; all start together and
log distinct small files to the same artifact name, so every log contends for the same
version counter. The store is on local disk; the catalog is SQLite (WAL, ``BEGIN
IMMEDIATE``) and, if it answers, PostgreSQL (``SELECT ... FOR UPDATE``). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import tempfile
import time
import uuid
from pathlib import Path

DEFAULT_POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def writer(store_dir: str, catalog_url: str, index: int, logs: int, start: mp.Barrier) -> None:  # type: ignore[valid-type]
    from tracelet_core import ArtifactStore, TraceletArtifact

    work = Path(store_dir).parent / f"w{index}"
    work.mkdir(parents=True, exist_ok=True)
    with ArtifactStore.open(store_dir, catalog_url=catalog_url) as store:
        start.wait()  # type: ignore[attr-defined]
        for i in range(logs):
            source = work / "data.txt"
            source.write_text(f"writer {index} log {i}")
            store.log(TraceletArtifact("bench/shared", "dataset").add_file(source))


def run(catalog_url: str, writers: int, logs: int) -> float:
    with tempfile.TemporaryDirectory(prefix="tracelet-conc-") as tmp:
        store_dir = str(Path(tmp) / "store")
        from tracelet_core import ArtifactStore

        ArtifactStore.open(store_dir, catalog_url=catalog_url).close()  # migrate untimed
        ctx = mp.get_context("spawn")
        start = ctx.Barrier(writers + 1)
        procs = [ctx.Process(target=writer, args=(store_dir, catalog_url, i, logs, start)) for i in range(writers)]
        for proc in procs:
            proc.start()
        start.wait()
        began = time.perf_counter()
        for proc in procs:
            proc.join()
        elapsed = time.perf_counter() - began
        with ArtifactStore.open(store_dir, catalog_url=catalog_url) as store:
            count = len(store.versions("bench/shared"))
        if count != writers * logs:
            raise SystemExit(f"expected {writers * logs} versions, found {count}")
        return writers * logs / elapsed


def fresh_postgres(admin_url: str) -> tuple[str, str] | None:
    try:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        name = f"tracelet_bench_{uuid.uuid4().hex[:8]}"
        engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return name, make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    except Exception as exc:  # noqa: BLE001 - the benchmark runs without PostgreSQL
        print(f"PostgreSQL not used: {exc.__class__.__name__}: {exc}")
        return None


def drop_postgres(admin_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=int, default=50, help="logs per writer")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="admin URL of a PostgreSQL server")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {mp.cpu_count()} cores, {args.logs} logs per writer")
    rows: list[tuple[str, int, float]] = []
    for writers in (1, 4, 8):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(("sqlite", writers, run(f"sqlite:///{Path(tmp) / 'catalog.db'}", writers, args.logs)))
    database = fresh_postgres(args.postgres)
    if database is not None:
        name, url = database
        try:
            for writers in (1, 4, 8):
                rows.append(("postgresql", writers, run(url, writers, args.logs)))
                drop_postgres(args.postgres, name)
                name, url = fresh_postgres(args.postgres) or (name, url)
        finally:
            drop_postgres(args.postgres, name)
    base = {catalog: rate for catalog, writers, rate in rows if writers == 1}
    print(f"{'catalog':<12}{'writers':>8}{'versions/s':>12}{'vs 1 writer':>13}")
    for catalog, writers, rate in rows:
        print(f"{catalog:<12}{writers:>8}{rate:>12.1f}{rate / base[catalog]:>12.2f}x")


if __name__ == "__main__":
    main()
