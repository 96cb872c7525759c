"""The catalog: names, versions, aliases, entries, runs and lineage edges, in SQL.

SQLAlchemy Core over SQLite (default; WAL, busy timeout, ``BEGIN IMMEDIATE`` for writes) or
PostgreSQL (row locks with ``SELECT ... FOR UPDATE``). Version numbers are allocated inside
one write transaction per log, under a lock on the artifact's row, with ``UNIQUE(artifact_id,
version)`` as the backstop, so concurrent writers in many processes never lose or duplicate a
version.

Schema changes are numbered migrations (see ``MIGRATIONS``) recorded in
``tracelet_schema``; they run under the same write lock (SQLite) or an advisory lock
(PostgreSQL), so several processes starting at once migrate exactly once. We use this small
runner instead of alembic because the catalog is embedded: it must migrate itself on open,
with no ini files or script directories shipped to users.
"""

from __future__ import annotations

import functools
import inspect as inspect_module
import json
import os
import random
import sqlite3
import threading
import time
import weakref
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

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
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.pool import NullPool, QueuePool

from ._errors import (
    ArtifactNotFoundError,
    ConfigurationError,
    InvalidArtifactError,
    StorageError,
    TraceletError,
)
from ._hashing import hash_json
from ._model import RunInfo
from ._names import LATEST, format_version, version_number

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
_upstream_versions = versions.alias("upstream")

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

INITIAL_TABLES = [artifacts, runs, versions, aliases, entries, version_inputs, run_inputs,
                  drafts, draft_entries]


def _migration_1(conn: Connection) -> None:
    metadata.create_all(conn, tables=INITIAL_TABLES)


def _migration_2(conn: Connection) -> None:
    metadata.create_all(conn, tables=[deliveries])


def _migration_3(conn: Connection) -> None:
    """Versions remember their partition; dedup and "latest" can be per partition."""
    present = {column["name"] for column in inspect(conn).get_columns("versions")}
    if "partition_key" not in present:  # catalogs made before migration 3 existed
        conn.execute(text("ALTER TABLE versions ADD COLUMN partition_key VARCHAR(1024)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_versions_partition "
                      "ON versions (artifact_id, partition_key, version)"))


def _migration_6(conn: Connection) -> None:
    """Version tags."""
    metadata.create_all(conn, tables=[version_tags])


def _migration_5(conn: Connection) -> None:
    """Alias moves reach the trackers through their own outbox table."""
    metadata.create_all(conn, tables=[alias_events])


#: Numbered schema migrations; append, never edit (migration 1 creates today's tables, so
#: later ones check before they add).
MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [
    (1, _migration_1), (2, _migration_2), (3, _migration_3), (5, _migration_5), (6, _migration_6)]
SCHEMA_VERSION = MIGRATIONS[-1][0]
_PG_MIGRATION_LOCK = 0x7472616365  # "trace"
_PG_BLOB_LOCK = 0x74726263  # "trbc": gc's blob deletion vs commits
#: Blobs ``gc`` deletes per catalog transaction (writers wait at most one batch).
_COLLECT_BATCH = 200
#: The largest version number the ``versions.version`` column holds on every database.
MAX_VERSION_NUMBER = 2**31 - 1


@dataclass
class VersionRecord:
    """One catalog row of ``versions`` with everything a ``LoggedArtifact`` shows."""

    id: int
    name: str
    version: int
    type: str
    digest: str
    manifest_digest: str
    description: str | None
    metadata: dict[str, Any]
    size_bytes: int
    created_at: float
    producer: RunInfo | None = None
    inputs: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    partition: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{format_version(self.version)}"


@dataclass(frozen=True)
class PreparedManifest:
    """A manifest written before the catalog's lock was taken, for a predicted version."""

    version: int
    inputs: list[str]
    created_at: float
    digest: str


#: Where an alias points, as the alias journal records it: ``{"version": 3, "digest": ...}``.
AliasTarget = dict[str, Any]
#: ``journal(after, before)``: persist a name's alias targets (see ``commit_version``).
AliasJournal = Callable[[dict[str, AliasTarget], dict[str, AliasTarget]], None]


@dataclass(frozen=True)
class DeliverySpec:
    """A backend a version is routed to, and how to rebuild that backend later."""

    backend: str
    config: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None  # the tracker run it belongs to (an experiment's run)
    run_name: str | None = None


@dataclass
class DeliveryRecord:
    """One row of the outbox."""

    id: int
    ref: str
    backend: str
    config: dict[str, Any]
    run_id: str | None
    run_name: str | None
    status: str
    attempts: int
    last_error: str | None
    result: dict[str, Any] | None
    updated_at: float


@dataclass
class AliasEventRecord:
    """One row of the alias-event outbox: ``alias`` of ``name`` was set on (``action="set"``)
    or taken off (``"remove"``) the version ``ref``, to be told to ``backend``."""

    id: int
    name: str
    alias: str
    action: str
    ref: str
    backend: str
    config: dict[str, Any]
    status: str
    attempts: int
    last_error: str | None


@dataclass
class DraftRecord:
    """An open ``upsert`` group waiting for ``finish``."""

    id: int
    name: str
    group: str
    type: str
    description: str | None
    metadata: dict[str, Any]
    created_at: float
    entries: list[dict[str, Any]] = field(default_factory=list)


def _password(url: str) -> str | None:
    try:
        return make_url(url).password
    except (ArgumentError, ValueError):
        return None


def _masked(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url.split("@")[-1] if "@" in url else url


#: SQLSTATEs of lock contention on PostgreSQL: deadlock, serialization failure, lock timeout.
_PG_CONTENTION_CODES = frozenset({"40P01", "40001", "55P03"})
#: SQLite messages of lock contention (the busy timeout ran out) and of a full disk.
_SQLITE_CONTENTION = ("database is locked", "database table is locked", "database is busy")
_TRANSIENT_MESSAGES = ("database or disk is full", "disk i/o error")
#: How long SQLite waits for another writer's lock before the catalog's own retries start.
SQLITE_BUSY_TIMEOUT_S = 60.0
#: Attempts (and first backoff delay) of a transaction that lost a lock contention.
CONTENTION_ATTEMPTS = 8
CONTENTION_FIRST_DELAY_S = 0.05


class CatalogContentionError(StorageError):
    """Another transaction held a lock this one needed (deadlock, lock timeout, busy
    SQLite); the transaction was rolled back and is retried."""


def _sqlstate(exc: SQLAlchemyError) -> str | None:
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    return str(code) if code else None


def _translate(exc: SQLAlchemyError, url: str) -> TraceletError:
    """Lock contention, a lost connection or a full disk is a ``StorageError`` (transient:
    retry later); anything else means the catalog cannot work as configured."""
    message = str(getattr(exc, "orig", None) or exc).lower()
    if _sqlstate(exc) in _PG_CONTENTION_CODES or any(m in message for m in _SQLITE_CONTENTION):
        return CatalogContentionError(f"catalog {url} is busy (lock contention; rolled back): {exc}")
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return StorageError(f"lost the connection to catalog {url} (the transaction was rolled back): {exc}")
    if any(m in message for m in _TRANSIENT_MESSAGES):
        return StorageError(f"catalog {url} cannot write (rolled back): {exc}")
    return ConfigurationError(f"catalog {url} failed: {exc.__class__.__name__}: {exc}")


def _pause(seconds: float) -> None:
    """Back off before retrying a transaction that lost a lock contention."""
    time.sleep(seconds)


_Method = TypeVar("_Method", bound=Callable[..., Any])
_C = TypeVar("_C")


def _retried_on_contention(method: _Method) -> _Method:
    """Re-run a whole catalog operation (each one is one transaction, or several independent
    ones) when it lost a lock contention, with jittered exponential backoff; after
    ``CONTENTION_ATTEMPTS`` the ``CatalogContentionError`` (a ``StorageError``) is raised."""

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        delay = CONTENTION_FIRST_DELAY_S
        for attempt in range(1, CONTENTION_ATTEMPTS + 1):
            try:
                return method(*args, **kwargs)
            except CatalogContentionError:
                if attempt == CONTENTION_ATTEMPTS:
                    raise
            _pause(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")  # pragma: no cover

    return cast(_Method, run)


def _retry_public_operations(cls: type[_C]) -> type[_C]:
    """Every public method of the catalog runs whole transactions, so each one may be
    re-run after a lock contention (``_retried_on_contention``)."""
    for attr, value in list(vars(cls).items()):
        if not attr.startswith("_") and inspect_module.isfunction(value):
            setattr(cls, attr, _retried_on_contention(value))
    return cls



@_retry_public_operations
class Catalog:
    """All SQL the store runs; one instance per process and URL, safe across threads.

    Every public method is retried as a whole after lock contention (see
    ``_retried_on_contention``), so callers see ``StorageError`` only when it persists."""

    def __init__(self, url: str, *, durable: bool = True) -> None:
        #: The URL with any password masked: what messages and reprs show.
        self.url = _masked(url)
        #: Whether the URL carries a password (then it is never handed to another process).
        self.has_password = bool(_password(url))
        self._url = url
        #: SQLite commits with ``synchronous=FULL`` (durable on return) or ``NORMAL`` (WAL:
        #: still atomic after a killed process; a power loss may lose the last commits).
        self.durable = durable
        try:
            self.engine = self._create_engine(url, durable)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise ConfigurationError(f"cannot open catalog {self.url!r}: {exc}") from exc
        self.dialect = self.engine.dialect.name
        self._hot_lock = threading.Lock()
        self._hot_local = threading.local()
        self._hot_connections: list[tuple[int, sqlite3.Connection]] = []
        self.migrate()

    @staticmethod
    def _create_engine(url: str, durable: bool = True) -> Engine:
        if url.startswith("sqlite"):
            in_memory = url in ("sqlite://", "sqlite:///:memory:")
            # A small pool keeps connections (and SQLite's page cache) across operations; a
            # forked child drops the parent's connections instead of sharing them.
            engine = create_engine(url, poolclass=NullPool if in_memory else QueuePool,
                                   pool_size=4, max_overflow=16,
                                   connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
            _dispose_after_fork(engine)

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
                cursor.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Connection) -> None:
                mode = "IMMEDIATE" if conn.get_execution_options().get("tracelet_write") else "DEFERRED"
                conn.exec_driver_sql(f"BEGIN {mode}")

            return engine
        engine = create_engine(url, pool_pre_ping=True)
        _dispose_after_fork(engine)
        return engine

    # -- transactions -----------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction; on SQLite it holds the database write lock from the start."""
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(tracelet_write=True)
                with conn.begin():
                    yield conn
        except TraceletError:
            raise
        except SQLAlchemyError as exc:
            raise _translate(exc, self.url) from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except TraceletError:
            raise
        except SQLAlchemyError as exc:
            raise _translate(exc, self.url) from exc

    def migrate(self) -> None:
        """Bring the schema to ``SCHEMA_VERSION``; safe when many processes start at once."""
        for attempt in range(5):
            try:
                with self._write() as conn:
                    if self.dialect == "postgresql":
                        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
                    schema_table.create(conn, checkfirst=True)
                    current = conn.execute(select(func.max(schema_table.c.version))).scalar() or 0
                    if current > SCHEMA_VERSION:
                        raise ConfigurationError(
                            f"catalog {self.url} has schema {current}, newer than this tracelet "
                            f"({SCHEMA_VERSION}); upgrade tracelet-artifacts"
                        )
                    applied = set(conn.execute(select(schema_table.c.version)).scalars())
                    for number, migration in MIGRATIONS:
                        if number not in applied:  # by number: branches add numbers out of order
                            migration(conn)
                            conn.execute(insert(schema_table).values(version=number))
                return
            except ConfigurationError as exc:
                # a racing process created the table first (PostgreSQL without the lock yet)
                if attempt == 4 or not isinstance(exc.__cause__, (SAIntegrityError, OperationalError)):
                    raise

    def dispose(self) -> None:
        self.engine.dispose()
        with self._hot_lock:
            mine = [conn for pid, conn in self._hot_connections if pid == os.getpid()]
            self._hot_connections = []
            self._hot_local = threading.local()
        for conn in mine:  # never a forked parent's: closing those would drop its locks
            conn.close()

    @property
    def url_for_other_processes(self) -> str | None:
        """The URL another process may be told, or ``None`` when it carries a password (that
        process then reads its own ``TRACELET_CATALOG_URL``)."""
        return None if self.has_password else self._url

    # -- helpers ----------------------------------------------------------------------------
    def _insert_ignore(self, conn: Connection, table: Table, values: dict[str, Any], keys: Sequence[str]) -> None:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            conn.execute(pg_insert(table).values(**values).on_conflict_do_nothing(index_elements=list(keys)))
        elif self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            conn.execute(sqlite_insert(table).values(**values).on_conflict_do_nothing(index_elements=list(keys)))
        else:  # pragma: no cover - other databases: check then insert
            where = and_(*[table.c[k] == values[k] for k in keys])
            if conn.execute(select(func.count()).select_from(table).where(where)).scalar() == 0:
                conn.execute(insert(table).values(**values))

    def _lock_artifact(self, conn: Connection, name: str, type_: str) -> int:
        """Create the artifact row if needed and lock it for this transaction; its id (one
        statement when the name exists: the usual case)."""
        locked = select(artifacts.c.id).where(artifacts.c.name == name).with_for_update()
        found = conn.execute(locked).scalar()
        if found is not None:
            return int(found)
        self._insert_ignore(conn, artifacts, {"name": name, "type": type_, "created_at": time.time()}, ["name"])
        return int(conn.execute(locked).scalar_one())

    def _artifact_id(self, conn: Connection, name: str) -> int:
        found = conn.execute(select(artifacts.c.id).where(artifacts.c.name == name)).scalar()
        if found is None:
            raise ArtifactNotFoundError(f"no artifact named {name!r}")
        return int(found)

    def _ensure_run(self, conn: Connection, run: RunInfo) -> int:
        return int(self._ensure_run_row(conn, run).id)

    def _ensure_run_row(self, conn: Connection, run: RunInfo) -> Any:
        """The ``runs`` row of ``run`` (inserted if new; the first writer's fields win)."""
        found = conn.execute(select(runs).where(runs.c.key == run.key)).first()
        if found is not None:
            return found
        values = {
            "key": run.key, "orchestrator": run.orchestrator, "run_id": run.run_id,
            "step": run.step, "name": run.name, "partition": run.partition,
            "code_version": run.code_version, "extra": dict(run.extra), "created_at": time.time(),
        }
        self._insert_ignore(conn, runs, values, ["key"])
        return conn.execute(select(runs).where(runs.c.key == run.key)).one()

    def _version_row(self, conn: Connection, artifact_id: int, name: str, selector: str,
                     partition: str | None = None) -> Any:
        """The row ``selector`` names; ``latest`` of one ``partition`` when one is given."""
        query = select(versions).where(versions.c.artifact_id == artifact_id)
        number = version_number(selector)
        if number is not None and number > MAX_VERSION_NUMBER:  # no column holds it: not found
            raise ArtifactNotFoundError(f"artifact {name!r} has no version {selector!r}")
        if selector == LATEST:
            if partition is not None:
                query = query.where(versions.c.partition_key == partition)
            query = query.order_by(versions.c.version.desc()).limit(1)
        elif number is not None:
            query = query.where(versions.c.version == number)
        else:
            query = query.join(aliases, aliases.c.version_id == versions.c.id).where(
                aliases.c.artifact_id == artifact_id, aliases.c.alias == selector
            )
        row = conn.execute(query).first()
        if row is None:
            raise _no_such_version(name, selector, partition)
        return row

    def _hydrate(self, conn: Connection, rows: Sequence[Any], names: dict[int, str]) -> list[VersionRecord]:
        """Turn ``versions`` rows into records, fetching their relations in batches."""
        if not rows:
            return []
        ids = [row.id for row in rows]
        alias_map: dict[int, list[str]] = {}
        artifact_ids = sorted({row.artifact_id for row in rows})  # the primary key's prefix
        for a in conn.execute(select(aliases.c.version_id, aliases.c.alias)
                              .where(aliases.c.artifact_id.in_(artifact_ids), aliases.c.version_id.in_(ids))
                              .order_by(aliases.c.alias)):
            alias_map.setdefault(a.version_id, []).append(a.alias)
        input_map: dict[int, list[str]] = {}
        upstream = _upstream_versions
        for i in conn.execute(
            select(version_inputs.c.version_id, artifacts.c.name, upstream.c.version)
            .join(upstream, upstream.c.id == version_inputs.c.input_version_id)
            .join(artifacts, artifacts.c.id == upstream.c.artifact_id)
            .where(version_inputs.c.version_id.in_(ids))
            .order_by(artifacts.c.name, upstream.c.version)
        ):
            input_map.setdefault(i.version_id, []).append(f"{i.name}:{format_version(i.version)}")
        run_ids = {row.producer_run_id for row in rows if row.producer_run_id is not None}
        run_map = ({r.id: _run_from_row(r) for r in conn.execute(select(runs).where(runs.c.id.in_(run_ids)))}
                   if run_ids else {})
        entry_map: dict[int, list[dict[str, Any]]] = {}
        for e in conn.execute(select(entries.c.version_id, entries.c.data)
                              .where(entries.c.version_id.in_(ids)).order_by(entries.c.path)):
            entry_map.setdefault(e.version_id, []).append(_json(e.data))
        return [_record(row, names, run_map, input_map, alias_map, entry_map) for row in rows]

    def _names_for(self, conn: Connection, artifact_ids: Iterable[int]) -> dict[int, str]:
        ids = set(artifact_ids)
        if not ids:
            return {}
        return {r.id: r.name for r in conn.execute(select(artifacts.c.id, artifacts.c.name)
                                                   .where(artifacts.c.id.in_(ids)))}

    def _resolve_ids(self, conn: Connection, refs: Iterable[tuple[str, str]]) -> list[int]:
        ids: list[int] = []
        for name, selector in refs:
            row = self._version_row(conn, self._artifact_id(conn, name), name, selector)
            if row.id not in ids:
                ids.append(row.id)
        return ids

    # -- hot reads on SQLite ------------------------------------------------------------------
    # ``get`` by version, alias or latest, ``get_by_ids`` and one-hop lineage run plain SQL on
    # one read connection per thread (prepared once by sqlite3's statement cache; no pool
    # checkout): SQLAlchemy's per-statement and pool work is many times SQLite's own for these
    # indexed lookups. Same rows, same records as ``_hydrate`` (a test checks). Two
    # statements per read and no transaction around them: a version and its entries and
    # inputs never change once committed; only its aliases may be a moment newer.
    def _hot_connection(self) -> sqlite3.Connection | None:
        """This thread's read connection to a file catalog (None: use the general path)."""
        conn: sqlite3.Connection | None = getattr(self._hot_local, "conn", None)
        if conn is not None and getattr(self._hot_local, "pid", None) == os.getpid():
            return conn
        url = self.engine.url
        if self.dialect != "sqlite" or not url.database or url.database == ":memory:" or url.query:
            return None
        conn = sqlite3.connect(url.database, timeout=60, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=60000")
        with self._hot_lock:
            self._hot_connections.append((os.getpid(), conn))
        self._hot_local.conn, self._hot_local.pid = conn, os.getpid()
        return conn

    @contextmanager
    def _sqlite_read(self) -> Iterator[sqlite3.Cursor]:
        conn = self._hot_connection()
        try:
            if conn is None:  # an in-memory or URI catalog: a pooled connection, one snapshot
                with self.engine.connect() as pooled:
                    raw = pooled.connection.driver_connection
                    assert isinstance(raw, sqlite3.Connection)
                    cur = raw.cursor()
                    cur.execute("BEGIN")
                    try:
                        yield cur
                    finally:
                        cur.execute("COMMIT")
                        cur.close()
                return
            cur = conn.cursor()
            try:
                yield cur
            finally:
                cur.close()
        except sqlite3.Error as exc:
            raise _translate_sqlite(exc, self.url) from exc
        except SQLAlchemyError as exc:
            raise _translate(exc, self.url) from exc

    def _sqlite_get(self, name: str, selector: str, partition: str | None) -> VersionRecord:
        number = version_number(selector)
        if number is not None and number > MAX_VERSION_NUMBER:  # no column holds it: not found
            raise ArtifactNotFoundError(f"artifact {name!r} has no version {selector!r}")
        with self._sqlite_read() as cur:
            cur.row_factory = _row
            if selector == LATEST and partition is None:
                found = cur.execute(f"{_SQLITE_VERSIONS} WHERE a.name = ? ORDER BY v.version DESC LIMIT 1",
                                    (name,))
            elif selector == LATEST:
                found = cur.execute(f"{_SQLITE_VERSIONS} WHERE a.name = ? AND v.partition_key = ? "
                                    "ORDER BY v.version DESC LIMIT 1", (name, partition))
            elif number is not None:
                found = cur.execute(f"{_SQLITE_VERSIONS} WHERE a.name = ? AND v.version = ?", (name, number))
            else:
                found = cur.execute(f"{_SQLITE_VERSIONS} JOIN aliases al ON al.version_id = v.id "
                                    "AND al.artifact_id = v.artifact_id WHERE a.name = ? AND al.alias = ?",
                                    (name, selector))
            row = found.fetchone()
            cur.row_factory = None
            if row is None:
                if cur.execute("SELECT 1 FROM artifacts WHERE name = ?", (name,)).fetchone() is None:
                    raise ArtifactNotFoundError(f"no artifact named {name!r}")
                raise _no_such_version(name, selector, partition)
            return _sqlite_hydrate(cur, [row])[0]

    # -- writes -----------------------------------------------------------------------------
    def commit_version(
        self,
        *,
        name: str,
        type_: str,
        digest: str,
        description: str | None,
        metadata_: dict[str, Any],
        size_bytes: int,
        entry_rows: list[dict[str, Any]],
        producer: RunInfo | None,
        input_refs: Sequence[tuple[str, str]],
        aliases_: Sequence[str],
        idempotency_key: str | None,
        write_manifest: Callable[[int, float, list[str]], str],
        deliveries_: Sequence[DeliverySpec] = (),
        partition: str | None = None,
        sealed_draft: DraftRecord | None = None,
        check_blobs: Callable[[], None] | None = None,
        journal: AliasJournal | None = None,
        prepared: PreparedManifest | None = None,
    ) -> tuple[VersionRecord, bool]:
        """Allocate the next version and insert it, or return the existing one (the same
        idempotency key, or identical content to the newest version of the name, or of the
        ``partition`` when one is given).

        ``write_manifest(version, created_at, input_refs)`` is called under the lock, after
        the blobs exist and before the row is inserted, and returns the manifest's digest.
        ``prepared`` is a manifest already written (outside the lock) for the version
        number and inputs ``next_version`` predicted: when the prediction holds, nothing is
        written under the lock.
        ``check_blobs`` runs under the lock ``gc`` deletes blobs under, before a new version
        is recorded (it restores or refuses blobs ``gc`` collected since they were staged).
        ``journal(after, before)`` receives the name's alias targets when they change, as
        the last step before the commit (the alias journal ``reindex`` reads: written inside
        the transaction, so it never falls behind a committed alias).
        With ``sealed_draft`` (what ``finish`` read), the draft is deleted in the same
        transaction, after checking under its lock that no entry was added since it was read
        (``DraftChangedError`` otherwise: read it again).
        Returns ``(record, created)``.
        """
        with self._write() as conn:
            self._share_blob_lock(conn)
            artifact_id = self._lock_artifact(conn, name, type_)
            if sealed_draft is not None:
                self._take_draft(conn, sealed_draft)
            aliases_before = self._alias_targets(conn, artifact_id) if aliases_ else {}
            existing = None
            if idempotency_key is not None:
                existing = conn.execute(select(versions).where(
                    versions.c.artifact_id == artifact_id,
                    versions.c.idempotency_key == idempotency_key)).first()
            latest = None
            if existing is None:
                newest = select(versions).where(versions.c.artifact_id == artifact_id)
                if partition is not None:
                    newest = newest.where(versions.c.partition_key == partition)
                latest = conn.execute(newest.order_by(versions.c.version.desc()).limit(1)).first()
                if latest is not None and latest.digest == digest and latest.type == type_:
                    existing = latest
            input_ids = self._resolve_ids(conn, input_refs)
            if existing is not None:
                self._move_aliases(conn, artifact_id, existing.id, aliases_)
                self._enqueue(conn, existing.id, deliveries_)
                if producer is not None and input_ids:
                    self._record_run_inputs(conn, self._ensure_run(conn, producer), input_ids)
                if aliases_:
                    self._journal_aliases(conn, artifact_id, aliases_before, journal)
                record = self._hydrate(conn, [existing], {artifact_id: name})[0]
                return record, False
            if existing is None and partition is None and idempotency_key is None:
                max_version = latest.version if latest is not None else 0  # the newest is the max
            else:
                max_version = conn.execute(select(func.max(versions.c.version))
                                           .where(versions.c.artifact_id == artifact_id)).scalar()
            number = int(max_version or 0) + 1
            created_at = time.time()
            input_labels = self._labels(conn, input_ids)
            if check_blobs is not None:
                check_blobs()
            if prepared is not None and (prepared.version, prepared.inputs) == (number, input_labels):
                created_at, manifest_digest = prepared.created_at, prepared.digest
            else:
                manifest_digest = write_manifest(number, created_at, input_labels)
            run_row = self._ensure_run_row(conn, producer) if producer is not None else None
            run_id = int(run_row.id) if run_row is not None else None
            version_id = _inserted_id(conn.execute(insert(versions).values(
                artifact_id=artifact_id, version=number, type=type_, digest=digest,
                manifest_digest=manifest_digest, description=description, metadata=metadata_,
                size_bytes=size_bytes, created_at=created_at, producer_run_id=run_id,
                idempotency_key=idempotency_key, partition_key=partition,
            )))
            if entry_rows:
                conn.execute(insert(entries), [{**row, "version_id": version_id} for row in entry_rows])
            if input_ids:
                conn.execute(insert(version_inputs),
                             [{"version_id": version_id, "input_version_id": i} for i in input_ids])
                if run_id is not None:
                    self._record_run_inputs(conn, run_id, input_ids)
            self._move_aliases(conn, artifact_id, version_id, aliases_)
            self._enqueue(conn, version_id, deliveries_)
            if aliases_:
                self._journal_aliases(conn, artifact_id, aliases_before, journal)
            if self.dialect != "sqlite":  # the server's collation orders entries: read them back
                row = conn.execute(select(versions).where(versions.c.id == version_id)).one()
                return self._hydrate(conn, [row], {artifact_id: name})[0], True
            # SQLite orders text by code point, as Python does: the record is what was inserted
            return VersionRecord(
                id=version_id, name=name, version=number, type=type_, digest=digest,
                manifest_digest=manifest_digest, description=description, metadata=metadata_,
                size_bytes=size_bytes, created_at=created_at,
                producer=_run_from_row(run_row) if run_row is not None else None,
                inputs=sorted(input_labels, key=_label_order), aliases=sorted(set(aliases_)),
                entries=json.loads(json.dumps([row["data"] for row in sorted(entry_rows, key=lambda r: r["path"])])),
                partition=partition,
            ), True

    def next_version(self, name: str, digest: str, input_refs: Sequence[tuple[str, str]],
                     idempotency_key: str | None, partition: str | None) -> tuple[int, list[str]] | None:
        """A prediction, read without the write lock, of the version number and input labels
        ``commit_version`` will use for new content; ``None`` where it would return an
        existing version (identical content, a known idempotency key) or the name is new
        to it but the inputs do not resolve."""
        with self._read() as conn:
            artifact_id = conn.execute(select(artifacts.c.id).where(artifacts.c.name == name)).scalar()
            number = 1
            if artifact_id is not None:
                if idempotency_key is not None and conn.execute(select(versions.c.id).where(
                        versions.c.artifact_id == artifact_id,
                        versions.c.idempotency_key == idempotency_key)).first() is not None:
                    return None
                newest = select(versions.c.digest).where(versions.c.artifact_id == artifact_id)
                if partition is not None:
                    newest = newest.where(versions.c.partition_key == partition)
                if conn.execute(newest.order_by(versions.c.version.desc()).limit(1)).scalar() == digest:
                    return None
                number = int(conn.execute(select(func.max(versions.c.version))
                                          .where(versions.c.artifact_id == artifact_id)).scalar() or 0) + 1
            try:
                labels = self._labels(conn, self._resolve_ids(conn, input_refs))
            except ArtifactNotFoundError:
                return None
            return number, labels

    # -- the delivery outbox ------------------------------------------------------------------
    def _enqueue(self, conn: Connection, version_id: int, specs: Sequence[DeliverySpec]) -> None:
        """Record pending deliveries; a version already delivered to a backend stays so."""
        now = time.time()
        for spec in specs:
            self._insert_ignore(conn, deliveries, {
                "version_id": version_id, "backend": spec.backend, "config": spec.config,
                "run_id": spec.run_id, "run_name": spec.run_name, "status": "pending",
                "attempts": 0, "last_error": None, "result": None, "created_at": now,
                "updated_at": now}, ["version_id", "backend"])

    def finish_delivery(self, ref_name: str, version: int, backend: str, *, ok: bool,
                        result: dict[str, Any] | None, error: str | None, confirmed: bool = True) -> None:
        """Record the outcome of one delivery attempt (``ok`` but not ``confirmed``: the
        tracker has it in memory only, status ``unconfirmed``)."""
        with self._write() as conn:
            version_id = self._version_row(conn, self._artifact_id(conn, ref_name), ref_name,
                                           format_version(version)).id
            conn.execute(update(deliveries).where(
                deliveries.c.version_id == version_id, deliveries.c.backend == backend).values(
                status=("delivered" if confirmed else "unconfirmed") if ok else "failed",
                attempts=deliveries.c.attempts + 1,
                last_error=None if ok else error, result=result, updated_at=time.time()))

    def deliveries(self, *, statuses: Sequence[str] | None = None, backend: str | None = None,
                   version_id: int | None = None) -> list[DeliveryRecord]:
        with self._read() as conn:
            query = (select(deliveries, artifacts.c.name, versions.c.version.label("number"))
                     .join(versions, versions.c.id == deliveries.c.version_id)
                     .join(artifacts, artifacts.c.id == versions.c.artifact_id)
                     .order_by(deliveries.c.id))
            if statuses is not None:
                query = query.where(deliveries.c.status.in_(list(statuses)))
            if backend is not None:
                query = query.where(deliveries.c.backend == backend)
            if version_id is not None:
                query = query.where(deliveries.c.version_id == version_id)
            return [DeliveryRecord(
                id=r.id, ref=f"{r.name}:{format_version(r.number)}", backend=r.backend,
                config=_json(r.config) or {}, run_id=r.run_id, run_name=r.run_name, status=r.status,
                attempts=r.attempts, last_error=r.last_error, result=_json(r.result),
                updated_at=r.updated_at) for r in conn.execute(query)]

    def _labels(self, conn: Connection, version_ids: Sequence[int]) -> list[str]:
        if not version_ids:
            return []
        rows = conn.execute(select(versions.c.id, versions.c.version, artifacts.c.name)
                            .join(artifacts, artifacts.c.id == versions.c.artifact_id)
                            .where(versions.c.id.in_(version_ids))).all()
        by_id = {r.id: f"{r.name}:{format_version(r.version)}" for r in rows}
        return [by_id[i] for i in version_ids]

    def _move_aliases(self, conn: Connection, artifact_id: int, version_id: int, names: Sequence[str]) -> None:
        for alias in names:
            conn.execute(delete(aliases).where(aliases.c.artifact_id == artifact_id, aliases.c.alias == alias))
            conn.execute(insert(aliases).values(artifact_id=artifact_id, alias=alias, version_id=version_id))

    def _record_run_inputs(self, conn: Connection, run_id: int, version_ids: Iterable[int]) -> None:
        now = time.time()
        for version_id in version_ids:
            self._insert_ignore(conn, run_inputs, {"run_id": run_id, "version_id": version_id,
                                                   "created_at": now}, ["run_id", "version_id"])

    def set_alias(self, name: str, selector: str, alias: str, journal: AliasJournal | None = None) -> VersionRecord:
        """Point ``alias`` at the version ``selector`` names (moving it if set elsewhere);
        ``journal`` is called with the new and the previous alias targets just before the
        transaction commits (see ``commit_version``)."""
        with self._write() as conn:
            artifact_id = self._artifact_id(conn, name)
            conn.execute(select(artifacts.c.id).where(artifacts.c.id == artifact_id).with_for_update())
            before = self._alias_targets(conn, artifact_id)
            row = self._version_row(conn, artifact_id, name, selector)
            previous = self._alias_version_id(conn, artifact_id, alias)
            self._move_aliases(conn, artifact_id, row.id, [alias])
            self._enqueue_alias_events(conn, artifact_id, alias, row.id, previous)
            self._journal_aliases(conn, artifact_id, before, journal)
            return self._hydrate(conn, [row], {artifact_id: name})[0]

    def remove_alias(self, name: str, alias: str, journal: AliasJournal | None = None) -> None:
        with self._write() as conn:
            artifact_id = self._artifact_id(conn, name)
            conn.execute(select(artifacts.c.id).where(artifacts.c.id == artifact_id).with_for_update())
            previous = self._alias_version_id(conn, artifact_id, alias)
            before = self._alias_targets(conn, artifact_id)
            result = conn.execute(delete(aliases).where(aliases.c.artifact_id == artifact_id,
                                                        aliases.c.alias == alias))
            if result.rowcount == 0:
                raise ArtifactNotFoundError(f"artifact {name!r} has no alias {alias!r}")
            self._enqueue_alias_events(conn, artifact_id, alias, None, previous)
            self._journal_aliases(conn, artifact_id, before, journal)

    # -- the alias-event outbox ---------------------------------------------------------------
    def _alias_version_id(self, conn: Connection, artifact_id: int, alias: str) -> int | None:
        found = conn.execute(select(aliases.c.version_id).where(aliases.c.artifact_id == artifact_id,
                                                                aliases.c.alias == alias)).scalar()
        return None if found is None else int(found)

    def _holders(self, conn: Connection, version_id: int | None) -> dict[str, dict[str, Any]]:
        """backend -> config of the trackers a version was routed to (delivered or not yet)."""
        if version_id is None:
            return {}
        rows = conn.execute(select(deliveries.c.backend, deliveries.c.config)
                            .where(deliveries.c.version_id == version_id).order_by(deliveries.c.id))
        return {r.backend: _json(r.config) or {} for r in rows}

    def _enqueue_alias_events(self, conn: Connection, artifact_id: int, alias: str,
                              target: int | None, previous: int | None) -> None:
        """Queue the alias change for every tracker concerned: ``remove`` from the version
        that held it for the trackers holding that one, then ``set`` on the new version for
        the trackers holding it (so trackers whose aliases are plain tags never keep two)."""
        if target is not None and target == previous:
            return  # nothing moved
        now = time.time()
        rows = [{"action": "remove", "version_id": previous, "backend": b, "config": c}
                for b, c in self._holders(conn, previous).items()]
        rows += [{"action": "set", "version_id": target, "backend": b, "config": c}
                 for b, c in self._holders(conn, target).items()]
        if rows:
            conn.execute(insert(alias_events), [
                {**row, "artifact_id": artifact_id, "alias": alias, "status": "pending", "attempts": 0,
                 "last_error": None, "created_at": now, "updated_at": now} for row in rows])

    def alias_events(self, *, statuses: Sequence[str] = ("pending", "failed"),
                     name: str | None = None) -> list[AliasEventRecord]:
        """Alias events of some statuses (of one name), oldest first."""
        with self._read() as conn:
            query = (select(alias_events, artifacts.c.name, versions.c.version.label("number"))
                     .join(artifacts, artifacts.c.id == alias_events.c.artifact_id)
                     .join(versions, versions.c.id == alias_events.c.version_id)
                     .where(alias_events.c.status.in_(list(statuses))).order_by(alias_events.c.id))
            if name is not None:
                query = query.where(artifacts.c.name == name)
            return [AliasEventRecord(
                id=r.id, name=r.name, alias=r.alias, action=r.action,
                ref=f"{r.name}:{format_version(r.number)}", backend=r.backend, config=_json(r.config) or {},
                status=r.status, attempts=r.attempts, last_error=r.last_error) for r in conn.execute(query)]

    def finish_alias_event(self, event_id: int, *, ok: bool, error: str | None) -> None:
        """Record the outcome of one attempt to deliver an alias event."""
        with self._write() as conn:
            conn.execute(update(alias_events).where(alias_events.c.id == event_id).values(
                status="delivered" if ok else "failed", attempts=alias_events.c.attempts + 1,
                last_error=None if ok else error, updated_at=time.time()))

    def delivery_status(self, version_id: int, backend: str) -> str | None:
        """The outbox status of one version's delivery to ``backend`` (None: never routed)."""
        with self._read() as conn:
            found = conn.execute(select(deliveries.c.status).where(
                deliveries.c.version_id == version_id, deliveries.c.backend == backend)).scalar()
        return None if found is None else str(found)

    def tracker_results(self, backend: str, run_id: str) -> list[dict[str, Any]]:
        """The recorded results (any status) of the deliveries to ``backend`` made for
        tracelet run ``run_id``, newest first: how a backend finds its own tracker run
        without scanning the tracker."""
        with self._read() as conn:
            rows = conn.execute(select(deliveries.c.result).where(
                deliveries.c.backend == backend, deliveries.c.run_id == run_id).order_by(deliveries.c.id.desc()))
            return [r for r in (_json(row.result) for row in rows) if r]

    def with_alias_map(self, name: str, use: AliasJournal) -> None:
        """Call ``use`` with the committed alias targets of ``name`` (twice: as the new and
        the previous state) while holding its write lock, so concurrent callers persist alias
        states in commit order."""
        with self._write() as conn:
            artifact_id = self._artifact_id(conn, name)
            conn.execute(select(artifacts.c.id).where(artifacts.c.id == artifact_id).with_for_update())
            targets = self._alias_targets(conn, artifact_id)
            use(targets, targets)

    def _alias_targets(self, conn: Connection, artifact_id: int) -> dict[str, AliasTarget]:
        rows = conn.execute(select(aliases.c.alias, versions.c.version, versions.c.digest)
                            .join(versions, versions.c.id == aliases.c.version_id)
                            .where(aliases.c.artifact_id == artifact_id))
        return {r.alias: {"version": int(r.version), "digest": r.digest} for r in rows}

    def _journal_aliases(self, conn: Connection, artifact_id: int, before: dict[str, AliasTarget],
                         journal: AliasJournal | None) -> None:
        """Persist a changed alias state through ``journal``, last thing before the commit."""
        if journal is None:
            return
        after = self._alias_targets(conn, artifact_id)
        if after != before:
            journal(after, before)

    def resolve_refs(self, refs: Sequence[tuple[str, str]]) -> None:
        """Raise ``ArtifactNotFoundError`` unless every ``(name, selector)`` exists."""
        with self._read() as conn:
            self._resolve_ids(conn, refs)

    def record_consumption(self, run: RunInfo, refs: Sequence[tuple[str, str]]) -> None:
        with self._write() as conn:
            self._record_run_inputs(conn, self._ensure_run(conn, run), self._resolve_ids(conn, refs))

    # -- reads ------------------------------------------------------------------------------
    def get(self, name: str, selector: str, partition: str | None = None) -> VersionRecord:
        if self.dialect == "sqlite":
            return self._sqlite_get(name, selector, partition)
        with self._read() as conn:
            artifact_id = self._artifact_id(conn, name)
            row = self._version_row(conn, artifact_id, name, selector, partition)
            return self._hydrate(conn, [row], {artifact_id: name})[0]

    def get_by_ids(self, version_ids: Sequence[int]) -> list[VersionRecord]:
        if self.dialect == "sqlite":
            with self._sqlite_read() as cur:
                cur.row_factory = _row
                found = cur.execute(f"{_SQLITE_VERSIONS} WHERE v.id IN ({_marks(version_ids)})",
                                    list(version_ids)).fetchall()
                cur.row_factory = None
                by_id = {r.id: r for r in _sqlite_hydrate(cur, found)}
                return [by_id[i] for i in version_ids if i in by_id]
        with self._read() as conn:
            rows = conn.execute(select(versions).where(versions.c.id.in_(list(version_ids)))).all()
            names = self._names_for(conn, (r.artifact_id for r in rows))
            by_id = {r.id: r for r in self._hydrate(conn, rows, names)}
            return [by_id[i] for i in version_ids if i in by_id]

    def versions(self, name: str, partition: str | None = None, tag: str | None = None) -> list[VersionRecord]:
        with self._read() as conn:
            artifact_id = self._artifact_id(conn, name)
            query = select(versions).where(versions.c.artifact_id == artifact_id)
            if partition is not None:
                query = query.where(versions.c.partition_key == partition)
            if tag is not None:
                query = query.where(versions.c.id.in_(_tagged_ids(tag)))
            rows = conn.execute(query.order_by(versions.c.version)).all()
            return self._hydrate(conn, rows, {artifact_id: name})

    def latest(self, name: str | None = None, type_: str | None = None) -> list[VersionRecord]:
        """The newest version of every name (optionally one name, or names under a prefix)."""
        with self._read() as conn:
            newest = (select(versions.c.artifact_id, func.max(versions.c.version).label("v"))
                      .group_by(versions.c.artifact_id).subquery())
            query = (select(versions).join(newest, and_(newest.c.artifact_id == versions.c.artifact_id,
                                                        newest.c.v == versions.c.version))
                     .join(artifacts, artifacts.c.id == versions.c.artifact_id)
                     .order_by(artifacts.c.name))
            if name is not None:
                # an exact, case-sensitive prefix: no LIKE wildcards (``_``, ``%``), no SQLite
                # case folding
                prefix = name + "/"
                query = query.where(or_(artifacts.c.name == name,
                                        func.substr(artifacts.c.name, 1, len(prefix)) == prefix))
            if type_ is not None:
                query = query.where(versions.c.type == type_)
            rows = conn.execute(query).all()
            return self._hydrate(conn, rows, self._names_for(conn, (r.artifact_id for r in rows)))

    # -- version tags (migration 6) -----------------------------------------------------------
    def add_tags(self, version_id: int, tags: Sequence[str]) -> None:
        """Label a version with ``tags`` (those it has already are kept once)."""
        with self._write() as conn:
            for tag in dict.fromkeys(tags):
                self._insert_ignore(conn, version_tags, {"version_id": version_id, "tag": tag},
                                    ["version_id", "tag"])

    def tags_of(self, version_id: int) -> list[str]:
        with self._read() as conn:
            return list(conn.execute(select(version_tags.c.tag).where(version_tags.c.version_id == version_id)
                                     .order_by(version_tags.c.tag)).scalars())

    def latest_with_tag(self, tag: str, name: str | None = None, type_: str | None = None) -> list[VersionRecord]:
        """The newest version carrying ``tag`` of every name (or of ``name`` and those under it)."""
        with self._read() as conn:
            query = (select(versions).join(version_tags, version_tags.c.version_id == versions.c.id)
                     .join(artifacts, artifacts.c.id == versions.c.artifact_id)
                     .where(version_tags.c.tag == tag)
                     .order_by(artifacts.c.name, versions.c.version.desc()))
            if name is not None:
                query = query.where(or_(artifacts.c.name == name, artifacts.c.name.startswith(name + "/")))
            if type_ is not None:
                query = query.where(versions.c.type == type_)
            newest: dict[int, Any] = {}
            for row in conn.execute(query):  # tagged versions, newest first within each name
                newest.setdefault(row.artifact_id, row)
            rows = list(newest.values())
            return self._hydrate(conn, rows, self._names_for(conn, newest))

    def names(self) -> list[str]:
        with self._read() as conn:
            return list(conn.execute(select(artifacts.c.name).order_by(artifacts.c.name)).scalars())

    def all_version_ids(self) -> list[int]:
        with self._read() as conn:
            return list(conn.execute(select(versions.c.id).order_by(versions.c.id)).scalars())

    def upstream_ids(self, version_id: int) -> list[int]:
        if self.dialect == "sqlite":
            with self._sqlite_read() as cur:
                return [r[0] for r in cur.execute(
                    "SELECT input_version_id FROM version_inputs WHERE version_id = ?", (version_id,))]
        with self._read() as conn:
            return list(conn.execute(select(version_inputs.c.input_version_id)
                                     .where(version_inputs.c.version_id == version_id)).scalars())

    def downstream_ids(self, version_id: int) -> list[int]:
        if self.dialect == "sqlite":
            with self._sqlite_read() as cur:
                return [r[0] for r in cur.execute(
                    "SELECT version_id FROM version_inputs WHERE input_version_id = ?", (version_id,))]
        with self._read() as conn:
            return list(conn.execute(select(version_inputs.c.version_id)
                                     .where(version_inputs.c.input_version_id == version_id)).scalars())

    def consumers(self, version_id: int) -> list[RunInfo]:
        """Runs that read this version (whether or not they logged anything)."""
        with self._read() as conn:
            rows = conn.execute(select(runs).join(run_inputs, run_inputs.c.run_id == runs.c.id)
                                .where(run_inputs.c.version_id == version_id).order_by(runs.c.key))
            return [_run_from_row(r) for r in rows]

    def consumed_by_run(self, run: RunInfo) -> list[int]:
        with self._read() as conn:
            return list(conn.execute(select(run_inputs.c.version_id)
                                     .join(runs, runs.c.id == run_inputs.c.run_id)
                                     .where(runs.c.key == run.key)).scalars())

    def referenced_digests(self, among: Sequence[str] | None = None) -> set[str]:
        """Every blob digest a committed version or an open draft needs (of ``among`` only,
        when given)."""
        with self._read() as conn:
            committed = select(entries.c.digest).where(entries.c.digest.is_not(None)).distinct()
            drafted = select(draft_entries.c.digest).where(draft_entries.c.digest.is_not(None)).distinct()
            if among is not None:
                committed = committed.where(entries.c.digest.in_(list(among)))
                drafted = drafted.where(draft_entries.c.digest.in_(list(among)))
            return set(conn.execute(committed).scalars()) | set(conn.execute(drafted).scalars())

    def collect_blobs(self, digests: Sequence[str], delete_blob: Callable[[str], None]) -> list[str]:
        """Delete (with ``delete_blob``) those of ``digests`` that no version or draft needs,
        under the lock every commit and upsert shares, so none can record a blob being
        deleted; the digests deleted."""
        deleted: list[str] = []
        for start in range(0, len(digests), _COLLECT_BATCH):
            batch = digests[start:start + _COLLECT_BATCH]
            with self._write() as conn:
                if self.dialect == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_BLOB_LOCK})")
                needed = set(conn.execute(select(entries.c.digest).where(entries.c.digest.in_(batch))).scalars())
                needed |= set(conn.execute(select(draft_entries.c.digest)
                                           .where(draft_entries.c.digest.in_(batch))).scalars())
                for digest in batch:
                    if digest not in needed:
                        delete_blob(digest)
                        deleted.append(digest)
        return deleted

    def _share_blob_lock(self, conn: Connection) -> None:
        """Commits and upserts share this lock; ``collect_blobs`` takes it alone (on SQLite
        every write transaction already excludes every other)."""
        if self.dialect == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock_shared({_PG_BLOB_LOCK})")

    def manifest_keys(self) -> dict[tuple[str, int], str]:
        """``(name, version)`` of every committed version, and its manifest's digest."""
        with self._read() as conn:
            rows = conn.execute(select(artifacts.c.name, versions.c.version, versions.c.manifest_digest)
                                .join(artifacts, artifacts.c.id == versions.c.artifact_id))
            return {(r.name, r.version): r.manifest_digest for r in rows}

    # -- drafts (upsert / finish) -------------------------------------------------------------
    def draft_add(self, *, name: str, group: str, type_: str, description: str | None,
                  metadata_: dict[str, Any], entry_rows: list[dict[str, Any]],
                  check_blobs: Callable[[], None] | None = None) -> DraftRecord:
        with self._write() as conn:
            self._share_blob_lock(conn)
            if check_blobs is not None:
                check_blobs()
            draft = None
            while draft is None:  # a concurrent finish may seal (delete) it before we lock it
                self._insert_ignore(conn, drafts, {
                    "name": name, "group_key": group, "type": type_, "description": description,
                    "metadata": metadata_, "created_at": time.time()}, ["name", "group_key"])
                draft = conn.execute(select(drafts).where(drafts.c.name == name, drafts.c.group_key == group)
                                     .with_for_update()).first()
            if draft.type != type_:
                raise InvalidArtifactError(
                    f"draft {name!r} (group {group!r}) is of type {draft.type!r}, not {type_!r}")
            merged_metadata = {**_json(draft.metadata), **metadata_}
            conn.execute(update(drafts).where(drafts.c.id == draft.id).values(
                metadata=merged_metadata, description=description or draft.description))
            present = {r.path: r for r in conn.execute(
                select(draft_entries).where(draft_entries.c.draft_id == draft.id))}
            new_rows = []
            for row in entry_rows:
                old = present.get(row["path"])
                if old is None:
                    new_rows.append({**row, "draft_id": draft.id})
                elif (old.digest, old.kind) != (row["digest"], row["kind"]) or (
                        row["kind"] == "reference" and _json(old.data) != row["data"]):
                    raise InvalidArtifactError(
                        f"draft {name!r} (group {group!r}) already has different content at {row['path']!r}")
            if new_rows:
                conn.execute(insert(draft_entries), new_rows)
            return self._draft_record(conn, draft.id)

    def _draft_record(self, conn: Connection, draft_id: int) -> DraftRecord:
        d = conn.execute(select(drafts).where(drafts.c.id == draft_id)).one()
        rows = conn.execute(select(draft_entries.c.data).where(draft_entries.c.draft_id == draft_id)
                            .order_by(draft_entries.c.path))
        return DraftRecord(id=d.id, name=d.name, group=d.group_key, type=d.type,
                           description=d.description, metadata=_json(d.metadata),
                           created_at=d.created_at, entries=[_json(r.data) for r in rows])

    def draft_get(self, name: str, group: str) -> DraftRecord:
        with self._read() as conn:
            found = conn.execute(select(drafts.c.id).where(drafts.c.name == name, drafts.c.group_key == group)).scalar()
            if found is None:
                raise ArtifactNotFoundError(f"no open draft {name!r} in group {group!r}")
            return self._draft_record(conn, int(found))

    def draft_delete(self, draft_id: int) -> None:
        with self._write() as conn:
            self._delete_draft(conn, draft_id)

    @staticmethod
    def _delete_draft(conn: Connection, draft_id: int) -> None:
        conn.execute(delete(draft_entries).where(draft_entries.c.draft_id == draft_id))
        conn.execute(delete(drafts).where(drafts.c.id == draft_id))

    def _take_draft(self, conn: Connection, draft: DraftRecord) -> None:
        """Lock ``draft``, check it still holds exactly the entries read, and delete it."""
        locked = conn.execute(select(drafts.c.id).where(drafts.c.id == draft.id).with_for_update()).first()
        if locked is None:
            raise ArtifactNotFoundError(f"no open draft {draft.name!r} in group {draft.group!r} "
                                        "(another finish sealed it)")
        current = {(r.path, r.digest) for r in conn.execute(
            select(draft_entries.c.path, draft_entries.c.digest).where(draft_entries.c.draft_id == draft.id))}
        read = {(_entry_key(e), e.get("digest")) for e in draft.entries}
        if current != read:
            raise DraftChangedError(f"draft {draft.name!r} (group {draft.group!r}) changed while it was sealed")
        self._delete_draft(conn, draft.id)

    def drafts(self) -> list[DraftRecord]:
        with self._read() as conn:
            ids = conn.execute(select(drafts.c.id).order_by(drafts.c.name, drafts.c.group_key)).scalars().all()
            return [self._draft_record(conn, int(i)) for i in ids]

    # -- reindex ----------------------------------------------------------------------------
    def insert_reindexed(self, manifest: dict[str, Any], manifest_digest: str,
                         entry_rows: list[dict[str, Any]]) -> bool:
        """Insert a version read back from its manifest; False if it is already present."""
        name, number = manifest["name"], int(manifest["version"])
        with self._write() as conn:
            artifact_id = self._lock_artifact(conn, name, manifest["type"])
            present = conn.execute(select(versions.c.id).where(versions.c.artifact_id == artifact_id,
                                                               versions.c.version == number)).scalar()
            if present is not None:
                return False
            producer = RunInfo.from_dict(manifest["producer"]) if manifest.get("producer") else None
            run_id = self._ensure_run(conn, producer) if producer is not None else None
            version_id = _inserted_id(conn.execute(insert(versions).values(
                artifact_id=artifact_id, version=number, type=manifest["type"],
                digest=manifest["digest"], manifest_digest=manifest_digest,
                description=manifest.get("description"), metadata=manifest.get("metadata") or {},
                size_bytes=int(manifest.get("size_bytes") or 0), created_at=float(manifest["created_at"]),
                producer_run_id=run_id, idempotency_key=manifest.get("idempotency_key"),
                partition_key=manifest.get("partition"),
            )))
            if entry_rows:
                conn.execute(insert(entries), [{**row, "version_id": version_id} for row in entry_rows])
            return True

    def link_reindexed_inputs(self, name: str, number: int, input_refs: Sequence[str],
                              alias_map: dict[str, int]) -> None:
        """Second pass of reindex: lineage edges and aliases, once every version exists."""
        from ._names import parse_ref

        with self._write() as conn:
            artifact_id = self._artifact_id(conn, name)
            row = self._version_row(conn, artifact_id, name, format_version(number))
            for ref in input_refs:
                try:
                    input_id = self._resolve_ids(conn, [parse_ref(ref)])[0]
                except ArtifactNotFoundError:
                    continue
                self._insert_ignore(conn, version_inputs, {"version_id": row.id, "input_version_id": input_id},
                                    ["version_id", "input_version_id"])
                if row.producer_run_id is not None:
                    self._record_run_inputs(conn, row.producer_run_id, [input_id])
            for alias, target in alias_map.items():
                if target == number:
                    self._move_aliases(conn, artifact_id, row.id, [alias])


def _tagged_ids(tag: str) -> Any:
    """The ids of the versions carrying ``tag`` (a subquery)."""
    return select(version_tags.c.version_id).where(version_tags.c.tag == tag)


def entry_order(entry: dict[str, Any]) -> tuple[bool, str]:
    """Manifest order: files and objects by path, then references by name."""
    return entry["kind"] == "reference", entry.get("path") or entry["name"]


def entries_digest(entry_dicts: Iterable[dict[str, Any]]) -> str:
    """A version's digest: the hash of the content-defining parts of its entries (not their
    descriptions), in manifest order."""
    keep = ("kind", "path", "name", "digest", "size", "serializer", "uri", "checksum", "version_id")
    return hash_json([{k: e[k] for k in keep if e.get(k) is not None}
                      for e in sorted(entry_dicts, key=entry_order)])


class DraftChangedError(TraceletError):
    """An entry was added to a draft between ``finish`` reading it and sealing it."""


def _entry_key(entry: dict[str, Any]) -> str:
    """The ``path`` column of an entry: its path, or a reference's name."""
    return str(entry["path"] if entry.get("kind") != "reference" else entry["name"])


def _dispose_after_fork(engine: Engine) -> None:
    """In a forked child, forget (without closing) the connections inherited from the parent."""
    ref = weakref.ref(engine)

    def _reset() -> None:
        alive = ref()
        if alive is not None:
            alive.dispose(close=False)

    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_reset)


def _inserted_id(result: Any) -> int:
    """The primary key an ``INSERT`` produced."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _label_order(label: str) -> tuple[str, int]:
    """``name:vN`` in the order ``_hydrate`` lists inputs: by name, then version number."""
    name, _, version = label.rpartition(":")
    return name, version_number(version) or 0


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _run_from_row(row: Any) -> RunInfo:
    return RunInfo(orchestrator=row.orchestrator, run_id=row.run_id, step=row.step, name=row.name,
                   partition=row.partition, code_version=row.code_version, extra=_json(row.extra) or {})


def _no_such_version(name: str, selector: str, partition: str | None) -> ArtifactNotFoundError:
    what = "no versions" if selector == LATEST else f"no version or alias {selector!r}"
    where = f" for partition {partition!r}" if partition is not None and selector == LATEST else ""
    return ArtifactNotFoundError(f"artifact {name!r} has {what}{where}")


def _record(row: Any, names: dict[int, str], run_map: dict[int, RunInfo], input_map: dict[int, list[str]],
            alias_map: dict[int, list[str]], entry_map: dict[int, list[dict[str, Any]]]) -> VersionRecord:
    return VersionRecord(
        id=row.id, name=names[row.artifact_id], version=row.version, type=row.type,
        digest=row.digest, manifest_digest=row.manifest_digest,
        description=row.description, metadata=_json(row.metadata),
        size_bytes=row.size_bytes, created_at=row.created_at,
        producer=run_map.get(row.producer_run_id),
        inputs=input_map.get(row.id, []), aliases=alias_map.get(row.id, []),
        entries=entry_map.get(row.id, []), partition=row.partition_key,
    )


#: ``versions`` rows with their artifact's name, for the SQLite hot reads.
_SQLITE_VERSIONS = "SELECT v.*, a.name AS artifact_name FROM versions v JOIN artifacts a ON a.id = v.artifact_id"


_row_classes: dict[tuple[str, ...], Any] = {}


def _row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> Any:
    """A sqlite3 row read by column name as an attribute (like SQLAlchemy's rows)."""
    columns = tuple(d[0] for d in cursor.description)
    cls = _row_classes.get(columns)
    if cls is None:
        cls = _row_classes[columns] = namedtuple("Row", columns, rename=True)  # noqa: PYI024
    return cls._make(values)  # type: ignore[union-attr]


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def _sqlite_hydrate(cur: sqlite3.Cursor, rows: Sequence[Any]) -> list[VersionRecord]:
    """``_hydrate`` in plain SQLite SQL, for rows of ``_SQLITE_VERSIONS``: aliases, inputs and
    entries in one statement (each in ``_hydrate``'s order), runs in a second if any."""
    if not rows:
        return []
    ids = [row.id for row in rows]
    marks = _marks(ids)
    alias_map: dict[int, list[str]] = {}
    input_map: dict[int, list[str]] = {}
    entry_map: dict[int, list[dict[str, Any]]] = {}
    artifact_ids = sorted({row.artifact_id for row in rows})  # aliases are keyed by artifact
    relations = cur.execute(
        f"SELECT 0, version_id, alias, NULL FROM aliases WHERE artifact_id IN ({_marks(artifact_ids)}) "
        f"AND version_id IN ({marks}) "
        "UNION ALL SELECT 1, vi.version_id, a.name, up.version FROM version_inputs vi "
        "JOIN versions up ON up.id = vi.input_version_id JOIN artifacts a ON a.id = up.artifact_id "
        f"WHERE vi.version_id IN ({marks}) "
        f"UNION ALL SELECT 2, version_id, path, data FROM entries WHERE version_id IN ({marks}) "
        "ORDER BY 1, 3, 4", [*artifact_ids, *ids, *ids, *ids]).fetchall()
    for kind, version_id, key, value in relations:
        if kind == 0:
            alias_map.setdefault(version_id, []).append(key)
        elif kind == 1:
            input_map.setdefault(version_id, []).append(f"{key}:{format_version(value)}")
        else:
            entry_map.setdefault(version_id, []).append(_json(value))
    run_ids = sorted({row.producer_run_id for row in rows if row.producer_run_id is not None})
    run_map: dict[int, RunInfo] = {}
    if run_ids:
        cur.row_factory = _row
        run_map = {r.id: _run_from_row(r) for r in cur.execute(
            f"SELECT * FROM runs WHERE id IN ({_marks(run_ids)})", run_ids)}
    names = {row.artifact_id: row.artifact_name for row in rows}
    return [_record(row, names, run_map, input_map, alias_map, entry_map) for row in rows]


def _translate_sqlite(exc: sqlite3.Error, url: str) -> TraceletError:
    """A busy or locked database is transient (``StorageError``); anything else is not."""
    text_ = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text_ or "busy" in text_):
        return StorageError(f"catalog {url} is busy: {exc}")
    return ConfigurationError(f"catalog {url} failed: {exc.__class__.__name__}: {exc}")
