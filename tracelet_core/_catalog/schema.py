"""The catalog's schema: its tables and the numbered migrations that create and upgrade them.

Schema changes are numbered migrations (see ``MIGRATIONS``) recorded in ``tracelet_schema``;
``migrate`` runs them under the write lock (SQLite) or an advisory lock (PostgreSQL), so
several processes starting at once migrate exactly once. We use this small runner instead of
alembic because the catalog is embedded: it must migrate itself on open, with no ini files or
script directories shipped to users.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection

from .._errors import ConfigurationError

metadata = MetaData()

schema_table = Table("tracelet_schema", metadata, Column("version", Integer, nullable=False))

artifacts = Table(
    "artifacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("type", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(1024), nullable=False, unique=True),
    Column("orchestrator", String(64), nullable=False),
    Column("run_id", String(512), nullable=False),
    Column("step", String(512)),
    Column("name", String(512)),
    Column("partition", String(1024)),
    Column("code_version", String(256)),
    Column("extra", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("artifact_id", Integer, ForeignKey("artifacts.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", String(32), nullable=False),
    Column("digest", String(80), nullable=False),
    Column("manifest_digest", String(80), nullable=False),
    Column("description", Text),
    Column("metadata", JSON, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("producer_run_id", Integer, ForeignKey("runs.id")),
    Column("idempotency_key", String(512)),
    # added by migration 3: the orchestrator partition a version belongs to (Dagster, ...)
    Column("partition_key", String(1024)),
    # added by migration 7: a deleted version is a tombstone (its row stays, hidden from reads)
    Column("deleted_at", Float),
    Column("deleted_reason", Text),
    UniqueConstraint("artifact_id", "version", name="uq_versions_artifact_version"),
    UniqueConstraint("artifact_id", "idempotency_key", name="uq_versions_idempotency"),
    Index("ix_versions_partition", "artifact_id", "partition_key", "version"),
)

aliases = Table(
    "aliases",
    metadata,
    Column("artifact_id", Integer, ForeignKey("artifacts.id"), primary_key=True),
    Column("alias", String(128), primary_key=True),
    Column("version_id", Integer, ForeignKey("versions.id"), nullable=False),
)

entries = Table(
    "entries",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id"), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("kind", String(16), nullable=False),  # file | object | reference
    Column("digest", String(80)),
    Column("size", BigInteger),
    Column("data", JSON, nullable=False),  # the full manifest entry
    Index("ix_entries_digest", "digest"),
)

version_inputs = Table(
    "version_inputs",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id"), primary_key=True),
    Column("input_version_id", Integer, ForeignKey("versions.id"), primary_key=True),
    Index("ix_version_inputs_input", "input_version_id"),
)

run_inputs = Table(
    "run_inputs",
    metadata,
    Column("run_id", Integer, ForeignKey("runs.id"), primary_key=True),
    Column("version_id", Integer, ForeignKey("versions.id"), primary_key=True),
    Column("created_at", Float, nullable=False),
    Index("ix_run_inputs_version", "version_id"),
)

drafts = Table(
    "drafts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("group_key", String(512), nullable=False),
    Column("type", String(32), nullable=False),
    Column("description", Text),
    Column("metadata", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("name", "group_key", name="uq_drafts_name_group"),
)

draft_entries = Table(
    "draft_entries",
    metadata,
    Column("draft_id", Integer, ForeignKey("drafts.id"), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("digest", String(80)),
    Column("size", BigInteger),
    Column("data", JSON, nullable=False),
    Index("ix_draft_entries_digest", "digest"),
)

#: ``versions`` joined to itself for a version's inputs (built once so statements cache).
upstream_versions = versions.alias("upstream")

#: The delivery outbox: one row per (version, backend) a version was routed to, written in
#: the same transaction as the version, so a crash before delivery still leaves a row for
#: ``sync`` to retry.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("version_id", Integer, ForeignKey("versions.id"), nullable=False),
    Column("backend", String(64), nullable=False),
    Column("config", JSON, nullable=False),
    Column("run_id", String(512)),
    Column("run_name", String(512)),
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("result", JSON),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("version_id", "backend", name="uq_deliveries_version_backend"),
    Index("ix_deliveries_status", "status"),
)

#: Version tags (migration 6): non-unique labels on a version, outside its digest; a version
#: can carry many and a tag many versions of one name (unlike aliases).
version_tags = Table(
    "version_tags",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id"), primary_key=True),
    Column("tag", String(128), primary_key=True),
    Index("ix_version_tags_tag", "tag"),
)

#: The alias-event outbox (migration 5): one row per tracker holding a version whose alias
#: moved or was removed, written in the same transaction as the alias change; ``sync``
#: delivers them in ``id`` order per name, each exactly once.
alias_events = Table(
    "alias_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("artifact_id", Integer, ForeignKey("artifacts.id"), nullable=False),
    Column("alias", String(128), nullable=False),
    Column("action", String(8), nullable=False),  # set | remove
    Column("version_id", Integer, ForeignKey("versions.id"), nullable=False),  # the version it goes to / left
    Column("backend", String(64), nullable=False),
    Column("config", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_alias_events_status", "status", "artifact_id", "id"),
)

#: Stored retention policies (migration 7): what ``prune()`` with no rule arguments applies.
retention_policies = Table(
    "retention_policies",
    metadata,
    Column("pattern", String(201), primary_key=True),  # a name, ``prefix*`` or ``*``
    Column("keep_last", Integer),
    Column("older_than_s", Float),
    Column("created_at", Float, nullable=False),
)

#: Every alias change (migration 8): which alias of which name moved from which version to which
#: (``None``: it was not set / was removed), when, by which producing run, and why.
alias_history = Table(
    "alias_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("artifact_id", Integer, ForeignKey("artifacts.id"), nullable=False),
    Column("alias", String(128), nullable=False),
    Column("before_version_id", Integer, ForeignKey("versions.id")),
    Column("after_version_id", Integer, ForeignKey("versions.id")),
    Column("at", Float, nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id")),
    Column("reason", Text),
    Index("ix_alias_history_artifact", "artifact_id", "alias", "id"),
)

#: Quarantine marks (migration 9): ``version_id`` is quarantined because ``source_version_id``
#: was (itself, or a version it was built from at any depth); ``release(source)`` lifts them.
quarantines = Table(
    "quarantines",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id"), primary_key=True),
    Column("source_version_id", Integer, ForeignKey("versions.id"), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("at", Float, nullable=False),
    Index("ix_quarantines_source", "source_version_id"),
)

#: The status-event outbox (migration 9): one row per tracker holding a version that was
#: deleted, quarantined or released, written in the same transaction; ``sync`` tags the
#: tracker's copy ``tracelet.status=<status>`` (``active`` on release).
status_events = Table(
    "status_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("version_id", Integer, ForeignKey("versions.id"), nullable=False),
    Column("state", String(16), nullable=False),  # deleted | quarantined | active
    Column("backend", String(64), nullable=False),
    Column("config", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_status_events_status", "status", "id"),
)

#: The OpenLineage outbox (migration 11): every run event (``START``, the one terminal event)
#: and dataset event the export made, as sent, written before it is sent; ``key`` makes each
#: run start and end once (``<run id>/start``, ``<run id>/end``).
lineage_events = Table(
    "lineage_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(1024), nullable=False, unique=True),
    Column("run_id", String(64)),
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_lineage_events_status", "status", "id"),
)

INITIAL_TABLES = [artifacts, runs, versions, aliases, entries, version_inputs, run_inputs,
                  drafts, draft_entries]


def _add_missing_columns(conn: Connection, table: str, columns: dict[str, str]) -> None:
    """Add the ``columns`` (name -> SQL type) that ``table`` lacks: a catalog made before the
    migration existed has none of them, one made since has them from ``create_all``."""
    present = {column["name"] for column in inspect(conn).get_columns(table)}
    for name, sql_type in columns.items():
        if name not in present:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}"))


def _migration_1(conn: Connection) -> None:
    metadata.create_all(conn, tables=INITIAL_TABLES)


def _migration_2(conn: Connection) -> None:
    metadata.create_all(conn, tables=[deliveries])


def _migration_3(conn: Connection) -> None:
    """Versions remember their partition; dedup and "latest" can be per partition."""
    _add_missing_columns(conn, "versions", {"partition_key": "VARCHAR(1024)"})
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_versions_partition "
                      "ON versions (artifact_id, partition_key, version)"))


def _migration_6(conn: Connection) -> None:
    """Version tags."""
    metadata.create_all(conn, tables=[version_tags])


def _migration_5(conn: Connection) -> None:
    """Alias moves reach the trackers through their own outbox table."""
    metadata.create_all(conn, tables=[alias_events])


def _migration_7(conn: Connection) -> None:
    """Deleted versions (tombstones) and stored retention policies."""
    _add_missing_columns(conn, "versions", {"deleted_at": "FLOAT", "deleted_reason": "TEXT"})
    metadata.create_all(conn, tables=[retention_policies])


def _migration_8(conn: Connection) -> None:
    """Alias history."""
    metadata.create_all(conn, tables=[alias_history])


def _migration_9(conn: Connection) -> None:
    """Quarantine marks and the status-event outbox."""
    metadata.create_all(conn, tables=[quarantines, status_events])


def _migration_11(conn: Connection) -> None:
    """The OpenLineage run-event outbox."""
    metadata.create_all(conn, tables=[lineage_events])


#: Numbered schema migrations; append, never edit (migration 1 creates today's tables, so
#: later ones check before they add).
MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [
    (1, _migration_1), (2, _migration_2), (3, _migration_3), (5, _migration_5), (6, _migration_6),
    (7, _migration_7), (8, _migration_8), (9, _migration_9), (11, _migration_11)]
SCHEMA_VERSION = MIGRATIONS[-1][0]
PG_MIGRATION_LOCK = 0x7472616365  # "trace"
PG_BLOB_LOCK = 0x74726263  # "trbc": gc's blob deletion vs commits
#: The largest version number the ``versions.version`` column holds on every database.
MAX_VERSION_NUMBER = 2**31 - 1


def migrate(conn: Connection, dialect: str, url: str) -> None:
    """Bring the schema to ``SCHEMA_VERSION`` inside the write transaction ``conn``; refuses a
    catalog a newer tracelet made (``ConfigurationError``)."""
    if dialect == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})")
    schema_table.create(conn, checkfirst=True)
    current = conn.execute(select(func.max(schema_table.c.version))).scalar() or 0
    if current > SCHEMA_VERSION:
        raise ConfigurationError(
            f"catalog {url} has schema {current}, newer than this tracelet "
            f"({SCHEMA_VERSION}); upgrade tracelet-artifacts"
        )
    applied = set(conn.execute(select(schema_table.c.version)).scalars())
    for number, migration in MIGRATIONS:
        if number not in applied:  # by number: branches add numbers out of order
            migration(conn)
            conn.execute(insert(schema_table).values(version=number))
