"""What a version carries besides its content, kept beside the manifests for ``reindex``: its
tags and its name's alias history.

``labels_of(name)`` reads both as the file ``@labels.json`` holds them (``BlobStore.write_labels``,
rewritten after each change of either); ``restore_labels`` puts them back into a rebuilt
catalog: tags on the versions that exist with the recorded digest, and the alias history of a
name that has none (each change's versions by number, its run, its reason).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.engine import Connection

from .._model import RunInfo
from .engine import Database
from .records import from_json, run_from_row
from .schema import alias_history, artifacts, runs, version_tags, versions
from .writes import ensure_run_row

#: The labels file's format.
LABELS_FORMAT = 1

_VERSIONS = (select(versions.c.id, versions.c.version, versions.c.digest)
             .where(versions.c.artifact_id == bindparam("artifact")))
_TAGS = (select(version_tags.c.version_id, version_tags.c.tag)
         .join(versions, versions.c.id == version_tags.c.version_id)
         .where(versions.c.artifact_id == bindparam("artifact"))
         .order_by(version_tags.c.version_id, version_tags.c.tag))
_HISTORY = (select(alias_history).where(alias_history.c.artifact_id == bindparam("artifact"))
            .order_by(alias_history.c.id))


class LabelsPath:
    """Tags and alias history as the labels file holds them (mixed into ``Catalog``)."""

    _db: Database

    def labels_of(self, name: str) -> dict[str, Any]:
        """``{"format", "tags": {number: {"digest", "tags"}}, "alias_history": [{"alias",
        "before", "after" (numbers or None), "at", "run" (a ``RunInfo`` dict or None),
        "reason"}]}`` for ``name``, deleted versions included."""
        def read(conn: Connection) -> dict[str, Any]:
            artifact = conn.execute(select(artifacts.c.id).where(artifacts.c.name == name)).scalar()
            numbers = {r.id: (int(r.version), r.digest) for r in conn.execute(_VERSIONS, {"artifact": artifact})}
            tags: dict[str, dict[str, Any]] = {}
            for row in conn.execute(_TAGS, {"artifact": artifact}):
                held, digest = numbers[row.version_id]
                tags.setdefault(str(held), {"digest": digest, "tags": []})["tags"].append(row.tag)
            history = conn.execute(_HISTORY, {"artifact": artifact}).all()
            run_ids = sorted({r.run_id for r in history if r.run_id is not None})
            found_runs = {r.id: run_from_row(r).to_dict() for r in conn.execute(
                select(runs).where(runs.c.id.in_(run_ids)))} if run_ids else {}

            def number(version_id: int | None) -> int | None:
                return None if version_id is None else numbers[version_id][0]
            return {"format": LABELS_FORMAT, "tags": tags, "alias_history": [
                {"alias": r.alias, "before": number(r.before_version_id), "after": number(r.after_version_id),
                 "at": float(r.at), "run": found_runs.get(r.run_id), "reason": r.reason} for r in history]}
        return self._db.scan(read)

    def restore_labels(self, name: str, labels: Mapping[str, Any]) -> list[str]:
        """For ``reindex``: put ``name``'s recorded tags back on the versions that exist with
        the recorded digest, and its alias history back when the catalog has none for it;
        what could not be used, and why."""
        db = self._db

        def body(conn: Connection) -> list[str]:
            skipped: list[str] = []
            artifact = conn.execute(select(artifacts.c.id).where(artifacts.c.name == name)).scalar()
            if artifact is None:
                return [f"labels of {name}: no such artifact in the catalog"]
            by_number = {int(r.version): (int(r.id), r.digest) for r in conn.execute(
                select(versions.c.id, versions.c.version, versions.c.digest).where(versions.c.artifact_id == artifact))}
            for number, recorded in dict(labels.get("tags") or {}).items():
                found = by_number.get(int(number))
                if found is None or found[1] != recorded.get("digest"):
                    skipped.append(f"tags of {name}:v{number}: that version is not in the catalog")
                    continue
                for tag in recorded.get("tags") or []:
                    db.insert_ignore(conn, version_tags, {"version_id": found[0], "tag": str(tag)},
                                     ["version_id", "tag"])
            if conn.execute(select(alias_history.c.id).where(alias_history.c.artifact_id == artifact)).first():
                return skipped  # the catalog kept its own history: it is the record
            rows = []
            for change in labels.get("alias_history") or []:
                before, after = change.get("before"), change.get("after")
                ids = [by_number.get(int(n), (None,))[0] if n is not None else None for n in (before, after)]
                if any(n is not None and i is None for n, i in zip((before, after), ids, strict=True)):
                    skipped.append(f"alias history of {name}: a change of {change.get('alias')!r} names a "
                                   "version not in the catalog")
                    continue
                run = change.get("run")
                run_id = ensure_run_row(db, conn, RunInfo.from_dict(from_json(run))).id if run else None
                rows.append({"artifact_id": artifact, "alias": str(change["alias"]), "before_version_id": ids[0],
                             "after_version_id": ids[1], "at": float(change["at"]), "run_id": run_id,
                             "reason": change.get("reason")})
            if rows:
                conn.execute(insert(alias_history), rows)
            return skipped
        return db.write(body)
