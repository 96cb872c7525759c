"""The catalog's quarantine path: impact (one recursive query), quarantine marks, release, and
the status-event outbox that tells trackers a version was deleted, quarantined or released.

``impact`` is one ``WITH RECURSIVE`` statement, the same SQL on SQLite and PostgreSQL: the
versions built from a version at any depth (through ``version_inputs``, deleted ones walked
through but not reported), the aliases on it or on any of them, and the runs that read any
of them. A quarantine is one transaction: it locks every artifact row (as a delete does),
marks the version and, by default, what ``impact`` finds, queues a status event for every
tracker holding a marked version, and writes the store's mark file last, before the commit.
Quarantine moves no alias: an alias on a quarantined version keeps pointing at it, and a
load through the alias raises ``QuarantinedError`` (a loud failure, never a silent rollback).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, String, bindparam, cast, delete, insert, literal, null, select, union_all, update
from sqlalchemy.engine import Connection

from .._model import RunInfo
from .._names import format_version
from .engine import Database, Query
from .lifecycle import _lock_all_artifacts
from .outbox import enqueue_status_events
from .reads import LIVE, version_row
from .records import from_json, run_from_row
from .schema import aliases, artifacts, quarantines, run_inputs, runs, status_events, version_inputs, versions

#: ``hook(name, marks)``: persist all of ``name``'s quarantine marks (``[{version, digest,
#: source, reason, at}]``) beside its manifests.
MarkHook = Callable[[str, list[dict[str, Any]]], None]


@dataclass
class ImpactRows:
    """What ``impact`` found: refs of the versions built from the start (start excluded, by
    name and number), ``{"name:alias": ref}``, and the runs that read any of them."""

    versions: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    runs: list[RunInfo] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class StatusEvent:
    """One pending status event: tag ``ref``'s copy in ``backend`` ``tracelet.status=state``."""

    id: int
    ref: str
    state: str
    backend: str
    config: dict[str, Any]


def _impact_statement() -> Any:
    """``(kind, id, name, number, alias)`` rows: ``version`` for each live version downstream
    of ``:start``, ``alias`` for each alias on ``:start`` or on one of them, ``run`` (``id`` =
    the run's id) for each run that read any of them. One recursive statement."""
    down = select(version_inputs.c.version_id.label("id")).where(
        version_inputs.c.input_version_id == bindparam("start")).cte("downstream", recursive=True)
    down = down.union(select(version_inputs.c.version_id).join(down, version_inputs.c.input_version_id == down.c.id))
    reached = union_all(select(down.c.id), select(cast(bindparam("start"), Integer))).subquery("reached")
    named = versions.join(artifacts, artifacts.c.id == versions.c.artifact_id)
    text_null = cast(null(), String)
    kinds = [
        select(literal("version").label("kind"), versions.c.id.label("id"), artifacts.c.name.label("name"),
               versions.c.version.label("number"), text_null.label("alias"))
        .select_from(named.join(down, down.c.id == versions.c.id)).where(LIVE),
        select(literal("alias"), aliases.c.version_id, artifacts.c.name, versions.c.version, aliases.c.alias)
        .select_from(aliases.join(versions, versions.c.id == aliases.c.version_id)
                     .join(artifacts, artifacts.c.id == versions.c.artifact_id))
        .where(aliases.c.version_id.in_(select(reached.c.id))),
        select(literal("run"), run_inputs.c.run_id, text_null, cast(null(), Integer), text_null)
        .where(run_inputs.c.version_id.in_(select(reached.c.id))).distinct(),
    ]
    return union_all(*kinds)


_IMPACT = _impact_statement()


def impact_rows(conn: Connection, start: int) -> ImpactRows:
    """Run the impact statement for the version id ``start``."""
    found = ImpactRows()
    versions_found: list[tuple[str, int, int]] = []
    run_ids: list[int] = []
    for row in conn.execute(_IMPACT, {"start": start}):
        if row.kind == "version":
            versions_found.append((row.name, int(row.number), int(row.id)))
        elif row.kind == "alias":
            found.aliases[f"{row.name}:{row.alias}"] = f"{row.name}:{format_version(int(row.number))}"
        else:
            run_ids.append(int(row.id))
    for name, number, version_id in sorted(versions_found):
        found.versions.append(f"{name}:{format_version(number)}")
        found.ids.append(version_id)
    found.aliases = dict(sorted(found.aliases.items()))
    if run_ids:
        rows = conn.execute(select(runs).where(runs.c.id.in_(sorted(set(run_ids)))).order_by(runs.c.key))
        found.runs = [run_from_row(r) for r in rows]
    return found


def _marks_select() -> Any:
    """Quarantine marks with their version's name, number and digest and their source's ref."""
    source = versions.alias("source")
    source_name = artifacts.alias("source_name")
    return (select(artifacts.c.name, versions.c.version, versions.c.digest,
                   source_name.c.name.label("source_artifact"), source.c.version.label("source_number"),
                   quarantines.c.reason, quarantines.c.at)
            .select_from(quarantines.join(versions, versions.c.id == quarantines.c.version_id)
                         .join(artifacts, artifacts.c.id == versions.c.artifact_id)
                         .join(source, source.c.id == quarantines.c.source_version_id)
                         .join(source_name, source_name.c.id == source.c.artifact_id))
            .order_by(artifacts.c.name, versions.c.version, quarantines.c.at))


_MARKS = _marks_select()
_MARKS_OF = Query(_MARKS.where(artifacts.c.name == bindparam("name")))


def _mark(r: Any) -> dict[str, Any]:
    return {"version": int(r.version), "digest": r.digest, "reason": r.reason, "at": float(r.at),
            "source": f"{r.source_artifact}:{format_version(int(r.source_number))}"}


def _marks_by_name(conn: Connection, names: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Every quarantine mark of each of ``names`` (``[]`` for a name with none)."""
    by_name: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in conn.execute(_MARKS.where(artifacts.c.name.in_(list(names)))):
        by_name[r.name].append(_mark(r))
    return by_name


def _write_marks(conn: Connection, version_ids: Sequence[int], hook: MarkHook) -> None:
    """Hand ``hook`` the whole mark list of each name owning one of ``version_ids``."""
    if not version_ids:
        return
    names = sorted({r.name for r in conn.execute(select(artifacts.c.name).join(
        versions, versions.c.artifact_id == artifacts.c.id).where(versions.c.id.in_(list(version_ids))))})
    for name, marks in _marks_by_name(conn, names).items():
        hook(name, marks)


class QuarantinePath:
    """Impact, quarantine, release and the status-event outbox (mixed into ``Catalog``)."""

    _db: Database

    def impact(self, name: str, selector: str) -> tuple[str, ImpactRows]:
        """``(ref, what impact found)`` for the version ``selector`` names."""
        db = self._db

        def read(conn: Connection) -> tuple[str, ImpactRows]:
            row = version_row(db, db.cursor(conn), name, selector)
            return f"{name}:{format_version(int(row.version))}", impact_rows(conn, int(row.id))
        return db.scan(read)

    def quarantine(self, name: str, selector: str, reason: str, *, downstream: bool,
                   marks: MarkHook) -> tuple[str, ImpactRows]:
        """Mark the version and (with ``downstream``) every live version built from it
        quarantined, in one transaction; ``(ref, impact)``. A version already marked from the
        same source keeps its first mark."""
        db = self._db

        def body(conn: Connection) -> tuple[str, ImpactRows]:
            _lock_all_artifacts(conn, db.dialect)
            row = version_row(db, db.cursor(conn), name, selector)
            found = impact_rows(conn, int(row.id))
            targets = [int(row.id), *(found.ids if downstream else [])]
            already = {r.version_id for r in conn.execute(select(quarantines.c.version_id).where(
                quarantines.c.source_version_id == row.id, quarantines.c.version_id.in_(targets)))}
            fresh = [t for t in targets if t not in already]
            now = time.time()
            if fresh:
                conn.execute(insert(quarantines), [{"version_id": t, "source_version_id": int(row.id),
                                                    "reason": reason, "at": now} for t in fresh])
            enqueue_status_events(conn, fresh, "quarantined")
            _write_marks(conn, fresh, marks)
            return f"{name}:{format_version(int(row.version))}", found
        return db.write(body)

    def release(self, name: str, selector: str, *, marks: MarkHook) -> tuple[str, list[str]]:
        """Lift the marks of the version's quarantine (and any mark on the version itself), in
        one transaction; ``(ref, refs no longer quarantined)``."""
        db = self._db

        def body(conn: Connection) -> tuple[str, list[str]]:
            _lock_all_artifacts(conn, db.dialect)
            row = version_row(db, db.cursor(conn), name, selector, include_deleted=True)
            which = (quarantines.c.source_version_id == row.id) | (quarantines.c.version_id == row.id)
            touched = sorted({int(r.version_id) for r in conn.execute(select(quarantines.c.version_id).where(which))})
            conn.execute(delete(quarantines).where(which))
            still = {int(r.version_id) for r in conn.execute(select(quarantines.c.version_id).where(
                quarantines.c.version_id.in_(touched)))} if touched else set()
            lifted = [t for t in touched if t not in still]
            enqueue_status_events(conn, lifted, "active")
            refs = [f"{r.name}:{format_version(int(r.version))}" for r in conn.execute(
                select(artifacts.c.name, versions.c.version).join(artifacts, artifacts.c.id == versions.c.artifact_id)
                .where(versions.c.id.in_(lifted)).order_by(artifacts.c.name, versions.c.version))] if lifted else []
            _write_marks(conn, touched, marks)
            return f"{name}:{format_version(int(row.version))}", refs
        return db.write(body)

    def marks_of(self, name: str) -> list[dict[str, Any]]:
        """The committed quarantine marks of ``name``, as its mark file holds them."""
        db = self._db
        return db.read(lambda cur: [_mark(r) for r in db.run(cur, _MARKS_OF, {"name": name})])

    def quarantine_of(self, version_id: int) -> dict[str, Any] | None:
        """The first quarantine mark of a version: ``{reason, at (epoch s), source (ref)}``."""
        return self.quarantine_marks([version_id]).get(version_id)

    def quarantine_marks(self, version_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The first quarantine mark of each of ``version_ids`` that has one."""
        if not version_ids:
            return {}
        source = versions.alias("source")
        source_name = artifacts.alias("source_name")
        query = (select(quarantines.c.version_id, quarantines.c.reason, quarantines.c.at,
                        source_name.c.name, source.c.version)
                 .join(source, source.c.id == quarantines.c.source_version_id)
                 .join(source_name, source_name.c.id == source.c.artifact_id)
                 .where(quarantines.c.version_id.in_(list(version_ids)))
                 .order_by(quarantines.c.at, quarantines.c.source_version_id))

        def read(conn: Connection) -> dict[int, dict[str, Any]]:
            found: dict[int, dict[str, Any]] = {}
            for r in conn.execute(query):
                found.setdefault(int(r.version_id), {
                    "reason": r.reason, "at": float(r.at), "source": f"{r.name}:{format_version(int(r.version))}"})
            return found
        return self._db.scan(read)

    def restore_marks(self, name: str, marks: Sequence[dict[str, Any]]) -> list[str]:
        """For ``reindex``: re-create ``name``'s ``marks`` (from its mark file) whose version
        exists with the recorded digest and whose source exists; what could not be used."""
        def body(conn: Connection) -> list[str]:
            skipped: list[str] = []
            for mark in marks:
                try:
                    target = self._version_id_of(conn, name, int(mark["version"]), mark.get("digest"))
                    source_name, _, source_version = str(mark["source"]).rpartition(":")
                    source = self._version_id_of(conn, source_name, int(source_version.lstrip("v")), None)
                    if target is None or source is None:
                        skipped.append(f"quarantine mark of {name}:v{mark['version']}: its version or source "
                                       f"{mark['source']} is not in the catalog")
                        continue
                    self._db.insert_ignore(conn, quarantines, {
                        "version_id": target, "source_version_id": source, "reason": str(mark["reason"]),
                        "at": float(mark["at"])}, ["version_id", "source_version_id"])
                except (KeyError, TypeError, ValueError) as exc:
                    skipped.append(f"quarantine mark {mark!r} of {name}: {exc}")
            return skipped
        return self._db.write(body)

    @staticmethod
    def _version_id_of(conn: Connection, name: str, number: int, digest: str | None) -> int | None:
        query = (select(versions.c.id, versions.c.digest).join(artifacts, artifacts.c.id == versions.c.artifact_id)
                 .where(artifacts.c.name == name, versions.c.version == number))
        row = conn.execute(query).first()
        if row is None or (digest is not None and row.digest != digest):
            return None
        return int(row.id)

    # -- the status-event outbox ---------------------------------------------------------------
    def status_events(self, statuses: Sequence[str] = ("pending", "failed")) -> list[StatusEvent]:
        """Status events of some statuses, oldest first."""
        query = (select(status_events, artifacts.c.name, versions.c.version.label("number"))
                 .join(versions, versions.c.id == status_events.c.version_id)
                 .join(artifacts, artifacts.c.id == versions.c.artifact_id)
                 .where(status_events.c.status.in_(list(statuses))).order_by(status_events.c.id))
        return self._db.scan(lambda conn: [
            StatusEvent(id=r.id, ref=f"{r.name}:{format_version(int(r.number))}", state=r.state, backend=r.backend,
                        config=from_json(r.config) or {}) for r in conn.execute(query)])

    def finish_status_event(self, event_id: int, *, ok: bool, error: str | None) -> None:
        """Record the outcome of one attempt to deliver a status event."""
        self._db.write(lambda conn: conn.execute(update(status_events).where(status_events.c.id == event_id).values(
            status="delivered" if ok else "failed", attempts=status_events.c.attempts + 1,
            last_error=None if ok else error, updated_at=time.time())))
