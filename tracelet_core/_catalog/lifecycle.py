"""The catalog's lifecycle path: delete versions (tombstones), protection, prune and retention.

A deleted version keeps its row, entries and lineage edges; ``deleted_at`` and
``deleted_reason`` are set and its idempotency key is cleared (a retry logs anew). Every read
in ``reads`` hides it. A version is *protected* when an alias points at it or when it is
upstream, at any depth, of a version an alias points at (one recursive query over
``version_inputs``). A delete and a prune are one transaction each; both lock every artifact
row first (in id order; SQLite's write lock already excludes every other writer), so no
commit, alias move or other delete interleaves with the protection they computed. The
store's tombstone file is written through ``TombstoneHook`` last, just before the commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, delete, null, select, union_all, update
from sqlalchemy.engine import Connection

from .._errors import ArtifactNotFoundError, ProtectedVersionError
from .._model import RunInfo
from .._names import format_version
from .engine import Database, Query
from .outbox import enqueue_alias_events, enqueue_status_events
from .reads import LIVE, VERSION_ROWS, alias_targets, artifact_id, hydrate, labels, version_row
from .records import AliasJournal, VersionRecord, run_from_row
from .schema import (
    alias_history,
    aliases,
    artifacts,
    draft_entries,
    entries,
    retention_policies,
    runs,
    version_inputs,
    versions,
)
from .writes import record_alias_change

#: ``hook(name, tombstones)``: persist these deletions of ``name`` beside its manifests.
TombstoneHook = Callable[[str, list[dict[str, Any]]], None]
#: ``rule(name)``: ``(keep_last, older_than_seconds)`` for a name, or ``None`` to leave it.
PruneRule = Callable[[str], "tuple[int | None, float | None] | None"]


@dataclass
class PrunePlan:
    """What a prune deletes (version ids and refs), keeps (ref -> reason) and frees."""

    deleted: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    bytes_freed: int = 0
    ids: list[int] = field(default_factory=list)


def _protection_query() -> Any:
    """``(id, root, alias)``: every aliased version (``root`` = itself) and every version
    upstream of one at any depth (``root`` = the aliased version it feeds)."""
    start = select(aliases.c.version_id.label("id"), aliases.c.version_id.label("root"),
                   aliases.c.alias.label("alias"))
    up = start.cte("protected", recursive=True)
    step = (select(version_inputs.c.input_version_id, up.c.root, up.c.alias)
            .join(up, version_inputs.c.version_id == up.c.id))
    up = up.union(step)
    return select(up.c.id, up.c.root, up.c.alias)


_PROTECTION = Query(_protection_query())
#: Every live version, per name newest first (in the unique index's order: no sort): what a
#: prune plans over.
_LIVE_VERSIONS = Query(select(versions.c.id, versions.c.version, versions.c.created_at, artifacts.c.name)
                       .join(artifacts, artifacts.c.id == versions.c.artifact_id).where(LIVE)
                       .order_by(versions.c.artifact_id, versions.c.version.desc()))
#: ``(digest, size, version_id)`` of every live version's blob entries and ``(digest, NULL, NULL)``
#: of every draft's: the users a deleted version's blobs are checked against.
_BLOB_USERS = Query(union_all(
    select(entries.c.digest, entries.c.size, entries.c.version_id)
    .join(versions, versions.c.id == entries.c.version_id).where(LIVE, entries.c.digest.is_not(None)),
    select(draft_entries.c.digest, null(), null()).where(draft_entries.c.digest.is_not(None))))
_DELETED_OF = Query(VERSION_ROWS.where(artifacts.c.name == bindparam("name"), versions.c.deleted_at.is_not(None))
                    .order_by(versions.c.version))
_HISTORY = select(alias_history).where(alias_history.c.artifact_id == bindparam("artifact")).order_by(
    alias_history.c.id)
_ALL_HISTORY = Query(_HISTORY)
_ONE_ALIAS_HISTORY = Query(_HISTORY.where(alias_history.c.alias == bindparam("alias")))
_RUNS_OF_HISTORY = Query(select(runs).where(runs.c.id.in_(
    select(alias_history.c.run_id).where(alias_history.c.artifact_id == bindparam("artifact")))))
_POLICIES = Query(select(retention_policies).order_by(retention_policies.c.pattern))


def _tuples(db: Database, conn: Connection, query: Query) -> Any:
    """The rows of a parameterless ``query`` as plain tuples, streamed from a DBAPI cursor (no
    row objects: a prune scans every live version)."""
    compiled = query.compiled.get(db.dialect) or query.compile(db.engine)
    cursor = db.cursor(conn)
    cursor.execute(compiled.sql, [] if compiled.order is not None else {})
    return cursor


def protected_versions(db: Database, conn: Connection) -> dict[int, str]:
    """Each protected version id and why: its own alias (the first by name), else the first
    (by alias, then id) aliased version it is upstream of."""
    own: dict[int, str] = {}
    upstream: dict[int, tuple[str, int]] = {}
    for version_id, root, alias in _tuples(db, conn, _PROTECTION):
        if version_id == root:
            if version_id not in own or alias < own[version_id]:
                own[version_id] = alias
        elif version_id not in upstream or (alias, root) < upstream[version_id]:
            upstream[version_id] = (alias, root)
    roots = sorted({root for version_id, (_, root) in upstream.items() if version_id not in own})
    labels: dict[int, str] = {}
    for start in range(0, len(roots), 500):
        chunk = roots[start:start + 500]
        labels.update((r.id, f"{r.name}:{format_version(r.version)}") for r in conn.execute(
            select(versions.c.id, versions.c.version, artifacts.c.name)
            .join(artifacts, artifacts.c.id == versions.c.artifact_id).where(versions.c.id.in_(chunk))))
    reasons = {version_id: f"alias {alias!r} points at it" for version_id, alias in own.items()}
    for version_id, (alias, root) in upstream.items():
        reasons.setdefault(version_id, f"upstream of {labels[root]} (alias {alias!r})")
    return reasons


def _lock_all_artifacts(conn: Connection, dialect: str) -> None:
    """Lock every artifact row (PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already excludes all)."""
    if dialect != "sqlite":
        conn.execute(select(artifacts.c.id).order_by(artifacts.c.id).with_for_update()).all()


def _tombstone(row: Any, now: float, reason: str | None) -> dict[str, Any]:
    return {"version": int(row.version), "digest": row.digest, "deleted_at": now, "reason": reason}


def _mark_deleted(conn: Connection, version_ids: Sequence[int], now: float, reason: str | None) -> None:
    if version_ids:
        conn.execute(update(versions).where(versions.c.id.in_(list(version_ids)))
                     .values(deleted_at=now, deleted_reason=reason, idempotency_key=None))


class LifecyclePath:
    """Deletes, prunes and retention policies (mixed into ``Catalog``)."""

    _db: Database

    # -- delete -----------------------------------------------------------------------------
    def delete_version(self, name: str, selector: str, *, reason: str | None, force: bool,
                       journal: AliasJournal | None, tombstones: TombstoneHook) -> tuple[VersionRecord, list[str]]:
        """Mark the version ``selector`` names deleted, in one transaction; ``(record before the
        delete, aliases removed)``. ``ProtectedVersionError`` (nothing changed) when it is
        protected and not ``force``; with ``force`` its aliases are removed (alias events
        queued, ``journal`` called). ``tombstones`` runs last, before the commit."""
        db = self._db

        def body(conn: Connection) -> tuple[VersionRecord, list[str]]:
            cur = db.cursor(conn)
            _lock_all_artifacts(conn, db.dialect)
            row = version_row(db, cur, name, selector)
            record = hydrate(db, cur, [row])[0]
            reasons = protected_versions(db, conn)
            if row.id in reasons and not force:
                raise ProtectedVersionError(
                    f"{record.ref} is protected ({reasons[row.id]}); nothing was deleted. Remove or move "
                    "the alias first, or delete with force=True (which removes its aliases)", [reasons[row.id]])
            before = alias_targets(db, cur, row.artifact_id)
            removed = sorted(record.aliases)
            for alias in removed:
                conn.execute(delete(aliases).where(aliases.c.artifact_id == row.artifact_id,
                                                   aliases.c.alias == alias))
                record_alias_change(conn, row.artifact_id, alias, row.id, None, None,
                                    f"{record.ref} deleted" + (f": {reason}" if reason else ""))
                enqueue_alias_events(conn, row.artifact_id, alias, None, row.id)
            now = time.time()
            _mark_deleted(conn, [row.id], now, reason)
            enqueue_status_events(conn, [row.id], "deleted")
            if removed and journal is not None:
                journal(alias_targets(db, cur, row.artifact_id), before)
            tombstones(name, [_tombstone(row, now, reason)])
            return record, removed
        return db.write(body)

    # -- prune ------------------------------------------------------------------------------
    def prune(self, rule: PruneRule, *, now: float, dry_run: bool, reason: str,
              tombstones: TombstoneHook) -> PrunePlan:
        """Select, with ``rule`` per name, the live versions to delete: those beyond the newest
        ``keep_last`` and/or created before ``now - older_than`` (both, when both are given),
        never the newest version of a name nor a protected one (each kept with its reason).
        Unless ``dry_run``, delete them in the same transaction that selected them."""
        db = self._db

        def body(conn: Connection) -> PrunePlan:
            if not dry_run:
                _lock_all_artifacts(conn, db.dialect)
            plan = self._plan(conn, rule, now)
            if not dry_run and plan.ids:
                _mark_deleted(conn, plan.ids, now, reason)
                enqueue_status_events(conn, plan.ids, "deleted")
                by_name: dict[str, list[dict[str, Any]]] = {}
                for row in conn.execute(VERSION_ROWS.where(versions.c.id.in_(plan.ids))
                                        .order_by(artifacts.c.name, versions.c.version)):
                    by_name.setdefault(row.artifact_name, []).append(_tombstone(row, now, reason))
                for name, stones in by_name.items():
                    tombstones(name, stones)
            return plan
        return db.write(body)  # a dry run too: it sees what a real run would, under the same lock

    def _plan(self, conn: Connection, rule: PruneRule, now: float) -> PrunePlan:
        db = self._db
        plan = PrunePlan()
        protected: dict[int, str] | None = None
        deleted: list[tuple[str, int, int]] = []  # (name, -number, id): sorted at the end
        kept: list[tuple[str, int, str]] = []  # (name, -number, reason)
        position, current, rules = 0, None, None
        for version_id, number, created_at, name in _tuples(db, conn, _LIVE_VERSIONS):
            if name != current:
                current, position, rules = name, 0, rule(name)
            else:
                position += 1
            if rules is None:
                continue
            keep_last, older_than = rules
            if (keep_last is not None and position < keep_last) or (
                    older_than is not None and created_at >= now - older_than):
                continue
            if position == 0:
                kept.append((name, -number, f"the latest version of {name}"))
                continue
            if protected is None:
                protected = protected_versions(db, conn)
            if version_id in protected:
                kept.append((name, -number, protected[version_id]))
                continue
            deleted.append((name, -number, version_id))
        deleted.sort()
        kept.sort()
        plan.deleted = [f"{name}:{format_version(-negative)}" for name, negative, _ in deleted]
        plan.ids = [version_id for _, _, version_id in deleted]
        plan.kept = {f"{name}:{format_version(-negative)}": why for name, negative, why in kept}
        plan.bytes_freed = self._bytes_freed(conn, plan.ids)
        return plan

    def _bytes_freed(self, conn: Connection, version_ids: Sequence[int]) -> int:
        """Bytes of the blobs ``version_ids`` use that no other live version uses (drafts,
        which ``gc`` also keeps, count as users): one scan of the blob entries."""
        if not version_ids:
            return 0
        db = self._db
        chosen = set(version_ids)
        sizes: dict[str, int] = {}
        still: set[str] = set()
        for digest, size, version_id in _tuples(db, conn, _BLOB_USERS):
            if version_id in chosen:
                sizes[digest] = int(size or 0)
            else:
                still.add(digest)
        return sum(size for digest, size in sizes.items() if digest not in still)

    def alias_history(self, name: str, alias: str | None) -> list[tuple[str, str | None, str | None, float,
                                                                       RunInfo | None, str | None]]:
        """``(alias, before ref, after ref, at, run, reason)`` of every recorded change of
        ``name``'s aliases (of one ``alias``), oldest first."""
        db = self._db

        def read(cur: Any) -> list[tuple[str, str | None, str | None, float, RunInfo | None, str | None]]:
            artifact = artifact_id(db, cur, name)
            rows = (db.run(cur, _ALL_HISTORY, {"artifact": artifact}) if alias is None
                    else db.run(cur, _ONE_ALIAS_HISTORY, {"artifact": artifact, "alias": alias}))
            ids = sorted({i for r in rows for i in (r.before_version_id, r.after_version_id) if i is not None})
            refs = dict(zip(ids, labels(db, cur, ids), strict=True))
            run_ids = sorted({r.run_id for r in rows if r.run_id is not None})
            runs_by_id = {r.id: run_from_row(r) for r in db.run(cur, _RUNS_OF_HISTORY, {"artifact": artifact})
                          } if run_ids else {}
            return [(r.alias, refs.get(r.before_version_id), refs.get(r.after_version_id), float(r.at),
                     runs_by_id.get(r.run_id), r.reason) for r in rows]
        return db.read(read)

    def tombstones_of(self, name: str) -> list[dict[str, Any]]:
        """The committed deletions of ``name``, as its tombstone file holds them."""
        db = self._db
        return db.read(lambda cur: [_tombstone(r, r.deleted_at, r.deleted_reason)
                                    for r in db.run(cur, _DELETED_OF, {"name": name})])

    # -- retention policies ----------------------------------------------------------------------
    def set_retention(self, pattern: str, keep_last: int | None, older_than_s: float | None) -> None:
        def body(conn: Connection) -> None:
            conn.execute(delete(retention_policies).where(retention_policies.c.pattern == pattern))
            conn.execute(retention_policies.insert().values(pattern=pattern, keep_last=keep_last,
                                                            older_than_s=older_than_s, created_at=time.time()))
        self._db.write(body)

    def retention_policies(self) -> dict[str, tuple[int | None, float | None]]:
        """``{pattern: (keep_last, older_than_seconds)}`` of every stored policy."""
        db = self._db
        return db.read(lambda cur: {r.pattern: (r.keep_last, r.older_than_s) for r in db.run(cur, _POLICIES)})

    def remove_retention(self, pattern: str) -> None:
        def body(conn: Connection) -> None:
            if conn.execute(delete(retention_policies).where(retention_policies.c.pattern == pattern)).rowcount == 0:
                raise ArtifactNotFoundError(f"no retention policy for {pattern!r}")
        self._db.write(body)
