"""Lifecycle at scale: ``impact`` (one recursive query) and a dry-run ``prune`` over a catalog
of 100,000 versions under 10,000 names (``--quick``: 2,000 under 200), SQLite.

The catalog is filled in bulk through the catalog's own tables: five layers of names (raw ->
features -> ... -> models), 10 versions per name, each version built from the same-numbered
versions of two names of the layer before, and an alias ``prod`` on v5 of every last-layer
name (so a prune has thousands of protected versions to keep, each with its reason).
``impact`` is measured on random first-layer versions (the deepest downstream); ``prune``
runs ``keep_last=3`` over every name, changing nothing.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from ._peers import open_tracelet, remove
from ._runner import Case, Contender, Sample, Skip, installed, scratch

VERSIONS_PER_NAME = 10
LAYERS = 5


class Layered:
    """One store whose catalog holds ``names`` x 10 versions in ``LAYERS`` layers."""

    def __init__(self, names: int) -> None:
        self.names = names
        self.width = names // LAYERS
        self.root: Path | None = None
        self.store: Any = None

    def open(self) -> None:
        if self.store is not None:
            return
        from sqlalchemy import insert

        from tracelet_core import _catalog as cat

        self.root = scratch("lifecycle")
        self.store = open_tracelet(self.root, "none")
        now = time.time() - 400 * 86400
        digest = "blake3:" + "cd" * 32
        artifacts, versions, entries, inputs, aliases = [], [], [], [], []
        for i in range(self.names):
            artifacts.append({"id": i + 1, "name": self.name(i), "type": "dataset", "created_at": now})
            for v in range(1, VERSIONS_PER_NAME + 1):
                vid = self.version_id(i, v)
                versions.append({
                    "id": vid, "artifact_id": i + 1, "version": v, "type": "dataset", "digest": digest,
                    "manifest_digest": digest, "description": None, "metadata": {}, "size_bytes": 10,
                    "created_at": now + vid, "producer_run_id": None, "idempotency_key": None,
                    "partition_key": None})
                blob = f"blake3:{vid:064x}"
                entries.append({"version_id": vid, "path": "data.json", "kind": "file", "digest": blob,
                                "size": 10, "data": {"kind": "file", "path": "data.json", "size": 10,
                                                     "digest": blob, "description": None}})
                if i >= self.width:
                    below = i - self.width  # the same position one layer up, and its neighbour
                    for upstream in (below, below + 1) if (below + 1) % self.width else (below,):
                        inputs.append({"version_id": vid, "input_version_id": self.version_id(upstream, v)})
            if i >= self.names - self.width:
                aliases.append({"artifact_id": i + 1, "alias": "prod", "version_id": self.version_id(i, 5)})
        with self.store.catalog.engine.begin() as conn:
            for table, rows in ((cat.artifacts, artifacts), (cat.versions, versions), (cat.entries, entries),
                                (cat.version_inputs, inputs), (cat.aliases, aliases)):
                for start in range(0, len(rows), 20000):
                    conn.execute(insert(table), rows[start:start + 20000])

    @staticmethod
    def name(i: int) -> str:
        return f"layer/n{i:05d}"

    @staticmethod
    def version_id(i: int, v: int) -> int:
        return i * VERSIONS_PER_NAME + v

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            assert self.root is not None
            remove(self.root)
            self.store = None


def cases(quick: bool) -> list[Case]:
    if not installed("tracelet_core") or not installed("sqlalchemy"):
        raise Skip("tracelet_core is not importable")
    names = 200 if quick else 10_000
    calls = 20 if quick else 200
    db = Layered(names)
    scale = f"{names * VERSIONS_PER_NAME:,} versions, {names:,} names"

    def impact() -> Sample:
        picks = [f"{db.name(random.randrange(db.width))}:v{random.randint(1, VERSIONS_PER_NAME)}"
                 for _ in range(calls)]
        found = 0
        start = time.perf_counter()
        for ref in picks:
            found += len(db.store.impact(ref).versions)
        return Sample((time.perf_counter() - start) / calls, f"{found / calls:.0f} versions downstream per call")

    def prune() -> Sample:
        start = time.perf_counter()
        report = db.store.prune(keep_last=3)
        elapsed = time.perf_counter() - start
        return Sample(elapsed, f"{len(report.deleted):,} would go, {len(report.kept):,} kept with a reason")

    return [
        Case(key="lifecycle_impact", title=f"impact(ref) of a first-layer version, {scale}", unit="ms",
             target="< 50 ms", setup=db.open, repeats=None if quick else 5,
             contenders=[Contender("tracelet", impact, tracelet=True)]),
        Case(key="lifecycle_prune_dry_run", title=f"prune(keep_last=3) dry run over every name, {scale}",
             unit="s", target="< 2 s", setup=db.open, teardown=db.close, repeats=None if quick else 5,
             contenders=[Contender("tracelet", prune, tracelet=True)]),
    ]
