"""The catalog's read path: versions by ref, id, name, tag or prefix, lineage and drafts.

A deleted version (a tombstone: ``versions.deleted_at`` set) is hidden from every read here
(latest, listings, tags, the digests ``gc`` keeps) in the one statement of each read;
a version named by number raises ``ArtifactDeletedError`` from the row ``get`` already reads,
so the hot path runs no extra statement. Lineage reads by id still return it, marked.

One implementation of each read for SQLite and PostgreSQL: every statement is SQLAlchemy Core,
built once (per shape: ``IN`` lists are padded to a power of two), compiled once per dialect
and run on a DBAPI cursor (``Database.read``, or the write transaction's own cursor when the
write path reads under its lock). A version is two statements: its row, then its aliases,
inputs and entries in one ``UNION ALL`` (runs in a third when it has a producer). No
transaction wraps a SQLite read: a version and its entries and inputs never change once
committed; only its aliases may be a moment newer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from functools import cache
from typing import Any

from sqlalchemy import JSON, Integer, bindparam, cast, func, literal_column, null, or_, select, union_all

from .._errors import ArtifactDeletedError, ArtifactNotFoundError
from .._model import RunInfo
from .._names import LATEST, format_version, version_number
from .engine import MAX_IN, Database, Query, padded
from .records import AliasTarget, DraftRecord, VersionRecord, from_json, no_such_version, run_from_row
from .schema import (
    MAX_VERSION_NUMBER,
    aliases,
    artifacts,
    draft_entries,
    drafts,
    entries,
    run_inputs,
    runs,
    upstream_versions,
    version_inputs,
    version_tags,
    versions,
)

#: ``versions`` rows with their artifact's name (the shape ``hydrate`` reads).
VERSION_ROWS = select(versions, artifacts.c.name.label("artifact_name")).join(
    artifacts, artifacts.c.id == versions.c.artifact_id)
_BY_NAME = VERSION_ROWS.where(artifacts.c.name == bindparam("name"))
#: Versions that were not deleted.
LIVE = versions.c.deleted_at.is_(None)
_LIVE_BY_NAME = _BY_NAME.where(LIVE)
_LATEST = Query(_LIVE_BY_NAME.order_by(versions.c.version.desc()).limit(1))
_LATEST_OF_PARTITION = Query(_LIVE_BY_NAME.where(versions.c.partition_key == bindparam("partition"))
                             .order_by(versions.c.version.desc()).limit(1))
_NUMBERED = Query(_BY_NAME.where(versions.c.version == bindparam("number")))
_ALIASED = Query(_BY_NAME.join(aliases, (aliases.c.version_id == versions.c.id)
                               & (aliases.c.artifact_id == versions.c.artifact_id))
                 .where(aliases.c.alias == bindparam("alias")))
_ARTIFACT_ID = Query(select(artifacts.c.id).where(artifacts.c.name == bindparam("name")))
_MAX_NUMBER = Query(select(func.max(versions.c.version)).where(versions.c.artifact_id == bindparam("artifact")))
_KNOWN_KEY = Query(select(versions.c.id).where(versions.c.artifact_id == bindparam("artifact"),
                                               versions.c.idempotency_key == bindparam("key")))
_NEWEST_DIGEST = Query(select(versions.c.digest).where(versions.c.artifact_id == bindparam("artifact"), LIVE)
                       .order_by(versions.c.version.desc()).limit(1))
_NEWEST_DIGEST_OF_PARTITION = Query(select(versions.c.digest).where(
    versions.c.artifact_id == bindparam("artifact"), versions.c.partition_key == bindparam("partition"), LIVE)
    .order_by(versions.c.version.desc()).limit(1))
_ALIAS_TARGETS = Query(select(aliases.c.alias, versions.c.version, versions.c.digest)
                       .join(versions, versions.c.id == aliases.c.version_id)
                       .where(aliases.c.artifact_id == bindparam("artifact")))
_UPSTREAM = Query(select(version_inputs.c.input_version_id)
                  .where(version_inputs.c.version_id == bindparam("version")))
_DOWNSTREAM = Query(select(version_inputs.c.version_id)
                    .where(version_inputs.c.input_version_id == bindparam("version")))
_CONSUMERS = Query(select(runs).join(run_inputs, run_inputs.c.run_id == runs.c.id)
                   .where(run_inputs.c.version_id == bindparam("version")).order_by(runs.c.key))
_CONSUMED = Query(select(run_inputs.c.version_id).join(runs, runs.c.id == run_inputs.c.run_id)
                  .where(runs.c.key == bindparam("key")))
_NAMES = Query(select(artifacts.c.name).order_by(artifacts.c.name))
_VERSION_IDS = Query(select(versions.c.id).where(LIVE).order_by(versions.c.id))
_TAGS = Query(select(version_tags.c.tag).where(version_tags.c.version_id == bindparam("version"))
              .order_by(version_tags.c.tag))
_MANIFEST_KEYS = Query(select(artifacts.c.name, versions.c.version, versions.c.manifest_digest)
                       .join(artifacts, artifacts.c.id == versions.c.artifact_id))
_DRAFT_ID = Query(select(drafts.c.id).where(drafts.c.name == bindparam("name"),
                                            drafts.c.group_key == bindparam("group")))
_DRAFT = Query(select(drafts).where(drafts.c.id == bindparam("draft")))
_DRAFT_ENTRIES = Query(select(draft_entries.c.data).where(draft_entries.c.draft_id == bindparam("draft"))
                       .order_by(draft_entries.c.path))
_DRAFT_IDS = Query(select(drafts.c.id).order_by(drafts.c.name, drafts.c.group_key))


def _in(count: int, prefix: str) -> list[Any]:
    return [bindparam(f"{prefix}{i}") for i in range(count)]


@cache
def _bind_names(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(count))


def _bound(values: Sequence[Any], prefix: str) -> dict[str, Any]:
    return dict(zip(_bind_names(prefix, len(values)), values, strict=True))


@cache
def _relations(count: int, artifact_count: int) -> Query:
    """Aliases, inputs and entries of ``count`` versions of ``artifact_count`` artifacts, in
    one statement (kind 0, 1, 2), each in its listing order."""
    ids = _in(count, "v")
    no_number, no_data = cast(null(), Integer), cast(null(), JSON)
    alias_rows = select(literal_column("0").label("kind"), aliases.c.version_id, aliases.c.alias.label("key"),
                        no_number.label("number"), no_data.label("data")).where(
        aliases.c.artifact_id.in_(_in(artifact_count, "a")), aliases.c.version_id.in_(ids))
    input_rows = (select(literal_column("1"), version_inputs.c.version_id, artifacts.c.name,
                         upstream_versions.c.version, no_data)
                  .join(upstream_versions, upstream_versions.c.id == version_inputs.c.input_version_id)
                  .join(artifacts, artifacts.c.id == upstream_versions.c.artifact_id)
                  .where(version_inputs.c.version_id.in_(ids)))
    entry_rows = select(literal_column("2"), entries.c.version_id, entries.c.path, no_number, entries.c.data).where(
        entries.c.version_id.in_(ids))
    every = union_all(alias_rows, input_rows, entry_rows)
    return Query(every.order_by(literal_column("kind"), literal_column("key"), literal_column("number")))


@cache
def _runs(count: int) -> Query:
    return Query(select(runs).where(runs.c.id.in_(_in(count, "r"))))


@cache
def _by_ids(count: int) -> Query:
    return Query(VERSION_ROWS.where(versions.c.id.in_(_in(count, "v"))))


@cache
def _labels(count: int) -> Query:
    return Query(select(versions.c.id, versions.c.version, artifacts.c.name)
                 .join(artifacts, artifacts.c.id == versions.c.artifact_id)
                 .where(versions.c.id.in_(_in(count, "v"))))


@cache
def _listing(partition: bool, tag: bool) -> Query:
    query = _LIVE_BY_NAME
    if partition:
        query = query.where(versions.c.partition_key == bindparam("partition"))
    if tag:
        query = query.where(versions.c.id.in_(select(version_tags.c.version_id)
                                              .where(version_tags.c.tag == bindparam("tag"))))
    return Query(query.order_by(versions.c.version))


def _under(name: Any) -> Any:
    """``name`` itself or names under ``name/``: an exact, case-sensitive prefix (no LIKE
    wildcards such as ``_`` and ``%``, no SQLite case folding)."""
    prefix_length = bindparam("prefix_length", type_=Integer)
    return or_(artifacts.c.name == name,
               func.substr(artifacts.c.name, 1, prefix_length) == bindparam("prefix"))


@cache
def _newest(named: bool, typed: bool) -> Query:
    newest = (select(versions.c.artifact_id, func.max(versions.c.version).label("v")).where(LIVE)
              .group_by(versions.c.artifact_id).subquery())
    query = VERSION_ROWS.join(newest, (newest.c.artifact_id == versions.c.artifact_id)
                           & (newest.c.v == versions.c.version))
    if named:
        query = query.where(_under(bindparam("name")))
    if typed:
        query = query.where(versions.c.type == bindparam("type"))
    return Query(query.order_by(artifacts.c.name))


@cache
def _tagged(named: bool, typed: bool) -> Query:
    query = (VERSION_ROWS.join(version_tags, version_tags.c.version_id == versions.c.id)
             .where(version_tags.c.tag == bindparam("tag"), LIVE))
    if named:
        query = query.where(_under(bindparam("name")))
    if typed:
        query = query.where(versions.c.type == bindparam("type"))
    return Query(query.order_by(artifacts.c.name, versions.c.version.desc()))


#: Entries of versions that were not deleted (a deleted version's blobs are no longer needed).
_LIVE_ENTRIES = select(entries.c.digest).join(versions, versions.c.id == entries.c.version_id).where(LIVE)


@cache
def _digests(count: int, table: str) -> Query:
    if table == "entries":
        return Query(_LIVE_ENTRIES.where(entries.c.digest.in_(_in(count, "d"))).distinct())
    return Query(select(draft_entries.c.digest).where(draft_entries.c.digest.in_(_in(count, "d"))).distinct())


_ALL_DIGESTS = Query(union_all(_LIVE_ENTRIES.where(entries.c.digest.is_not(None)),
                               select(draft_entries.c.digest).where(draft_entries.c.digest.is_not(None))))
#: Blobs of deleted versions (``gc`` collects them without waiting for its grace period).
_DELETED_DIGESTS = Query(select(entries.c.digest).join(versions, versions.c.id == entries.c.version_id)
                         .where(versions.c.deleted_at.is_not(None), entries.c.digest.is_not(None)).distinct())


def _prefix(name: str) -> dict[str, Any]:
    return {"name": name, "prefix": name + "/", "prefix_length": len(name) + 1}


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), MAX_IN):
        yield values[start:start + MAX_IN]


# -- reads other layers share (they take a cursor: the write path reads under its lock) ----------
def version_row(db: Database, cur: Any, name: str, selector: str, partition: str | None = None,
                *, include_deleted: bool = False) -> Any:
    """The ``versions`` row (with ``artifact_name``) that ``selector`` names; ``latest`` of one
    ``partition`` when one is given. A deleted version raises ``ArtifactDeletedError`` unless
    ``include_deleted`` (``latest`` never names one)."""
    number = version_number(selector)
    if number is not None and number > MAX_VERSION_NUMBER:  # no column holds it: not found
        raise ArtifactNotFoundError(f"artifact {name!r} has no version {selector!r}")
    if selector == LATEST:
        found = (db.run(cur, _LATEST, {"name": name}) if partition is None
                 else db.run(cur, _LATEST_OF_PARTITION, {"name": name, "partition": partition}))
    elif number is not None:
        found = db.run(cur, _NUMBERED, {"name": name, "number": number})
    else:
        found = db.run(cur, _ALIASED, {"name": name, "alias": selector})
    if not found:
        artifact_id(db, cur, name)  # no artifact at all: say so
        raise no_such_version(name, selector, partition)
    row = found[0]
    if row.deleted_at is not None and not include_deleted:
        raise deleted_error(row)
    return row


def deleted_error(row: Any) -> ArtifactDeletedError:
    """The error for a deleted version's row: which version, when and why."""
    ref = f"{row.artifact_name}:{format_version(row.version)}"
    when = datetime.fromtimestamp(float(row.deleted_at), tz=timezone.utc).isoformat(timespec="seconds")
    why = f": {row.deleted_reason}" if row.deleted_reason else " (no reason given)"
    return ArtifactDeletedError(f"{ref} was deleted at {when}{why}", ref, float(row.deleted_at),
                                row.deleted_reason)


def artifact_id(db: Database, cur: Any, name: str) -> int:
    found = db.run(cur, _ARTIFACT_ID, {"name": name})
    if not found:
        raise ArtifactNotFoundError(f"no artifact named {name!r}")
    return int(found[0].id)


def hydrate(db: Database, cur: Any, rows: Sequence[Any]) -> list[VersionRecord]:
    """Turn ``versions`` rows (with ``artifact_name``) into records, reading their aliases,
    inputs, entries and producers in batches."""
    if len(rows) <= MAX_IN:
        return _hydrate_chunk(db, cur, rows) if rows else []
    records: list[VersionRecord] = []
    for chunk in _chunks(rows):
        records.extend(_hydrate_chunk(db, cur, chunk))
    return records


def _hydrate_chunk(db: Database, cur: Any, rows: Sequence[Any]) -> list[VersionRecord]:
    ids = padded([row.id for row in rows])
    artifact_ids = padded(sorted({row.artifact_id for row in rows}))  # the aliases key's prefix
    alias_map: dict[int, list[Any]] = {}
    input_map: dict[int, list[Any]] = {}
    entry_map: dict[int, list[Any]] = {}
    maps = (alias_map, input_map, entry_map)
    bound = _bound(ids, "v")
    bound.update(zip(_bind_names("a", len(artifact_ids)), artifact_ids, strict=True))
    for r in db.run(cur, _relations(len(ids), len(artifact_ids)), bound):
        kind = int(r.kind)
        value = r.key if kind == 0 else f"{r.key}:{format_version(r.number)}" if kind == 1 else from_json(r.data)
        maps[kind].setdefault(r.version_id, []).append(value)
    run_ids = sorted({row.producer_run_id for row in rows if row.producer_run_id is not None})
    run_map: dict[int, RunInfo] = {}
    if run_ids:
        padded_runs = padded(run_ids)
        run_map = {r.id: run_from_row(r) for r in db.run(cur, _runs(len(padded_runs)), _bound(padded_runs, "r"))}
    return [VersionRecord(
        id=row.id, name=row.artifact_name, version=row.version, type=row.type,
        digest=row.digest, manifest_digest=row.manifest_digest,
        description=row.description, metadata=from_json(row.metadata),
        size_bytes=row.size_bytes, created_at=row.created_at,
        producer=run_map.get(row.producer_run_id),
        inputs=input_map.get(row.id, []), aliases=alias_map.get(row.id, []),
        entries=entry_map.get(row.id, []), partition=row.partition_key,
        deleted_at=row.deleted_at, deleted_reason=row.deleted_reason,
    ) for row in rows]


def by_ids(db: Database, cur: Any, version_ids: Sequence[int]) -> list[Any]:
    """The rows of ``version_ids`` (any order; unknown ids left out)."""
    rows: list[Any] = []
    for chunk in _chunks(list(version_ids)):
        bound = padded(chunk)
        rows.extend(db.run(cur, _by_ids(len(bound)), _bound(bound, "v")))
    return rows


def resolve_ids(db: Database, cur: Any, refs: Iterable[tuple[str, str]]) -> list[int]:
    """The version ids of ``(name, selector)`` refs, in order, once each."""
    ids: list[int] = []
    for name, selector in refs:
        row = version_row(db, cur, name, selector)
        if row.id not in ids:
            ids.append(row.id)
    return ids


def labels(db: Database, cur: Any, version_ids: Sequence[int]) -> list[str]:
    """``name:vN`` of each of ``version_ids``, in order."""
    if not version_ids:
        return []
    by_id: dict[int, str] = {}
    for chunk in _chunks(list(version_ids)):
        bound = padded(chunk)
        by_id.update((r.id, f"{r.name}:{format_version(r.version)}")
                     for r in db.run(cur, _labels(len(bound)), _bound(bound, "v")))
    return [by_id[i] for i in version_ids]


def alias_targets(db: Database, cur: Any, artifact: int) -> dict[str, AliasTarget]:
    return {r.alias: {"version": int(r.version), "digest": r.digest}
            for r in db.run(cur, _ALIAS_TARGETS, {"artifact": artifact})}


def draft_record(db: Database, cur: Any, draft_id: int) -> DraftRecord:
    d = db.run(cur, _DRAFT, {"draft": draft_id})[0]
    return DraftRecord(id=d.id, name=d.name, group=d.group_key, type=d.type,
                       description=d.description, metadata=from_json(d.metadata), created_at=d.created_at,
                       entries=[from_json(r.data) for r in db.run(cur, _DRAFT_ENTRIES, {"draft": draft_id})])


class ReadPath:
    """The catalog's public reads (mixed into ``Catalog``)."""

    _db: Database

    def get(self, name: str, selector: str, partition: str | None = None, *,
            include_deleted: bool = False) -> VersionRecord:
        db = self._db
        return db.read(lambda cur: hydrate(db, cur, [version_row(db, cur, name, selector, partition,
                                                                 include_deleted=include_deleted)])[0])

    def get_by_ids(self, version_ids: Sequence[int]) -> list[VersionRecord]:
        """The records of ``version_ids``, in that order (unknown ids left out)."""
        db = self._db

        def read(cur: Any) -> list[VersionRecord]:
            found = {r.id: r for r in hydrate(db, cur, by_ids(db, cur, version_ids))}
            return [found[i] for i in version_ids if i in found]
        return db.read(read)

    def versions(self, name: str, partition: str | None = None, tag: str | None = None) -> list[VersionRecord]:
        db = self._db

        def read(cur: Any) -> list[VersionRecord]:
            artifact_id(db, cur, name)
            rows = db.run(cur, _listing(partition is not None, tag is not None),
                          {"name": name, "partition": partition, "tag": tag})
            return hydrate(db, cur, rows)
        return db.read(read)

    def latest(self, name: str | None = None, type_: str | None = None) -> list[VersionRecord]:
        """The newest version of every name (optionally one name, or names under a prefix)."""
        db = self._db
        params = {**(_prefix(name) if name is not None else {}), "type": type_}
        return db.read(lambda cur: hydrate(db, cur, db.run(cur, _newest(name is not None, type_ is not None),
                                                             params)))

    def latest_with_tag(self, tag: str, name: str | None = None, type_: str | None = None) -> list[VersionRecord]:
        """The newest version carrying ``tag`` of every name (or of ``name`` and those under it)."""
        db = self._db
        params = {**(_prefix(name) if name is not None else {}), "type": type_, "tag": tag}

        def read(cur: Any) -> list[VersionRecord]:
            newest: dict[int, Any] = {}
            for row in db.run(cur, _tagged(name is not None, type_ is not None), params):
                newest.setdefault(row.artifact_id, row)  # tagged versions, newest first per name
            return hydrate(db, cur, list(newest.values()))
        return db.read(read)

    def next_version(self, name: str, digest: str, input_refs: Sequence[tuple[str, str]],
                     idempotency_key: str | None, partition: str | None) -> tuple[int, list[str]] | None:
        """A prediction, read without the write lock, of the version number and input labels
        ``commit_version`` will use for new content; ``None`` where it would return an
        existing version (identical content, a known idempotency key) or the inputs do not
        resolve."""
        db = self._db

        def read(cur: Any) -> tuple[int, list[str]] | None:
            found = db.run(cur, _ARTIFACT_ID, {"name": name})
            number = 1
            if found:
                artifact = int(found[0].id)
                if idempotency_key is not None and db.run(cur, _KNOWN_KEY,
                                                          {"artifact": artifact, "key": idempotency_key}):
                    return None
                newest = (db.run(cur, _NEWEST_DIGEST, {"artifact": artifact}) if partition is None else
                          db.run(cur, _NEWEST_DIGEST_OF_PARTITION, {"artifact": artifact, "partition": partition}))
                if newest and newest[0].digest == digest:
                    return None
                number = int(db.run(cur, _MAX_NUMBER, {"artifact": artifact})[0][0] or 0) + 1
            try:
                return number, labels(db, cur, resolve_ids(db, cur, input_refs))
            except ArtifactNotFoundError:
                return None
        return db.read(read)

    def resolve_refs(self, refs: Sequence[tuple[str, str]]) -> None:
        """Raise ``ArtifactNotFoundError`` unless every ``(name, selector)`` exists."""
        db = self._db
        db.read(lambda cur: resolve_ids(db, cur, refs))

    def tags_of(self, version_id: int) -> list[str]:
        db = self._db
        return db.read(lambda cur: [r.tag for r in db.run(cur, _TAGS, {"version": version_id})])

    def names(self) -> list[str]:
        db = self._db
        return db.read(lambda cur: [r.name for r in db.run(cur, _NAMES)])

    def all_version_ids(self) -> list[int]:
        db = self._db
        return db.read(lambda cur: [r.id for r in db.run(cur, _VERSION_IDS)])

    def upstream_ids(self, version_id: int) -> list[int]:
        db = self._db
        return db.read(lambda cur: [r[0] for r in db.run(cur, _UPSTREAM, {"version": version_id})])

    def downstream_ids(self, version_id: int) -> list[int]:
        db = self._db
        return db.read(lambda cur: [r[0] for r in db.run(cur, _DOWNSTREAM, {"version": version_id})])

    def consumers(self, version_id: int) -> list[RunInfo]:
        """Runs that read this version (whether or not they logged anything)."""
        db = self._db
        return db.read(lambda cur: [run_from_row(r) for r in db.run(cur, _CONSUMERS, {"version": version_id})])

    def consumed_by_run(self, run: RunInfo) -> list[int]:
        db = self._db
        return db.read(lambda cur: [r[0] for r in db.run(cur, _CONSUMED, {"key": run.key})])

    def referenced_digests(self, among: Sequence[str] | None = None) -> set[str]:
        """Every blob digest a committed version or an open draft needs (of ``among`` only,
        when given)."""
        db = self._db

        def read(cur: Any) -> set[str]:
            if among is None:
                return {r[0] for r in db.run(cur, _ALL_DIGESTS)}
            return needed_digests(db, cur, list(among))
        return db.read(read)

    def deleted_digests(self) -> set[str]:
        """Blob digests that deleted versions used (some may still be needed by live ones)."""
        db = self._db
        return db.read(lambda cur: {r[0] for r in db.run(cur, _DELETED_DIGESTS)})

    def manifest_keys(self) -> dict[tuple[str, int], str]:
        """``(name, version)`` of every committed version, and its manifest's digest."""
        db = self._db
        return db.read(lambda cur: {(r.name, r.version): r.manifest_digest for r in db.run(cur, _MANIFEST_KEYS)})

    def draft_get(self, name: str, group: str) -> DraftRecord:
        db = self._db

        def read(cur: Any) -> DraftRecord:
            found = db.run(cur, _DRAFT_ID, {"name": name, "group": group})
            if not found:
                raise ArtifactNotFoundError(f"no open draft {name!r} in group {group!r}")
            return draft_record(db, cur, int(found[0].id))
        return db.read(read)

    def drafts(self) -> list[DraftRecord]:
        db = self._db
        return db.read(lambda cur: [draft_record(db, cur, int(r.id)) for r in db.run(cur, _DRAFT_IDS)])


def needed_digests(db: Database, cur: Any, digests: Sequence[str]) -> set[str]:
    """Those of ``digests`` that a committed version or an open draft uses."""
    needed: set[str] = set()
    for chunk in _chunks(digests):
        bound = _bound(padded(chunk), "d")
        for table in ("entries", "draft_entries"):
            needed.update(r[0] for r in db.run(cur, _digests(len(bound), table), bound))
    return needed
