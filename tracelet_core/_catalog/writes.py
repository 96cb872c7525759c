"""The catalog's write path: commit a version, move aliases, tag, draft, reindex, collect blobs.

Version numbers are allocated inside one write transaction per commit, under a lock on the
artifact's row (``SELECT ... FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` already holds the
database's write lock), with ``UNIQUE(artifact_id, version)`` as the backstop, so concurrent
writers in many processes never lose or duplicate a version.

Each public method is one or more transaction bodies run by ``Database.write``, which re-runs a
body that lost a lock contention. A body is database work plus, for a commit, the store's
``CommitHooks``; those never repeat blindly: a manifest is written once per distinct version
number, the blob check and the alias journal are idempotent (see ``CommitHooks``), and ``gc``'s
blob deletions are remembered across attempts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from .._errors import ArtifactNotFoundError, DraftChangedError, InvalidArtifactError
from .._model import RunInfo
from .._names import format_version, parse_ref
from .engine import Database, Query
from .outbox import enqueue_alias_events, enqueue_deliveries
from .reads import _MANIFEST_KEYS as MANIFEST_KEYS  # the query manifest_keys() runs, here under the lock
from .reads import (
    LIVE,
    VERSION_ROWS,
    alias_targets,
    artifact_id,
    draft_record,
    hydrate,
    labels,
    needed_digests,
    resolve_ids,
    version_row,
)
from .records import (
    AliasJournal,
    AliasTarget,
    CommitHooks,
    DraftRecord,
    VersionRecord,
    VersionRequest,
    entry_key,
    from_json,
    label_order,
    run_from_row,
)
from .schema import (
    PG_BLOB_LOCK,
    alias_history,
    aliases,
    artifacts,
    draft_entries,
    drafts,
    entries,
    run_inputs,
    runs,
    version_inputs,
    version_tags,
    versions,
)

#: Blobs ``gc`` deletes per catalog transaction (writers wait at most one batch).
COLLECT_BATCH = 200

# -- one type per name: a version whose type differs from the name's is refused ----------------
_NEWEST_TYPE = Query(select(versions.c.type).join(artifacts, artifacts.c.id == versions.c.artifact_id)
                     .where(artifacts.c.name == bindparam("name")).order_by(versions.c.version.desc()).limit(1))


# -- what a commit would do, read without the lock (``commit_preview``) -------------------------
_NAMED_ROWS = VERSION_ROWS.where(artifacts.c.name == bindparam("name"))
_BY_KEY = Query(_NAMED_ROWS.where(versions.c.idempotency_key == bindparam("key")))
_NEWEST_LIVE = Query(_NAMED_ROWS.where(LIVE).order_by(versions.c.version.desc()).limit(1))
_NEWEST_LIVE_OF_PARTITION = Query(_NAMED_ROWS.where(LIVE, versions.c.partition_key == bindparam("partition"))
                                  .order_by(versions.c.version.desc()).limit(1))
_HIGHEST_NUMBER = Query(select(func.max(versions.c.version)).join(artifacts, artifacts.c.id == versions.c.artifact_id)
                        .where(artifacts.c.name == bindparam("name")))


def refuse_other_type(name: str, existing: str | None, type_: str) -> None:
    """Raise ``InvalidArtifactError`` naming both types when ``name``'s versions are of
    type ``existing`` and a version of ``type_`` is being added."""
    if existing is not None and existing != type_:
        raise InvalidArtifactError(
            f"artifact {name!r} holds versions of type {existing!r}; a version of type {type_!r} "
            f"cannot be added to it (log it under another name)")


class WritePath:
    """The catalog's writes (mixed into ``Catalog``)."""

    _db: Database

    # -- versions ---------------------------------------------------------------------------
    def commit_version(self, request: VersionRequest, hooks: CommitHooks) -> tuple[VersionRecord, bool]:
        """Allocate the next version of ``request.name`` and insert it, or return the existing
        one (the same idempotency key, or identical content to the newest version of the name,
        or of the ``partition`` when one is given); ``(record, created)``.

        Under the lock, in order: the sealed draft is checked and deleted (``DraftChangedError``
        when an entry was added since it was read: read it again), ``hooks.check_blobs`` runs
        before a new version is recorded, the manifest is written unless ``request.prepared``
        predicted the number and inputs, then rows, lineage edges, aliases and outbox rows are
        inserted and ``hooks.journal`` receives the changed alias targets last."""
        written: dict[tuple[int, tuple[str, ...]], tuple[float, str]] = {}

        def manifest(number: int, input_labels: list[str]) -> tuple[float, str]:
            prepared = request.prepared
            if prepared is not None and (prepared.version, prepared.inputs) == (number, input_labels):
                return prepared.created_at, prepared.digest
            key = (number, tuple(input_labels))
            if key not in written:  # a retried transaction reuses what the first attempt wrote
                created_at = time.time()
                written[key] = created_at, hooks.write_manifest(number, created_at, input_labels)
            return written[key]

        return self._db.write(lambda conn: self._commit(conn, request, hooks, manifest))

    def commit_preview(self, name: str, digest: str, type_: str, input_refs: Sequence[tuple[str, str]],
                       idempotency_key: str | None, partition: str | None
                       ) -> VersionRecord | tuple[int, list[str]] | None:
        """One read, without the write lock, of what ``commit_version`` will find: the existing
        version it would return (a known idempotency key, or content identical to the newest
        live version of the name or ``partition``), else its prediction of the new version's
        number and input labels (``None`` where the inputs do not resolve: the commit says why)."""
        db = self._db

        def read(cur: Any) -> VersionRecord | tuple[int, list[str]] | None:
            if idempotency_key is not None:
                keyed = db.run(cur, _BY_KEY, {"name": name, "key": idempotency_key})
                if keyed:
                    return hydrate(db, cur, keyed)[0]
            newest = (db.run(cur, _NEWEST_LIVE, {"name": name}) if partition is None else
                      db.run(cur, _NEWEST_LIVE_OF_PARTITION, {"name": name, "partition": partition}))
            if newest and newest[0].digest == digest and newest[0].type == type_:
                return hydrate(db, cur, newest)[0]
            number = int(db.run(cur, _HIGHEST_NUMBER, {"name": name})[0][0] or 0) + 1
            try:
                return number, labels(db, cur, resolve_ids(db, cur, input_refs))
            except ArtifactNotFoundError:
                return None
        return db.read(read)

    def _commit(self, conn: Connection, request: VersionRequest, hooks: CommitHooks,
                manifest: Callable[[int, list[str]], tuple[float, str]]) -> tuple[VersionRecord, bool]:
        db, r = self._db, request
        cur = db.cursor(conn)
        self._share_blob_lock(conn)
        artifact = self._lock_artifact(conn, r.name, r.type)
        newest_type = db.run(cur, _NEWEST_TYPE, {"name": r.name})  # under the lock: no race slips through
        refuse_other_type(r.name, newest_type[0].type if newest_type else None, r.type)
        if r.sealed_draft is not None:
            self._take_draft(conn, r.sealed_draft)
        before = alias_targets(db, cur, artifact) if r.aliases else {}
        named = VERSION_ROWS.where(versions.c.artifact_id == artifact)
        existing = None
        if r.idempotency_key is not None:
            existing = conn.execute(named.where(versions.c.idempotency_key == r.idempotency_key)).first()
        latest = None
        if existing is None:
            newest = named if r.partition is None else named.where(versions.c.partition_key == r.partition)
            latest = conn.execute(newest.order_by(versions.c.version.desc()).limit(1)).first()
            live = latest  # the newest version may be deleted: compare with the newest live one
            if live is not None and live.deleted_at is not None:
                live = conn.execute(newest.where(LIVE).order_by(versions.c.version.desc()).limit(1)).first()
            if live is not None and live.digest == r.digest and live.type == r.type:
                existing = live
        input_ids = resolve_ids(db, cur, r.inputs)
        if existing is not None:
            self._move_aliases(conn, artifact, existing.id, r.aliases, history=self._log_history(conn, r))
            enqueue_deliveries(db, conn, existing.id, r.deliveries)
            if r.producer is not None and input_ids:
                self._record_run_inputs(conn, self._ensure_run_row(conn, r.producer).id, input_ids)
            if r.aliases:
                self._journal_aliases(cur, artifact, before, hooks.journal)
            return hydrate(db, cur, [existing])[0], False
        if r.partition is None and r.idempotency_key is None:
            max_version = latest.version if latest is not None else 0  # the newest is the max
        else:
            max_version = conn.execute(select(func.max(versions.c.version))
                                       .where(versions.c.artifact_id == artifact)).scalar()
        number = int(max_version or 0) + 1
        input_labels = labels(db, cur, input_ids)
        if hooks.check_blobs is not None:
            hooks.check_blobs()
        created_at, manifest_digest = manifest(number, input_labels)
        run_row = self._ensure_run_row(conn, r.producer) if r.producer is not None else None
        run_id = int(run_row.id) if run_row is not None else None
        version_id = _inserted_id(conn.execute(insert(versions).values(
            artifact_id=artifact, version=number, type=r.type, digest=r.digest,
            manifest_digest=manifest_digest, description=r.description, metadata=r.metadata,
            size_bytes=r.size_bytes, created_at=created_at, producer_run_id=run_id,
            idempotency_key=r.idempotency_key, partition_key=r.partition,
        )))
        if r.entry_rows:
            conn.execute(insert(entries), [{**row, "version_id": version_id} for row in r.entry_rows])
        if input_ids:
            conn.execute(insert(version_inputs),
                         [{"version_id": version_id, "input_version_id": i} for i in input_ids])
            if run_id is not None:
                self._record_run_inputs(conn, run_id, input_ids)
        self._move_aliases(conn, artifact, version_id, r.aliases, history=(run_id, None))
        enqueue_deliveries(db, conn, version_id, r.deliveries)
        if r.aliases:
            self._journal_aliases(cur, artifact, before, hooks.journal)
        if db.dialect != "sqlite":  # the server's collation orders entries: read them back
            return hydrate(db, cur, conn.execute(VERSION_ROWS.where(versions.c.id == version_id)).all())[0], True
        # SQLite orders text by code point, as Python does: the record is what was inserted
        return VersionRecord(
            id=version_id, name=r.name, version=number, type=r.type, digest=r.digest,
            manifest_digest=manifest_digest, description=r.description, metadata=r.metadata,
            size_bytes=r.size_bytes, created_at=created_at,
            producer=run_from_row(run_row) if run_row is not None else None,
            inputs=sorted(input_labels, key=label_order), aliases=sorted(set(r.aliases)),
            entries=json.loads(json.dumps([row["data"] for row in sorted(r.entry_rows, key=lambda e: e["path"])])),
            partition=r.partition,
        ), True

    def check_type(self, name: str, type_: str) -> None:
        """Refuse, before anything is written, a version of ``name`` whose type differs from
        its newest version's (``commit_version`` checks again under the lock)."""
        found = self._db.read(lambda cur: self._db.run(cur, _NEWEST_TYPE, {"name": name}))
        refuse_other_type(name, found[0].type if found else None, type_)

    def record_consumption(self, run: RunInfo, refs: Sequence[tuple[str, str]]) -> None:
        db = self._db

        def body(conn: Connection) -> None:
            ids = resolve_ids(db, db.cursor(conn), refs)
            self._record_run_inputs(conn, self._ensure_run_row(conn, run).id, ids)
        db.write(body)

    def add_tags(self, version_id: int, tags: Sequence[str]) -> None:
        """Label a version with ``tags`` (those it has already are kept once)."""
        def body(conn: Connection) -> None:
            for tag in dict.fromkeys(tags):
                self._db.insert_ignore(conn, version_tags, {"version_id": version_id, "tag": tag},
                                       ["version_id", "tag"])
        self._db.write(body)

    # -- aliases ----------------------------------------------------------------------------
    def set_alias(self, name: str, selector: str, alias: str, journal: AliasJournal | None = None,
                  reason: str | None = None) -> VersionRecord:
        """Point ``alias`` at the version ``selector`` names (moving it if set elsewhere; the
        move is recorded in the alias history with ``reason``); ``journal`` is called with the
        new and the previous alias targets just before the transaction commits (see
        ``CommitHooks``)."""
        db = self._db

        def body(conn: Connection) -> VersionRecord:
            cur = db.cursor(conn)
            artifact = self._lock_existing(conn, cur, name)
            before = alias_targets(db, cur, artifact)
            row = version_row(db, cur, name, selector)
            previous = _alias_version_id(conn, artifact, alias)
            self._move_aliases(conn, artifact, row.id, [alias], history=(None, reason))
            enqueue_alias_events(conn, artifact, alias, row.id, previous)
            self._journal_aliases(cur, artifact, before, journal)
            return hydrate(db, cur, [row])[0]
        return db.write(body)

    def remove_alias(self, name: str, alias: str, journal: AliasJournal | None = None,
                     reason: str | None = None) -> None:
        db = self._db

        def body(conn: Connection) -> None:
            cur = db.cursor(conn)
            artifact = self._lock_existing(conn, cur, name)
            previous = _alias_version_id(conn, artifact, alias)
            before = alias_targets(db, cur, artifact)
            result = conn.execute(delete(aliases).where(aliases.c.artifact_id == artifact, aliases.c.alias == alias))
            if result.rowcount == 0:
                raise ArtifactNotFoundError(f"artifact {name!r} has no alias {alias!r}")
            record_alias_change(conn, artifact, alias, previous, None, None, reason)
            enqueue_alias_events(conn, artifact, alias, None, previous)
            self._journal_aliases(cur, artifact, before, journal)
        db.write(body)

    def with_alias_map(self, name: str, use: AliasJournal) -> None:
        """Call ``use`` with the committed alias targets of ``name`` (twice: as the new and
        the previous state) while holding its write lock, so concurrent callers persist alias
        states in commit order."""
        db = self._db

        def body(conn: Connection) -> None:
            cur = db.cursor(conn)
            targets = alias_targets(db, cur, self._lock_existing(conn, cur, name))
            use(targets, targets)
        db.write(body)

    # -- drafts (upsert / finish) -------------------------------------------------------------
    def draft_add(self, *, name: str, group: str, type_: str, description: str | None,
                  metadata_: dict[str, Any], entry_rows: list[dict[str, Any]],
                  check_blobs: Callable[[], None] | None = None) -> DraftRecord:
        """Add entries to the open draft ``(name, group)`` (opened if new); ``check_blobs``
        runs under the lock ``gc`` deletes under (idempotent, as for ``commit_version``)."""
        return self._db.write(lambda conn: self._draft_add(conn, name, group, type_, description, metadata_,
                                                           entry_rows, check_blobs))

    def _draft_add(self, conn: Connection, name: str, group: str, type_: str, description: str | None,
                   metadata_: dict[str, Any], entry_rows: list[dict[str, Any]],
                   check_blobs: Callable[[], None] | None) -> DraftRecord:
        self._share_blob_lock(conn)
        if check_blobs is not None:
            check_blobs()
        draft = None
        while draft is None:  # a concurrent finish may seal (delete) it before we lock it
            self._db.insert_ignore(conn, drafts, {
                "name": name, "group_key": group, "type": type_, "description": description,
                "metadata": metadata_, "created_at": time.time()}, ["name", "group_key"])
            draft = conn.execute(select(drafts).where(drafts.c.name == name, drafts.c.group_key == group)
                                 .with_for_update()).first()
        if draft.type != type_:
            raise InvalidArtifactError(f"draft {name!r} (group {group!r}) is of type {draft.type!r}, not {type_!r}")
        conn.execute(update(drafts).where(drafts.c.id == draft.id).values(
            metadata={**from_json(draft.metadata), **metadata_}, description=description or draft.description))
        present = {r.path: r for r in conn.execute(select(draft_entries).where(draft_entries.c.draft_id == draft.id))}
        new_rows = []
        for row in entry_rows:
            old = present.get(row["path"])
            if old is None:
                new_rows.append({**row, "draft_id": draft.id})
            elif (old.digest, old.kind) != (row["digest"], row["kind"]) or (
                    row["kind"] == "reference" and from_json(old.data) != row["data"]):
                raise InvalidArtifactError(
                    f"draft {name!r} (group {group!r}) already has different content at {row['path']!r}")
        if new_rows:
            conn.execute(insert(draft_entries), new_rows)
        return draft_record(self._db, self._db.cursor(conn), draft.id)

    def draft_delete(self, draft_id: int) -> None:
        self._db.write(lambda conn: _delete_draft(conn, draft_id))

    def _take_draft(self, conn: Connection, draft: DraftRecord) -> None:
        """Lock ``draft``, check it still holds exactly the entries read, and delete it."""
        locked = conn.execute(select(drafts.c.id).where(drafts.c.id == draft.id).with_for_update()).first()
        if locked is None:
            raise ArtifactNotFoundError(f"no open draft {draft.name!r} in group {draft.group!r} "
                                        "(another finish sealed it)")
        current = {(r.path, r.digest) for r in conn.execute(
            select(draft_entries.c.path, draft_entries.c.digest).where(draft_entries.c.draft_id == draft.id))}
        if current != {(entry_key(e), e.get("digest")) for e in draft.entries}:
            raise DraftChangedError(f"draft {draft.name!r} (group {draft.group!r}) changed while it was sealed")
        _delete_draft(conn, draft.id)

    # -- reindex ----------------------------------------------------------------------------
    def insert_reindexed(self, manifest: dict[str, Any], manifest_digest: str,
                         entry_rows: list[dict[str, Any]], tombstone: dict[str, Any] | None = None) -> bool:
        """Insert a version read back from its manifest (deleted, when its ``tombstone`` is
        given); False if it is already present."""
        name, number = manifest["name"], int(manifest["version"])

        def body(conn: Connection) -> bool:
            artifact = self._lock_artifact(conn, name, manifest["type"])
            if conn.execute(select(versions.c.id).where(versions.c.artifact_id == artifact,
                                                        versions.c.version == number)).scalar() is not None:
                return False
            producer = RunInfo.from_dict(manifest["producer"]) if manifest.get("producer") else None
            run_id = self._ensure_run_row(conn, producer).id if producer is not None else None
            version_id = _inserted_id(conn.execute(insert(versions).values(
                artifact_id=artifact, version=number, type=manifest["type"],
                digest=manifest["digest"], manifest_digest=manifest_digest,
                description=manifest.get("description"), metadata=manifest.get("metadata") or {},
                size_bytes=int(manifest.get("size_bytes") or 0), created_at=float(manifest["created_at"]),
                producer_run_id=run_id,
                idempotency_key=manifest.get("idempotency_key") if tombstone is None else None,
                partition_key=manifest.get("partition"),
                deleted_at=float(tombstone["deleted_at"]) if tombstone is not None else None,
                deleted_reason=tombstone.get("reason") if tombstone is not None else None,
            )))
            if entry_rows:
                conn.execute(insert(entries), [{**row, "version_id": version_id} for row in entry_rows])
            return True
        return self._db.write(body)

    def link_reindexed_inputs(self, name: str, number: int, input_refs: Sequence[str],
                              alias_map: dict[str, int]) -> None:
        """Second pass of reindex: lineage edges and aliases, once every version exists."""
        db = self._db

        def body(conn: Connection) -> None:
            cur = db.cursor(conn)
            row = version_row(db, cur, name, format_version(number), include_deleted=True)
            for ref in input_refs:
                try:  # a deleted input keeps its edge: lineage keeps deleted nodes
                    input_id = version_row(db, cur, *parse_ref(ref), include_deleted=True).id
                except ArtifactNotFoundError:
                    continue
                db.insert_ignore(conn, version_inputs, {"version_id": row.id, "input_version_id": input_id},
                                 ["version_id", "input_version_id"])
                if row.producer_run_id is not None:
                    self._record_run_inputs(conn, row.producer_run_id, [input_id])
            for alias, target in alias_map.items():
                if target == number:
                    self._move_aliases(conn, row.artifact_id, row.id, [alias])
        db.write(body)

    # -- gc -----------------------------------------------------------------------------------
    def collect_blobs(self, digests: Sequence[str], delete_blob: Callable[[str], None]) -> list[str]:
        """Delete (with ``delete_blob``) those of ``digests`` that no version or draft needs,
        under the lock every commit and upsert shares, so none can record a blob being
        deleted; the digests deleted. A batch retried after contention skips what an earlier
        attempt already deleted."""
        deleted: list[str] = []
        done: set[str] = set()

        def batch_body(batch: Sequence[str]) -> Callable[[Connection], None]:
            def body(conn: Connection) -> None:
                if self._db.dialect == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_BLOB_LOCK})")
                needed = needed_digests(self._db, self._db.cursor(conn), batch)
                for digest in batch:
                    if digest not in needed and digest not in done:
                        delete_blob(digest)
                        done.add(digest)
                        deleted.append(digest)
            return body

        for start in range(0, len(digests), COLLECT_BATCH):
            self._db.write(batch_body(digests[start:start + COLLECT_BATCH]))
        return deleted

    def collect_manifests(self, collect: Callable[[dict[tuple[str, int], str]], None]) -> None:
        """Run ``collect`` with every committed ``(name, version) -> manifest digest``, read
        under the lock every commit shares (``gc`` removes stray manifests in it): no version
        can commit between that read and what ``collect`` removes, and a commit re-checks its
        pending manifest under the same lock (``CommitHooks.check_blobs``)."""
        db = self._db

        def body(conn: Connection) -> None:
            if db.dialect == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_BLOB_LOCK})")
            collect({(r.name, r.version): r.manifest_digest for r in db.run(db.cursor(conn), MANIFEST_KEYS)})
        db.write(body)

    # -- helpers ------------------------------------------------------------------------------
    def _share_blob_lock(self, conn: Connection) -> None:
        """Commits and upserts share this lock; ``collect_blobs`` takes it alone (on SQLite
        every write transaction already excludes every other)."""
        if self._db.dialect == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock_shared({PG_BLOB_LOCK})")

    def _lock_artifact(self, conn: Connection, name: str, type_: str) -> int:
        """Create the artifact row if needed and lock it for this transaction; its id (one
        statement when the name exists: the usual case)."""
        locked = select(artifacts.c.id).where(artifacts.c.name == name).with_for_update()
        found = conn.execute(locked).scalar()
        if found is not None:
            return int(found)
        self._db.insert_ignore(conn, artifacts, {"name": name, "type": type_, "created_at": time.time()}, ["name"])
        return int(conn.execute(locked).scalar_one())

    def _lock_existing(self, conn: Connection, cur: Any, name: str) -> int:
        """Lock the row of an existing artifact; its id."""
        found = artifact_id(self._db, cur, name)
        conn.execute(select(artifacts.c.id).where(artifacts.c.id == found).with_for_update())
        return found

    def _ensure_run_row(self, conn: Connection, run: RunInfo) -> Any:
        """The ``runs`` row of ``run`` (inserted if new; the first writer's fields win)."""
        return ensure_run_row(self._db, conn, run)

    def _log_history(self, conn: Connection, r: VersionRequest) -> tuple[int | None, str | None]:
        """``(run id, reason)`` for the alias history of a log that returned an existing version."""
        return (self._ensure_run_row(conn, r.producer).id if r.producer is not None and r.aliases else None), None

    def _move_aliases(self, conn: Connection, artifact: int, version_id: int, names: Sequence[str],
                      history: tuple[int | None, str | None] | None = None) -> None:
        """Point each alias of ``names`` at ``version_id``; with ``history`` (``(run id,
        reason)``) each actual move is recorded in the alias history (reindex restores without)."""
        for alias in names:
            if history is not None:
                record_alias_change(conn, artifact, alias, _alias_version_id(conn, artifact, alias), version_id,
                                    *history)
            conn.execute(delete(aliases).where(aliases.c.artifact_id == artifact, aliases.c.alias == alias))
            conn.execute(insert(aliases).values(artifact_id=artifact, alias=alias, version_id=version_id))

    def _record_run_inputs(self, conn: Connection, run_id: int, version_ids: Iterable[int]) -> None:
        now = time.time()
        for version_id in version_ids:
            self._db.insert_ignore(conn, run_inputs, {"run_id": run_id, "version_id": version_id,
                                                      "created_at": now}, ["run_id", "version_id"])

    def _journal_aliases(self, cur: Any, artifact: int, before: dict[str, AliasTarget],
                         journal: AliasJournal | None) -> None:
        """Persist a changed alias state through ``journal``, last thing before the commit."""
        if journal is None:
            return
        after = alias_targets(self._db, cur, artifact)
        if after != before:
            journal(after, before)


def ensure_run_row(db: Database, conn: Connection, run: RunInfo) -> Any:
    """The ``runs`` row of ``run`` (inserted if new; the first writer's fields win)."""
    found = conn.execute(select(runs).where(runs.c.key == run.key)).first()
    if found is not None:
        return found
    db.insert_ignore(conn, runs, {
        "key": run.key, "orchestrator": run.orchestrator, "run_id": run.run_id,
        "step": run.step, "name": run.name, "partition": run.partition,
        "code_version": run.code_version, "extra": dict(run.extra), "created_at": time.time(),
    }, ["key"])
    return conn.execute(select(runs).where(runs.c.key == run.key)).one()


def record_alias_change(conn: Connection, artifact: int, alias: str, before: int | None, after: int | None,
                        run_id: int | None, reason: str | None) -> None:
    """Append one alias change to the alias history (nothing when the alias did not move)."""
    if before != after:
        conn.execute(insert(alias_history).values(artifact_id=artifact, alias=alias, before_version_id=before,
                                                  after_version_id=after, at=time.time(), run_id=run_id,
                                                  reason=reason))


def _alias_version_id(conn: Connection, artifact: int, alias: str) -> int | None:
    found = conn.execute(select(aliases.c.version_id).where(aliases.c.artifact_id == artifact,
                                                            aliases.c.alias == alias)).scalar()
    return None if found is None else int(found)


def _delete_draft(conn: Connection, draft_id: int) -> None:
    conn.execute(delete(draft_entries).where(draft_entries.c.draft_id == draft_id))
    conn.execute(delete(drafts).where(drafts.c.id == draft_id))


def _inserted_id(result: Any) -> int:
    """The primary key an ``INSERT`` produced."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])
