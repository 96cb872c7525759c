"""Catalog schema migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, delete, insert, inspect, text

from tracelet_core import ConfigurationError
from tracelet_core._catalog import MIGRATIONS, SCHEMA_VERSION, Catalog, schema_table


def test_a_new_catalog_gets_every_migration_once(catalog_url: str) -> None:
    Catalog(catalog_url).dispose()
    Catalog(catalog_url).dispose()  # reopening migrates nothing
    engine = create_engine(catalog_url)
    with engine.connect() as conn:
        applied = [r[0] for r in conn.execute(text("SELECT version FROM tracelet_schema ORDER BY version"))]
        tables = set(inspect(conn).get_table_names())
    engine.dispose()
    assert applied == [number for number, _ in MIGRATIONS]
    assert {"artifacts", "versions", "aliases", "entries", "runs", "version_inputs", "run_inputs",
            "drafts", "draft_entries", "deliveries"} <= tables


def test_an_older_catalog_is_upgraded_in_place(catalog_url: str) -> None:
    """A catalog made before the delivery outbox existed (schema 1) gains it on open."""
    catalog = Catalog(catalog_url)
    with catalog.engine.begin() as conn:
        conn.execute(text("DROP TABLE deliveries"))
        conn.execute(delete(schema_table).where(schema_table.c.version > 1))
    catalog.dispose()
    upgraded = Catalog(catalog_url)
    with upgraded.engine.connect() as conn:
        assert "deliveries" in inspect(conn).get_table_names()
    upgraded.dispose()


def test_a_catalog_from_a_newer_tracelet_is_refused(catalog_url: str) -> None:
    catalog = Catalog(catalog_url)
    with catalog.engine.begin() as conn:
        conn.execute(insert(schema_table).values(version=SCHEMA_VERSION + 1))
    catalog.dispose()
    with pytest.raises(ConfigurationError, match="newer than this tracelet"):
        Catalog(catalog_url)


def test_an_unreachable_catalog_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        Catalog("postgresql+psycopg2://nobody@127.0.0.1:1/none")
    with pytest.raises(ConfigurationError):
        Catalog("notadialect://x")


def test_a_connection_dropped_mid_transaction_rolls_back(postgres_url: str, store_dir: Path,
                                                         make_file: Any) -> None:
    """The server kills the writer's connection between manifest and commit: nothing is
    visible, the error is a ``StorageError``, and the next log works."""
    from sqlalchemy.engine import make_url

    from tracelet_core import ArtifactStore, StorageError, TraceletArtifact

    with ArtifactStore.open(store_dir, catalog_url=postgres_url) as store:
        store.log(TraceletArtifact("ds", "dataset").add_file(make_file("a.bin", b"1")))
        admin = create_engine(postgres_url.replace(make_url(postgres_url).database or "", "postgres"),
                              isolation_level="AUTOCOMMIT")
        from sqlalchemy import event

        def drop(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            """The server kills the writer's connection as it inserts the version row (under
            the lock, after the manifest was written)."""
            if statement.lstrip().upper().startswith("INSERT INTO VERSIONS"):
                with admin.connect() as other:
                    other.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                       "WHERE datname = :db AND pid <> pg_backend_pid()"),
                                  {"db": make_url(postgres_url).database})

        event.listen(store.catalog.engine, "before_cursor_execute", drop)
        with pytest.raises(StorageError, match="rolled back"):
            store.log(TraceletArtifact("ds", "dataset").add_file(make_file("b.bin", b"2")))
        event.remove(store.catalog.engine, "before_cursor_execute", drop)
        admin.dispose()
        assert [v.version for v in store.versions("ds")] == ["v1"]
        assert store.log(TraceletArtifact("ds", "dataset").add_file(make_file("c.bin", b"3"))).version == "v2"
        store.verify()


def test_catalog_errors_never_show_the_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        Catalog("postgresql+psycopg2://user:hunter2@127.0.0.1:1/none")
    assert "hunter2" not in str(info.value)


def _open_catalog(url: str, start: Any) -> None:
    start.wait()
    Catalog(url).dispose()


def test_many_processes_opening_a_new_postgresql_catalog_migrate_it_once(postgres_url: str) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(6)
    procs = [ctx.Process(target=_open_catalog, args=(postgres_url, start)) for _ in range(6)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0] * 6
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        applied = [r[0] for r in conn.execute(text("SELECT version FROM tracelet_schema ORDER BY version"))]
    engine.dispose()
    assert applied == [number for number, _ in MIGRATIONS]


def test_a_catalog_without_partitions_gains_them(catalog_url: str) -> None:
    """Schema 2 catalogs (before versions knew their partition) are upgraded in place."""
    catalog = Catalog(catalog_url)
    with catalog.engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_versions_partition"))
        conn.execute(text("ALTER TABLE versions DROP COLUMN partition_key"))
        conn.execute(delete(schema_table).where(schema_table.c.version > 2))
    catalog.dispose()
    upgraded = Catalog(catalog_url)
    with upgraded.engine.connect() as conn:
        assert "partition_key" in {c["name"] for c in inspect(conn).get_columns("versions")}
    upgraded.dispose()


@pytest.mark.parametrize("driver", ["postgresql", "postgresql+psycopg", "postgresql+psycopg2"])
def test_both_postgresql_drivers_and_the_plain_url_work(driver: str, postgres_url: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``postgresql://`` (psycopg 3 under SQLAlchemy 2.1, what ``[postgres]`` installs) and
    ``postgresql+psycopg2://`` both open, migrate and serve the same catalog."""
    from sqlalchemy.engine import make_url

    from tracelet_core import ArtifactStore, TraceletArtifact

    url = make_url(postgres_url).set(drivername=driver).render_as_string(hide_password=False)
    monkeypatch.setenv("TRACELET_CATALOG_URL", url)  # the form tracelet's own error message suggests
    source = tmp_path / "a.txt"
    source.write_text(driver)
    with ArtifactStore.open(tmp_path / "store") as store:
        assert store.catalog.engine.dialect.driver == ("psycopg2" if driver.endswith("psycopg2") else "psycopg")
        logged = store.log(TraceletArtifact("drivers").add_file(source), aliases=["prod"])
        assert store.get("drivers:prod") == logged
        assert store.verify() == ["drivers:v1"]


# -- errors by cause ----------------------------------------------------------------------------
@pytest.mark.parametrize(("code", "expected"), [
    ("40001", "CatalogContentionError"), ("40P01", "CatalogContentionError"), ("55P03", "CatalogContentionError"),
    ("08006", "StorageError"), ("53300", "StorageError"), ("57014", "StorageError"), ("57P01", "StorageError"),
    ("28P01", "ConfigurationError"), ("3D000", "ConfigurationError"), ("42501", "ConfigurationError"),
    ("23505", "CatalogError"), ("42P01", "CatalogError"), ("XX001", "CatalogError"),
    ("99999", "StorageError"),  # an unknown code on an OperationalError: transient, never a setup problem
])
def test_postgresql_errors_are_classified_by_sqlstate(code: str, expected: str) -> None:
    from sqlalchemy.exc import OperationalError

    from tracelet_core._catalog import classify

    class Orig(Exception):
        pgcode = code

    assert type(classify(OperationalError("SELECT 1", {}, Orig("failed")), "pg")).__name__ == expected


def test_sqlite_errors_are_classified_by_result_code(tmp_path: Path) -> None:
    import sqlite3

    from tracelet_core import StorageError
    from tracelet_core._catalog import CatalogContentionError, CatalogError, classify

    path = tmp_path / "c.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")

    def error(run: Any, target: Any = path, **kwargs: Any) -> BaseException:
        try:
            conn = sqlite3.connect(target, isolation_level=None, **kwargs)
        except sqlite3.Error as exc:
            return exc
        try:
            run(conn)
        except sqlite3.Error as exc:
            return exc
        finally:
            conn.close()
        raise AssertionError("no error")

    holder.execute("BEGIN IMMEDIATE")
    busy = error(lambda c: c.execute("BEGIN IMMEDIATE"), timeout=0)
    holder.execute("ROLLBACK")
    assert isinstance(classify(busy, "c"), CatalogContentionError)
    readonly = error(lambda c: c.execute("INSERT INTO t VALUES (1)"), f"file:{path}?mode=ro", uri=True)
    assert type(classify(readonly, "c")) is ConfigurationError
    cannot_open = error(lambda c: c.execute("SELECT 1"), tmp_path / "missing" / "c.db")
    assert type(classify(cannot_open, "c")) is ConfigurationError
    no_table = error(lambda c: c.execute("SELECT * FROM nope"))
    assert type(classify(no_table, "c")) is CatalogError  # a damaged schema: neither transient nor setup
    holder.close()
    assert not isinstance(classify(busy, "c"), ConfigurationError) and isinstance(classify(busy, "c"), StorageError)


def test_a_connection_error_without_a_code_is_transient_except_while_opening() -> None:
    from sqlalchemy.exc import OperationalError

    from tracelet_core import StorageError
    from tracelet_core._catalog import classify

    lost = OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    assert type(classify(lost, "pg")) is StorageError
    assert type(classify(lost, "pg", opening=True)) is ConfigurationError


# -- only the transaction body is retried; side effects run once ----------------------------------
def test_a_commit_retried_after_contention_writes_its_manifest_once(tmp_path: Path) -> None:
    """The transaction loses a lock contention after the manifest was written (its journal
    hook reports it): the body runs again, the manifest is not written again, the blob check
    (idempotent) and the journal (a snapshot) run again, and one version is committed."""
    from tracelet_core._catalog import CatalogContentionError, CommitHooks, Contention, VersionRequest

    pauses: list[float] = []
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}", contention=Contention(pause=pauses.append))
    calls = {"manifest": 0, "check": 0, "journal": 0}

    def write_manifest(number: int, created_at: float, inputs: list[str]) -> str:
        calls["manifest"] += 1
        return f"sha256:manifest-{number}"

    def check_blobs() -> None:
        calls["check"] += 1

    def journal(after: dict[str, Any], before: dict[str, Any]) -> None:
        calls["journal"] += 1
        if calls["journal"] == 1:
            raise CatalogContentionError("lost a lock contention just before the commit")

    request = VersionRequest(name="x", type="custom", digest="sha256:d", size_bytes=0, entry_rows=[], aliases=["prod"])
    record, created = catalog.commit_version(request, CommitHooks(write_manifest, check_blobs, journal))
    assert created and record.version == 1 and record.aliases == ["prod"]
    assert record.manifest_digest == "sha256:manifest-1"
    assert calls == {"manifest": 1, "check": 2, "journal": 2} and len(pauses) == 1
    assert [r.version for r in catalog.versions("x")] == [1]
    catalog.dispose()
