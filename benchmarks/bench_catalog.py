"""Catalog reads at scale: ``get("x:latest")``, alias resolution and one-hop lineage in a
catalog of 100,000 versions under 10,000 names (``--quick``: 2,000 under 200), against the
same indexed SQL run raw on one ``sqlite3`` connection (the floor).

The catalog is filled in bulk through the catalog's own tables (10 versions per name, each
with one entry, two inputs from the neighbouring names and an alias ``prod`` on v5), so
setting it up takes seconds rather than 100,000 logs. Each measurement is the mean of a
batch of calls on random names; the table shows that per-call time.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._peers import open_tracelet, remove
from ._runner import Case, Contender, Skip, installed, scratch

VERSIONS_PER_NAME = 10


class Populated:
    """One store whose catalog holds ``names`` x 10 versions, made on first use."""

    def __init__(self, names: int) -> None:
        self.names = names
        self.root: Path | None = None
        self.store: Any = None
        self.raw: sqlite3.Connection | None = None

    def open(self) -> None:
        if self.store is not None:
            return
        from sqlalchemy import insert

        from tracelet_core import _catalog as cat

        self.root = scratch("catalog")
        self.store = open_tracelet(self.root, "none")
        now = time.time()
        digest = "blake3:" + "ab" * 32
        artifact_rows, version_rows, entry_rows, input_rows, alias_rows = [], [], [], [], []
        for i in range(self.names):
            artifact_rows.append({"id": i + 1, "name": self.name(i), "type": "dataset", "created_at": now})
            for v in range(1, VERSIONS_PER_NAME + 1):
                vid = self.version_id(i, v)
                version_rows.append({
                    "id": vid, "artifact_id": i + 1, "version": v, "type": "dataset", "digest": digest,
                    "manifest_digest": digest, "description": None, "metadata": {}, "size_bytes": 10,
                    "created_at": now + vid, "producer_run_id": None, "idempotency_key": None,
                    "partition_key": None})
                entry_rows.append({"version_id": vid, "path": "data.json", "kind": "file", "digest": digest,
                                   "size": 10, "data": {"kind": "file", "path": "data.json", "size": 10,
                                                        "digest": digest, "description": None}})
                for upstream in (i - 1, i - 2):
                    if upstream >= 0:
                        input_rows.append({"version_id": vid, "input_version_id": self.version_id(upstream, v)})
            alias_rows.append({"artifact_id": i + 1, "alias": "prod", "version_id": self.version_id(i, 5)})
        with self.store.catalog.engine.begin() as conn:
            for table, rows in ((cat.artifacts, artifact_rows), (cat.versions, version_rows),
                                (cat.entries, entry_rows), (cat.version_inputs, input_rows),
                                (cat.aliases, alias_rows)):
                for start in range(0, len(rows), 20000):
                    conn.execute(insert(table), rows[start:start + 20000])
        self.raw = sqlite3.connect(self.root / "catalog.db")

    @staticmethod
    def name(i: int) -> str:
        return f"bench/n{i:05d}"

    @staticmethod
    def version_id(i: int, v: int) -> int:
        return i * VERSIONS_PER_NAME + v

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            assert self.raw is not None and self.root is not None
            self.raw.close()
            remove(self.root)
            self.store = None


def _per_call(calls: int, names: int, fn: Callable[[int], Any]) -> float:
    picks = [random.randrange(names) for _ in range(calls)]
    start = time.perf_counter()
    for i in picks:
        fn(i)
    return (time.perf_counter() - start) / calls


_RAW_LATEST = ("SELECT v.* FROM versions v JOIN artifacts a ON a.id = v.artifact_id "
               "WHERE a.name = ? ORDER BY v.version DESC LIMIT 1")
_RAW_ALIAS = ("SELECT v.* FROM versions v JOIN artifacts a ON a.id = v.artifact_id "
              "JOIN aliases al ON al.artifact_id = v.artifact_id AND al.version_id = v.id "
              "WHERE a.name = ? AND al.alias = ?")
_RAW_UPSTREAM = ("SELECT v.*, a.name FROM version_inputs vi JOIN versions v ON v.id = vi.input_version_id "
                 "JOIN artifacts a ON a.id = v.artifact_id WHERE vi.version_id = ?")


def cases(quick: bool) -> list[Case]:
    if not installed("tracelet_core") or not installed("sqlalchemy"):
        raise Skip("tracelet_core is not importable")
    names = 200 if quick else 10_000
    calls = 100 if quick else 2000
    db = Populated(names)
    scale = f"{names * VERSIONS_PER_NAME:,} versions, {names:,} names"

    def raw_latest(i: int) -> Any:
        assert db.raw is not None
        return db.raw.execute(_RAW_LATEST, (db.name(i),)).fetchone()

    def raw_alias(i: int) -> Any:
        assert db.raw is not None
        return db.raw.execute(_RAW_ALIAS, (db.name(i), "prod")).fetchone()

    def raw_lineage(i: int) -> Any:
        assert db.raw is not None
        row = db.raw.execute(_RAW_LATEST, (db.name(i),)).fetchone()
        return db.raw.execute(_RAW_UPSTREAM, (row[0],)).fetchall()

    def pair(key: str, title: str, target: str, tracelet_call: Callable[[int], Any],
             raw_call: Callable[[int], Any], last: bool = False) -> Case:
        return Case(
            key=key, title=f"{title}, {scale}", unit="ms", target=target, setup=db.open,
            teardown=db.close if last else None,
            contenders=[Contender("tracelet", lambda: _per_call(calls, names, tracelet_call), tracelet=True),
                        Contender("raw indexed SQL (sqlite3)", lambda: _per_call(calls, names, raw_call))])

    return [
        pair("get_latest", 'get("x:latest")', "<= 0.2 ms",
             lambda i: db.store.get(f"{db.name(i)}:latest"), raw_latest),
        pair("get_alias", 'get("x:prod") (alias)', "<= 0.2 ms",
             lambda i: db.store.get(f"{db.name(i)}:prod"), raw_alias),
        pair("lineage_one_hop", "one-hop upstream lineage", "<= 2 ms",
             lambda i: db.store.lineage(f"{db.name(i)}:latest", depth=1), raw_lineage, last=True),
    ]
