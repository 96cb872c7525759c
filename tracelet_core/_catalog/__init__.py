"""The catalog: names, versions, aliases, entries, runs, lineage edges and the outbox, in SQL.

SQLAlchemy Core over SQLite (the default; a file next to a local store) or PostgreSQL. The
package is layered, each module one job:

- ``schema``: tables and numbered migrations (``MIGRATIONS``, ``migrate``);
- ``engine``: the engine, connections, retried transactions, error classification and the
  compiled statements reads run (``Database``, ``Query``, ``classify``, ``Contention``);
- ``records``: the dataclasses it is given and returns (``VersionRequest``, ``CommitHooks``,
  ``VersionRecord``, ...);
- ``reads``: the read path, one implementation for both dialects;
- ``writes``: the write path (commit a version, aliases, tags, drafts, reindex, gc's blobs);
- ``outbox``: the delivery and alias-event queues;
- ``lifecycle``: deletes (tombstones), protection, prune and retention policies;
- ``quarantine``: impact (one recursive query), quarantine marks, release, status events.

``Catalog`` is the facade the store and the delivery module use: it opens the database,
migrates it and gathers the three paths' methods.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.exc import OperationalError, ProgrammingError

from .._errors import (
    CatalogContentionError,
    CatalogError,
    DraftChangedError,
    StorageError,
)
from .engine import (
    CONTENTION_ATTEMPTS,
    CONTENTION_FIRST_DELAY_S,
    SQLITE_BUSY_TIMEOUT_S,
    Contention,
    Database,
    classify,
    has_password,
)
from .labels import LabelsPath
from .lifecycle import LifecyclePath, PrunePlan, PruneRule, TombstoneHook
from .outbox import Outbox
from .quarantine import ImpactRows, MarkHook, QuarantinePath, StatusEvent
from .reads import ReadPath
from .records import (
    AliasEventRecord,
    AliasJournal,
    AliasTarget,
    CommitHooks,
    DeliveryRecord,
    DeliverySpec,
    DraftRecord,
    PreparedManifest,
    VersionRecord,
    VersionRequest,
    entries_digest,
    entry_order,
    entry_row,
)
from .schema import (
    INITIAL_TABLES,
    MAX_VERSION_NUMBER,
    MIGRATIONS,
    SCHEMA_VERSION,
    alias_events,
    alias_history,
    aliases,
    artifacts,
    deliveries,
    draft_entries,
    drafts,
    entries,
    metadata,
    migrate,
    retention_policies,
    run_inputs,
    runs,
    schema_table,
    version_inputs,
    version_tags,
    versions,
)
from .writes import WritePath

__all__ = [
    "CONTENTION_ATTEMPTS", "CONTENTION_FIRST_DELAY_S", "INITIAL_TABLES", "MAX_VERSION_NUMBER", "MIGRATIONS",
    "SCHEMA_VERSION", "SQLITE_BUSY_TIMEOUT_S", "AliasEventRecord", "AliasJournal", "AliasTarget", "Catalog",
    "CatalogContentionError", "CatalogError", "CommitHooks", "Contention", "DeliveryRecord", "DeliverySpec",
    "DraftChangedError", "DraftRecord", "ImpactRows", "LifecyclePath", "MarkHook", "PreparedManifest",
    "PrunePlan", "PruneRule",
    "StatusEvent", "TombstoneHook", "VersionRecord", "VersionRequest", "alias_events",
    "alias_history",
    "aliases", "artifacts", "classify", "deliveries", "draft_entries", "drafts", "entries", "entries_digest",
    "entry_order", "entry_row", "metadata", "retention_policies", "run_inputs", "runs", "schema_table",
    "version_inputs",
    "version_tags", "versions",
]

#: Opening attempts when another process creates the schema at the same moment.
_MIGRATE_ATTEMPTS = 5


class Catalog(ReadPath, WritePath, Outbox, LifecyclePath, QuarantinePath, LabelsPath):
    """All SQL the store runs; one instance per process and URL, safe across threads.

    Each public method runs whole transactions; a transaction body that lost a lock
    contention is re-run (``contention`` says how often), so callers see ``StorageError`` only
    when it persists."""

    def __init__(self, url: str, *, durable: bool = True, contention: Contention | None = None) -> None:
        #: SQLite commits with ``synchronous=FULL`` (durable on return) or ``NORMAL`` (WAL:
        #: still atomic after a killed process; a power loss may lose the last commits).
        self.durable = durable
        self._db = Database(url, durable=durable, contention=contention)
        #: The URL with any password masked: what messages and reprs show.
        self.url = self._db.url
        #: Whether the URL carries a password (then it is never handed to another process).
        self.has_password = has_password(url)
        self._url = url
        self.dialect = self._db.dialect
        self.migrate()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (tests and benchmarks write rows and listen to its events)."""
        return self._db.engine

    def migrate(self) -> None:
        """Bring the schema to ``SCHEMA_VERSION``; safe when many processes start at once."""
        for attempt in range(_MIGRATE_ATTEMPTS):
            try:
                self._db.write(lambda conn: migrate(conn, self.dialect, self.url), opening=True)
                return
            except (CatalogError, StorageError) as exc:
                # a racing process created the table first (PostgreSQL without the lock yet)
                racing = isinstance(exc.__cause__, (SAIntegrityError, OperationalError, ProgrammingError))
                if attempt == _MIGRATE_ATTEMPTS - 1 or not racing or isinstance(exc, CatalogContentionError):
                    raise

    def dispose(self) -> None:
        self._db.dispose()

    @property
    def url_for_other_processes(self) -> str | None:
        """The URL another process may be told, or ``None`` when it carries a password (that
        process then reads its own ``TRACELET_CATALOG_URL``)."""
        return None if self.has_password else self._url
