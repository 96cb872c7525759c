"""The catalog's database: engine, connections, retried transactions and error classification.

``Database`` owns the SQLAlchemy engine (SQLite: WAL, busy timeout, ``BEGIN IMMEDIATE`` for
writes; PostgreSQL: a pre-pinged pool). It runs a *transaction body* (pure database work) with
``write`` or ``read`` and re-runs only that body, with jittered exponential backoff, when it
lost a lock contention (``Contention`` says how often and how long).

Reads run SQLAlchemy Core statements compiled once per dialect (``Query``) on a DBAPI cursor:
on a SQLite file one connection per thread (no pool checkout, sqlite3's statement cache); on
PostgreSQL a pooled connection. SQLAlchemy's per-statement work is many times SQLite's own for
the catalog's indexed lookups, so this is what keeps ``get`` fast, with one implementation of
each read for both dialects.

Errors are classified by cause (``classify``): SQLSTATE class on PostgreSQL, the SQLite result
code on SQLite, then the driver's exception class. Transient failures are ``StorageError``
(``CatalogContentionError`` for lock contention), setup problems ``ConfigurationError``, and a
statement the database refused for any other reason ``CatalogError``.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
import weakref
from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import Table, and_, create_engine, event, func, insert, select
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool, QueuePool
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from .._errors import (
    CatalogContentionError,
    CatalogError,
    ConfigurationError,
    StorageError,
    TraceletError,
)

#: How long SQLite waits for another writer's lock before the catalog's own retries start.
SQLITE_BUSY_TIMEOUT_S = 60.0
#: Attempts (and first backoff delay) of a transaction that lost a lock contention.
CONTENTION_ATTEMPTS = 8
CONTENTION_FIRST_DELAY_S = 0.05

_T = TypeVar("_T")


@dataclass(frozen=True)
class Contention:
    """How the catalog waits out lock contention: SQLite's busy timeout per statement, then
    up to ``attempts`` runs of the transaction body with jittered exponential backoff (first
    ``first_delay_s``, at most ``max_delay_s``) slept with ``pause``."""

    busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S
    attempts: int = CONTENTION_ATTEMPTS
    first_delay_s: float = CONTENTION_FIRST_DELAY_S
    max_delay_s: float = 2.0
    pause: Callable[[float], None] = time.sleep


# -- error classification ---------------------------------------------------------------------
#: PostgreSQL SQLSTATEs (or their two-character classes) of lock contention.
_PG_CONTENTION = frozenset({"40", "55P03"})
#: Transient: connection exception, insufficient resources (too many connections, disk full),
#: operator intervention (statement timeout, server shutting down), system (I/O) error.
_PG_TRANSIENT = frozenset({"08", "53", "57", "58"})
#: Setup problems: authorization, no such database or schema, permission denied.
_PG_PERMANENT = frozenset({"28", "3D", "3F", "42501"})
#: SQLite primary result codes.
_SQLITE_CONTENTION = frozenset({5, 6})  # BUSY, LOCKED
_SQLITE_TRANSIENT = frozenset({7, 9, 10, 13, 15})  # NOMEM, INTERRUPT, IOERR, FULL, PROTOCOL
_SQLITE_PERMANENT = frozenset({3, 8, 14, 23, 26})  # PERM, READONLY, CANTOPEN, AUTH, NOTADB
_SQLITE_REFUSED = frozenset({1, 11, 19, 20, 25})  # ERROR (SQL), CORRUPT, CONSTRAINT, MISMATCH, RANGE
#: Messages, for drivers that give no code (psycopg2 while connecting, old sqlite3).
_CONTENTION_MESSAGES = ("database is locked", "database table is locked", "database is busy", "deadlock detected",
                        "could not serialize access", "lock timeout", "could not obtain lock")
_PERMANENT_MESSAGES = ("password authentication failed", "authentication failed", "no pg_hba.conf entry",
                       "permission denied", "does not exist", "unable to open database file",
                       "readonly database", "file is not a database", "could not translate host name")
_TRANSIENT_MESSAGES = ("database or disk is full", "disk i/o error", "timeout", "timed out", "too many",
                       "connection", "server closed", "terminating")


def _sqlstate(orig: BaseException) -> str | None:
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    return str(code) if code else None


def _matches(code: str, codes: frozenset[str]) -> bool:
    return code in codes or code[:2] in codes


def classify(exc: BaseException, url: str, *, opening: bool = False) -> TraceletError:
    """The tracelet error for a database error (SQLAlchemy's or the driver's own), by cause.

    While ``opening`` (the first connection and migration), a connection that cannot be made
    means the URL is wrong: ``ConfigurationError``. Later the same failure is transient."""
    orig: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    message = str(orig).lower()
    operational = isinstance(exc, (OperationalError, InterfaceError)) or any(
        c.__name__ in ("OperationalError", "InterfaceError") for c in type(orig).__mro__)
    kind: type[TraceletError]
    code = _sqlstate(orig)
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        if _matches(code, _PG_CONTENTION):
            kind = CatalogContentionError
        elif _matches(code, _PG_PERMANENT):
            kind = ConfigurationError
        elif _matches(code, _PG_TRANSIENT):
            kind = ConfigurationError if opening and code.startswith("08") else StorageError
        else:
            kind = StorageError if operational and code[:2] not in ("22", "23", "42", "XX") else CatalogError
    elif isinstance(sqlite_code, int):
        primary = sqlite_code & 0xFF
        if primary in _SQLITE_CONTENTION:
            kind = CatalogContentionError
        elif primary in _SQLITE_PERMANENT:
            kind = ConfigurationError
        elif primary in _SQLITE_REFUSED:
            kind = CatalogError
        elif primary in _SQLITE_TRANSIENT or operational:
            kind = StorageError
        else:
            kind = CatalogError
    elif any(m in message for m in _CONTENTION_MESSAGES):
        kind = CatalogContentionError
    elif any(m in message for m in _PERMANENT_MESSAGES):
        kind = ConfigurationError
    elif operational or any(m in message for m in _TRANSIENT_MESSAGES) or (
            isinstance(exc, DBAPIError) and exc.connection_invalidated):
        kind = ConfigurationError if opening else StorageError
    else:
        kind = CatalogError
    return _described(kind, exc, url, opening)



def _described(kind: type[TraceletError], exc: BaseException, url: str, opening: bool) -> TraceletError:
    if kind is CatalogContentionError:
        return kind(f"catalog {url} is busy (lock contention; rolled back): {exc}")
    if kind is ConfigurationError:
        verb = "cannot open" if opening else "cannot use"
        return kind(f"{verb} catalog {url} (check TRACELET_CATALOG_URL, the server and its permissions): {exc}")
    if kind is StorageError:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return kind(f"lost the connection to catalog {url} (the transaction was rolled back): {exc}")
        return kind(f"catalog {url} failed, transiently (the transaction was rolled back; retry later): {exc}")
    return kind(f"catalog {url} refused a statement ({exc.__class__.__name__}; rolled back): {exc}")


# -- compiled reads ---------------------------------------------------------------------------
class Query:
    """One read statement, built with SQLAlchemy Core and compiled once per dialect."""

    __slots__ = ("compiled", "statement")

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        #: dialect name -> its compiled form
        self.compiled: dict[str, Compiled] = {}

    def compile(self, engine: Engine) -> Compiled:
        compiled = cast(SQLCompiler, self.statement.compile(dialect=engine.dialect))
        found = self.compiled[engine.dialect.name] = Compiled(
            str(compiled), tuple(compiled.positiontup or ()) if compiled.positional else None,
            {k: v for k, v in compiled.params.items() if v is not None})
        return found


class Compiled:
    """A ``Query`` compiled for one dialect: the SQL text, the order of the bound names
    (positional paramstyles only), the values bound in the statement itself (``LIMIT 1``) and
    the row class of its results (made on first use)."""

    __slots__ = ("fixed", "order", "row", "sql")

    def __init__(self, sql: str, order: tuple[str, ...] | None, fixed: dict[str, Any]) -> None:
        self.sql, self.order, self.fixed = sql, order, fixed
        self.row: Any = None


def _row_class(description: Sequence[Any]) -> Any:
    """A row read by column name as an attribute, like SQLAlchemy's rows."""
    return namedtuple("Row", [d[0] for d in description], rename=True)  # noqa: PYI024


def padded(values: Sequence[Any]) -> list[Any]:
    """``values`` repeated up to the next power of two, so ``IN`` lists compile to few shapes."""
    if len(values) <= 2:
        return list(values)
    size = 1
    while size < len(values):
        size *= 2
    return [*values, *[values[-1]] * (size - len(values))] if values else []


#: The largest ``IN`` list one statement binds (longer lists are read in chunks).
MAX_IN = 512


class Database:
    """The engine of one catalog URL, its connections and its transactions; thread-safe."""

    def __init__(self, url: str, *, durable: bool = True, contention: Contention | None = None) -> None:
        #: The URL with any password masked: what messages and reprs show.
        self.url = masked(url)
        self.raw_url = url
        self.contention = contention or Contention()
        try:
            self.engine = _create_engine(url, durable, self.contention.busy_timeout_s)
            self.dbapi_error: type[Exception] = self.engine.dialect.loaded_dbapi.Error
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise ConfigurationError(f"cannot open catalog {self.url!r}: {exc}") from exc
        self.dialect = self.engine.dialect.name
        self._local = threading.local()
        self._lock = threading.Lock()
        self._thread_connections: list[tuple[int, Any]] = []
        database = self.engine.url.database
        #: SQLite files are read on one connection per thread (see the module docstring).
        self._per_thread = self.dialect == "sqlite" and bool(database) and database != ":memory:" \
            and not self.engine.url.query

    # -- transactions -----------------------------------------------------------------------
    def write(self, body: Callable[[Connection], _T], *, opening: bool = False) -> _T:
        """Run ``body`` in a write transaction (on SQLite it holds the write lock from the
        start), re-running it after lock contention; its result."""
        return self._retried(lambda: self._write_once(body, opening))

    def _write_once(self, body: Callable[[Connection], _T], opening: bool) -> _T:
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(tracelet_write=True)
                with conn.begin():
                    return body(conn)
        except TraceletError:
            raise
        except (SQLAlchemyError, self.dbapi_error) as exc:
            raise classify(exc, self.url, opening=opening) from exc

    def read(self, body: Callable[[Any], _T]) -> _T:
        """Run ``body`` with a DBAPI cursor for reads, re-running it after lock contention."""
        return self._retried(lambda: self._read_once(body))

    def _read_once(self, body: Callable[[Any], _T]) -> _T:
        try:
            if self._per_thread:
                cursor = self._thread_connection().cursor()
                try:
                    return body(cursor)
                finally:
                    cursor.close()
            with self.engine.connect() as conn, conn.begin():  # one snapshot where supported
                return body(self.cursor(conn))
        except TraceletError:
            raise
        except (SQLAlchemyError, self.dbapi_error) as exc:
            raise classify(exc, self.url) from exc

    def scan(self, body: Callable[[Connection], _T]) -> _T:
        """Run ``body`` in a read transaction on a SQLAlchemy connection (for statements built
        per call, such as the outbox's filters), re-running it after lock contention."""
        return self._retried(lambda: self._scan_once(body))

    def _scan_once(self, body: Callable[[Connection], _T]) -> _T:
        try:
            with self.engine.connect() as conn, conn.begin():
                return body(conn)
        except TraceletError:
            raise
        except (SQLAlchemyError, self.dbapi_error) as exc:
            raise classify(exc, self.url) from exc

    def _retried(self, attempt: Callable[[], _T]) -> _T:
        policy = self.contention
        delay = policy.first_delay_s
        for number in range(1, policy.attempts + 1):
            try:
                return attempt()
            except CatalogContentionError:
                if number >= policy.attempts:
                    raise
            policy.pause(delay * (0.5 + random.random()))
            delay = min(delay * 2, policy.max_delay_s)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def cursor(conn: Connection) -> Any:
        """A DBAPI cursor inside ``conn``'s transaction (for ``run``)."""
        return conn.connection.cursor()

    def run(self, cursor: Any, query: Query, params: dict[str, Any] | None = None) -> list[Any]:
        """Execute ``query`` on ``cursor``; its rows, read by column name as attributes."""
        compiled = query.compiled.get(self.dialect) or query.compile(self.engine)
        if params is None:
            params = compiled.fixed
        elif compiled.fixed:
            params = {**compiled.fixed, **params}
        order = compiled.order
        cursor.execute(compiled.sql, [params[name] for name in order] if order is not None else params)
        row = compiled.row
        if row is None:
            row = compiled.row = _row_class(cursor.description)
        make = row._make
        return [make(values) for values in cursor.fetchall()]

    def _thread_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        database = self.engine.url.database
        assert database is not None
        timeout = self.contention.busy_timeout_s
        conn = sqlite3.connect(database, timeout=timeout, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        with self._lock:
            self._thread_connections.append((os.getpid(), conn))
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    # -- helpers the write path shares --------------------------------------------------------
    def insert_ignore(self, conn: Connection, table: Table, values: dict[str, Any], keys: Sequence[str]) -> None:
        """Insert a row unless one with the same ``keys`` exists."""
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

    def dispose(self) -> None:
        self.engine.dispose()
        with self._lock:
            mine = [conn for pid, conn in self._thread_connections if pid == os.getpid()]
            self._thread_connections = []
            self._local = threading.local()
        for conn in mine:  # never a forked parent's: closing those would drop its locks
            conn.close()


def masked(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url.split("@")[-1] if "@" in url else url


def has_password(url: str) -> bool:
    try:
        return bool(make_url(url).password)
    except (ArgumentError, ValueError):
        return False


def _create_engine(url: str, durable: bool, busy_timeout_s: float) -> Engine:
    if url.startswith("sqlite"):
        in_memory = url in ("sqlite://", "sqlite:///:memory:")
        # A small pool keeps connections (and SQLite's page cache) across operations; a
        # forked child drops the parent's connections instead of sharing them.
        engine = create_engine(url, poolclass=NullPool if in_memory else QueuePool,
                               pool_size=4, max_overflow=16, connect_args={"timeout": busy_timeout_s})
        _dispose_after_fork(engine)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
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


def _dispose_after_fork(engine: Engine) -> None:
    """In a forked child, forget (without closing) the connections inherited from the parent."""
    ref = weakref.ref(engine)

    def _reset() -> None:
        alive = ref()
        if alive is not None:
            alive.dispose(close=False)

    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_reset)
