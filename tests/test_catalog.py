"""Catalog schema migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

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
