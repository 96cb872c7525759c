"""The catalog's outbox: the delivery queue and the alias-event queue.

A version's deliveries (one row per backend it is routed to) and an alias change's events (one
row per tracker holding the version concerned) are written in the same transaction as the
version or the alias change (``enqueue_deliveries``, ``enqueue_alias_events``, called by the
write path), so a crash before delivery still leaves rows for ``sync`` to retry. The delivery
module reads and settles them through ``Outbox``'s methods.

The OpenLineage export keeps its own queue (``lineage_events``): each run or dataset event is
written as it will be sent, under a key that lets a run start once and end once, and
delivered in ``id`` order (``enqueue_lineage_event``, ``lineage_queue``,
``finish_lineage_event``); ``run_versions`` says what a run step logged and read.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.engine import Connection

from .._names import format_version
from .engine import Database, Query
from .reads import version_row
from .records import AliasEventRecord, DeliveryRecord, DeliverySpec, from_json
from .schema import alias_events, artifacts, deliveries, lineage_events, run_inputs, runs, status_events, versions

_STATUS = Query(select(deliveries.c.status).where(deliveries.c.version_id == bindparam("version"),
                                                  deliveries.c.backend == bindparam("backend")))
_RESULTS = Query(select(deliveries.c.result).where(deliveries.c.backend == bindparam("backend"),
                                                   deliveries.c.run_id == bindparam("run"))
                 .order_by(deliveries.c.id.desc()))


def enqueue_deliveries(db: Database, conn: Connection, version_id: int, specs: Sequence[DeliverySpec]) -> None:
    """Record pending deliveries; a version already delivered to a backend stays so."""
    now = time.time()
    for spec in specs:
        db.insert_ignore(conn, deliveries, {
            "version_id": version_id, "backend": spec.backend, "config": spec.config,
            "run_id": spec.run_id, "run_name": spec.run_name, "status": "pending",
            "attempts": 0, "last_error": None, "result": None, "created_at": now,
            "updated_at": now}, ["version_id", "backend"])


def _holders(conn: Connection, version_id: int | None) -> dict[str, dict[str, Any]]:
    """backend -> config of the trackers a version was routed to (delivered or not yet)."""
    if version_id is None:
        return {}
    rows = conn.execute(select(deliveries.c.backend, deliveries.c.config)
                        .where(deliveries.c.version_id == version_id).order_by(deliveries.c.id))
    return {r.backend: from_json(r.config) or {} for r in rows}


def enqueue_alias_events(conn: Connection, artifact_id: int, alias: str,
                         target: int | None, previous: int | None) -> None:
    """Queue the alias change for every tracker concerned: ``remove`` from the version that
    held it for the trackers holding that one, then ``set`` on the new version for the
    trackers holding it (so trackers whose aliases are plain tags never keep two)."""
    if target is not None and target == previous:
        return  # nothing moved
    now = time.time()
    rows = [{"action": "remove", "version_id": previous, "backend": b, "config": c}
            for b, c in _holders(conn, previous).items()]
    rows += [{"action": "set", "version_id": target, "backend": b, "config": c}
             for b, c in _holders(conn, target).items()]
    if rows:
        conn.execute(insert(alias_events), [
            {**row, "artifact_id": artifact_id, "alias": alias, "status": "pending", "attempts": 0,
             "last_error": None, "created_at": now, "updated_at": now} for row in rows])


def enqueue_status_events(conn: Connection, version_ids: Sequence[int], state: str) -> None:
    """Queue ``tracelet.status=state`` for every tracker holding each of ``version_ids``."""
    now = time.time()
    rows = [{"version_id": v, "state": state, "backend": b, "config": c, "status": "pending", "attempts": 0,
             "last_error": None, "created_at": now, "updated_at": now}
            for v in version_ids for b, c in _holders(conn, v).items()]
    if rows:
        conn.execute(insert(status_events), rows)


class Outbox:
    """The outbox's reads and outcomes (mixed into ``Catalog``)."""

    _db: Database

    def finish_delivery(self, ref_name: str, version: int, backend: str, *, ok: bool,
                        result: dict[str, Any] | None, error: str | None, confirmed: bool = True) -> None:
        """Record the outcome of one delivery attempt (``ok`` but not ``confirmed``: the
        tracker has it in memory only, status ``unconfirmed``)."""
        db = self._db

        def body(conn: Connection) -> None:
            version_id = version_row(db, db.cursor(conn), ref_name, format_version(version)).id
            conn.execute(update(deliveries).where(
                deliveries.c.version_id == version_id, deliveries.c.backend == backend).values(
                status=("delivered" if confirmed else "unconfirmed") if ok else "failed",
                attempts=deliveries.c.attempts + 1,
                last_error=None if ok else error, result=result, updated_at=time.time()))
        db.write(body)

    def deliveries(self, *, statuses: Sequence[str] | None = None, backend: str | None = None,
                   version_id: int | None = None) -> list[DeliveryRecord]:
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

        def read(conn: Connection) -> list[DeliveryRecord]:
            return [DeliveryRecord(
                id=r.id, ref=f"{r.name}:{format_version(r.number)}", backend=r.backend,
                config=from_json(r.config) or {}, run_id=r.run_id, run_name=r.run_name, status=r.status,
                attempts=r.attempts, last_error=r.last_error, result=from_json(r.result),
                updated_at=r.updated_at) for r in conn.execute(query)]
        return self._db.scan(read)

    def alias_events(self, *, statuses: Sequence[str] = ("pending", "failed"),
                     name: str | None = None) -> list[AliasEventRecord]:
        """Alias events of some statuses (of one name), oldest first."""
        query = (select(alias_events, artifacts.c.name, versions.c.version.label("number"))
                 .join(artifacts, artifacts.c.id == alias_events.c.artifact_id)
                 .join(versions, versions.c.id == alias_events.c.version_id)
                 .where(alias_events.c.status.in_(list(statuses))).order_by(alias_events.c.id))
        if name is not None:
            query = query.where(artifacts.c.name == name)

        def read(conn: Connection) -> list[AliasEventRecord]:
            return [AliasEventRecord(
                id=r.id, name=r.name, alias=r.alias, action=r.action,
                ref=f"{r.name}:{format_version(r.number)}", backend=r.backend, config=from_json(r.config) or {},
                status=r.status, attempts=r.attempts, last_error=r.last_error) for r in conn.execute(query)]
        return self._db.scan(read)

    def finish_alias_event(self, event_id: int, *, ok: bool, error: str | None) -> None:
        """Record the outcome of one attempt to deliver an alias event."""
        self._db.write(lambda conn: conn.execute(update(alias_events).where(alias_events.c.id == event_id).values(
            status="delivered" if ok else "failed", attempts=alias_events.c.attempts + 1,
            last_error=None if ok else error, updated_at=time.time())))

    def delivery_status(self, version_id: int, backend: str) -> str | None:
        """The outbox status of one version's delivery to ``backend`` (None: never routed)."""
        db = self._db
        found = db.read(lambda cur: db.run(cur, _STATUS, {"version": version_id, "backend": backend}))
        return None if not found else str(found[0].status)

    def tracker_results(self, backend: str, run_id: str) -> list[dict[str, Any]]:
        """The recorded results (any status) of the deliveries to ``backend`` made for
        tracelet run ``run_id``, newest first: how a backend finds its own tracker run
        without scanning the tracker."""
        db = self._db
        rows = db.read(lambda cur: db.run(cur, _RESULTS, {"backend": backend, "run": run_id}))
        return [r for r in (from_json(row.result) for row in rows) if r]

    # -- the OpenLineage queue (migration 11) --------------------------------------------------
    def enqueue_lineage_event(self, key: str, run_id: str | None, payload: dict[str, Any]) -> bool:
        """Queue one OpenLineage event under ``key``; ``False`` (nothing queued) when an event
        with that key exists: a run starts once and ends once."""
        db = self._db
        now = time.time()

        def body(conn: Connection) -> bool:
            if conn.execute(select(lineage_events.c.id).where(lineage_events.c.key == key)).first():
                return False
            db.insert_ignore(conn, lineage_events, {
                "key": key, "run_id": run_id, "payload": payload, "status": "pending", "attempts": 0,
                "last_error": None, "created_at": now, "updated_at": now}, ["key"])
            return True
        return db.write(body)

    def lineage_queue(self, *, statuses: Sequence[str] | None = ("pending", "failed"),
                      run_ids: Sequence[str] | None = None, key: str | None = None,
                      key_prefix: str | None = None) -> list[dict[str, Any]]:
        """Queued OpenLineage events (of some statuses, runs, one key or keys under a prefix),
        oldest first: dicts with ``id``, ``key``, ``run_id``, ``payload``, ``status``,
        ``attempts``, ``last_error``."""
        query = select(lineage_events).order_by(lineage_events.c.id)
        if statuses is not None:
            query = query.where(lineage_events.c.status.in_(list(statuses)))
        if run_ids is not None:
            query = query.where(lineage_events.c.run_id.in_(list(run_ids)))
        if key is not None:
            query = query.where(lineage_events.c.key == key)
        if key_prefix is not None:
            query = query.where(lineage_events.c.key.startswith(key_prefix, autoescape=True))

        def read(conn: Connection) -> list[dict[str, Any]]:
            return [{"id": r.id, "key": r.key, "run_id": r.run_id, "payload": from_json(r.payload),
                     "status": r.status, "attempts": r.attempts, "last_error": r.last_error}
                    for r in conn.execute(query)]
        return self._db.scan(read)

    def finish_lineage_event(self, event_id: int, *, ok: bool, error: str | None) -> None:
        """Record the outcome of one attempt to send a queued OpenLineage event."""
        self._db.write(lambda conn: conn.execute(update(lineage_events).where(lineage_events.c.id == event_id).values(
            status="delivered" if ok else "failed", attempts=lineage_events.c.attempts + 1,
            last_error=None if ok else error, updated_at=time.time())))

    def run_versions(self, key: str) -> tuple[list[int], list[int]]:
        """``(logged, read)``: the live versions the run step ``key`` (a ``RunInfo.key``
        without partition) produced and read, over all of its partitions, oldest first."""
        step = or_(runs.c.key == key, runs.c.key.startswith(f"{key}[", autoescape=True))
        produced = (select(versions.c.id).join(runs, runs.c.id == versions.c.producer_run_id)
                    .where(step, versions.c.deleted_at.is_(None)).order_by(versions.c.id))
        consumed = (select(run_inputs.c.version_id).join(runs, runs.c.id == run_inputs.c.run_id)
                    .where(step).order_by(run_inputs.c.version_id))

        def read(conn: Connection) -> tuple[list[int], list[int]]:
            return ([r[0] for r in conn.execute(produced)],
                    list(dict.fromkeys(r[0] for r in conn.execute(consumed))))
        return self._db.scan(read)
