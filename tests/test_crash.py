"""A writer killed at any point of a log leaves either a whole version or none.

The writer is a child interpreter that patches one step of the log to ``SIGKILL`` itself
there (the only mocking in this file: fault injection). The parent then checks that what is
visible is consistent, that the store verifies, that the next log gets the next version
number, that ``gc`` finds exactly the orphans, and that a lost catalog is rebuilt by
``reindex``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from support import MakeFile

from tracelet_core import (
    ArtifactFile,
    ArtifactObject,
    ArtifactStore,
    LoggedArtifact,
    RunInfo,
    TraceletArtifact,
)
from tracelet_core._hashing import CHUNK_SIZE, hash_file

NAME = "crash/model"
BIG_SIZE = 3 * CHUNK_SIZE + 12345  # several chunks, so "mid-blob" really is in the middle

#: The child: set up one kill point, then log an artifact with a big file, an object, an
#: input, a producer and an alias. ``KILL_POINTS`` below lists what each point patches.
CHILD = """
import os, signal, sys
from pathlib import Path

import tracelet_core._blobs_local as blobs_local
from tracelet_core import ArtifactStore, RunInfo, TraceletArtifact
from tracelet_core._catalog import Catalog

store_dir, big, point = sys.argv[1], Path(sys.argv[2]), sys.argv[3]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def kill_before(owner, attr):
    original = getattr(owner, attr)
    def wrapper(*args, **kwargs):
        die()
        return original(*args, **kwargs)
    setattr(owner, attr, wrapper)


def kill_after(owner, attr, calls=1):
    original = getattr(owner, attr)
    seen = []
    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        seen.append(1)
        if len(seen) == calls:
            die()
        return result
    setattr(owner, attr, wrapper)


store = ArtifactStore.open(store_dir)
if point == "mid_blob":
    copy = blobs_local._copy_stream
    def copy_then_die_after_first_chunk(src, dst, size_hint, progress):
        return copy(src, dst, size_hint, lambda n: die())
    blobs_local._copy_stream = copy_then_die_after_first_chunk
elif point == "before_blobs":
    kill_before(type(store.blobs), "ingest")
elif point == "between_blobs":
    kill_after(type(store.blobs), "ingest", calls=1)
elif point == "after_blobs":
    kill_after(type(store), "_stage_blobs")
elif point == "after_manifest":
    kill_after(type(store.blobs), "write_manifest")
elif point == "mid_catalog_entries":
    from sqlalchemy import event

    @event.listens_for(store.catalog.engine, "before_cursor_execute")
    def die_on_entries_insert(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO ENTRIES"):
            die()
elif point == "mid_catalog_aliases":
    from sqlalchemy import event

    @event.listens_for(store.catalog.engine, "before_cursor_execute")
    def die_on_aliases_change(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("DELETE FROM ALIASES", "INSERT INTO ALIASES")):
            die()
elif point == "after_alias_journal":
    kill_after(type(store), "_write_alias_journal")
elif point == "after_commit":
    kill_after(Catalog, "commit_version")
else:
    raise SystemExit(f"unknown kill point {point}")

artifact = (TraceletArtifact("crash/model", "model", metadata={"attempt": "killed"})
            .add_file(big, "weights/big.bin")
            .add_object({"lr": 0.01, "layers": [8, 8]}, "config"))
store.log(artifact, producer=RunInfo("test", "doomed-run", step="train"),
          inputs=["crash/raw:v1"], aliases=["best"])
raise SystemExit(3)  # the kill point was never reached
"""

#: kill point -> (whole version committed?, blobs of the killed log left as orphans,
#: stray manifest left above the newest committed version?)
KILL_POINTS: dict[str, tuple[bool, int, bool]] = {
    "mid_blob": (False, 0, False),
    "before_blobs": (False, 0, False),
    "between_blobs": (False, 1, False),
    "after_blobs": (False, 2, False),
    "after_manifest": (False, 2, True),
    "mid_catalog_entries": (False, 2, True),
    "mid_catalog_aliases": (False, 2, True),
    "after_commit": (True, 0, False),
    # the alias journal is written inside the transaction, last thing before it commits
    "after_alias_journal": (False, 2, True),
}


def kill_a_log(store_dir: Path, big: Path, point: str) -> subprocess.CompletedProcess[str]:
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), str(store_dir), str(big), point],
                           check=False, capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, (
        f"the writer was not killed at {point} (exit {child.returncode}):\n{child.stderr}")
    return child


def snapshot(store: ArtifactStore, name: str) -> list[dict[str, Any]]:
    return [v.to_dict() for v in store.versions(name)]


def stored_blobs(store_dir: Path) -> set[str]:
    return {f"blake3:{p.name}" for p in (store_dir / "blobs").rglob("*") if p.is_file()}


def referenced_blobs(store: ArtifactStore) -> set[str]:
    digests: set[str] = set()
    for latest in store.list():
        for version in store.versions(latest.name):
            stored: list[ArtifactFile | ArtifactObject] = [*version.files, *version.objects]
            digests |= {e.digest for e in stored if e.digest}
    return digests


def assert_every_version_downloads(store: ArtifactStore, dest: Path) -> None:
    for latest in store.list():
        for version in store.versions(latest.name):
            out = version.download(dest / version.name / version.version)
            stored: list[ArtifactFile | ArtifactObject] = [*version.files, *version.objects]
            for entry in stored:
                assert hash_file(out / entry.path)[0] == entry.digest


@pytest.fixture(params=["full", "none"], autouse=True)
def durability(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test in both durability modes (the killed writer inherits the setting): not
    flushing must not weaken what a killed process leaves behind."""
    monkeypatch.setenv("TRACELET_DURABILITY", request.param)
    return str(request.param)


@pytest.fixture
def big_file(make_file: MakeFile) -> Path:
    return make_file("big.bin", os.urandom(BIG_SIZE))


@pytest.fixture
def history(store: ArtifactStore, make_file: MakeFile) -> list[LoggedArtifact]:
    return make_history(store, make_file)


def make_history(store: ArtifactStore, make_file: MakeFile) -> list[LoggedArtifact]:
    """``crash/raw:v1``, then ``crash/model`` v1 (alias ``best``, input raw:v1) and v2."""
    raw = store.log(TraceletArtifact("crash/raw", "dataset").add_file(make_file("raw.csv", "a,b\n1,2\n")))
    v1 = store.log(TraceletArtifact(NAME, "model").add_file(make_file("m1.bin", b"model one"), "weights/big.bin"),
                   producer=RunInfo("test", "run-1"), inputs=[raw], aliases=["best"])
    v2 = store.log(TraceletArtifact(NAME, "model").add_file(make_file("m2.bin", b"model two"), "weights/big.bin"),
                   inputs=[raw])
    return [raw, v1, v2]


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_writer_killed_mid_log_leaves_a_whole_version_or_none(
        point: str, store: ArtifactStore, store_dir: Path, big_file: Path, make_file: MakeFile,
        history: list[LoggedArtifact], tmp_path: Path) -> None:
    check_a_killed_log(point, store, store_dir, big_file, make_file, tmp_path)


@pytest.mark.parametrize("point", ["after_blobs", "after_manifest", "mid_catalog_entries", "after_commit"])
def test_a_writer_killed_mid_log_on_a_postgresql_catalog(
        point: str, store_dir: Path, big_file: Path, make_file: MakeFile, tmp_path: Path,
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same guarantees when the catalog is PostgreSQL (the writer inherits the URL)."""
    monkeypatch.setenv("TRACELET_CATALOG_URL", postgres_url)
    with ArtifactStore.open(store_dir) as store:
        make_history(store, make_file)
        check_a_killed_log(point, store, store_dir, big_file, make_file, tmp_path)


def check_a_killed_log(point: str, store: ArtifactStore, store_dir: Path, big_file: Path,
                       make_file: MakeFile, tmp_path: Path) -> None:
    committed, orphan_count, stray_manifest = KILL_POINTS[point]
    before = snapshot(store, NAME)
    blobs_before = stored_blobs(store_dir)

    kill_a_log(store_dir, big_file, point)

    # 1. nothing half-done is visible: either the old history, or the old history plus v3 whole
    after = snapshot(store, NAME)
    big_digest = hash_file(big_file)[0]
    if committed:
        assert [v["version"] for v in after] == ["v1", "v2", "v3"]
        assert [{**v, "aliases": []} for v in after[:2]] == [{**v, "aliases": []} for v in before]
        new = store.get(f"{NAME}:v3")
        assert new.aliases == ["best"] and store.get(f"{NAME}:best") == new
        assert new.inputs == ["crash/raw:v1"] and new.metadata == {"attempt": "killed"}
        assert new.producer is not None and new.producer.run_id == "doomed-run"
        assert store.verify(new.ref) == [new.ref]
        assert new.path("weights/big.bin").stat().st_size == BIG_SIZE
        assert new.load("config") == {"lr": 0.01, "layers": [8, 8]}
    else:
        assert after == before
        assert store.get(f"{NAME}:best").version == "v1"
        assert store.get(NAME).version == "v2"
    assert store.verify() == ["crash/raw:v1", f"{NAME}:v1", f"{NAME}:v2"] + ([f"{NAME}:v3"] if committed else [])
    if point == "mid_blob":  # the kill really hit the middle of the blob's copy
        leftovers = list((store_dir / "tmp").iterdir())
        assert [p.stat().st_size for p in leftovers] == [CHUNK_SIZE]
        assert big_digest not in stored_blobs(store_dir)

    # 2. gc sees exactly the orphans: blobs on disk that no version references
    orphans = stored_blobs(store_dir) - referenced_blobs(store)
    assert len(orphans) == orphan_count
    assert orphans <= stored_blobs(store_dir) - blobs_before
    if orphan_count:
        assert big_digest in orphans
    report = store.gc(dry_run=True, grace_seconds=0)
    assert set(report.blobs) == orphans
    stray = [p for p in report.manifests if re.search(rf"manifests/{NAME}/@v3(\.\w+)?\.pending$", p)]
    assert len(stray) == len(report.manifests) == (1 if stray_manifest else 0)
    assert stored_blobs(store_dir) >= orphans  # a dry run removes nothing

    # 3. the next log gets the next contiguous number, and all of it is whole
    next_number = 4 if committed else 3
    following = store.log(TraceletArtifact(NAME, "model").add_file(make_file("next.bin", b"after the crash"),
                                                                   "weights/big.bin"))
    assert following.version == f"v{next_number}"
    assert [v.version for v in store.versions(NAME)] == [f"v{n}" for n in range(1, next_number + 1)]
    assert following.path("weights/big.bin").read_bytes() == b"after the crash"
    assert store.verify(following.ref) == [following.ref]
    assert store.get(f"{NAME}:best").version == ("v3" if committed else "v1")

    # 4. gc removes exactly those orphans; everything committed still verifies and downloads
    report = store.gc(dry_run=True, grace_seconds=0)
    assert set(report.blobs) == orphans and report.manifests == stray  # each writer's own pending name
    report = store.gc(dry_run=False, grace_seconds=0)
    assert set(report.blobs) == orphans and report.manifests == stray
    assert not list((store_dir / "manifests").rglob("*.pending"))
    assert stored_blobs(store_dir) == referenced_blobs(store)
    assert not list((store_dir / "tmp").iterdir())
    assert len(store.verify()) == next_number + 1
    assert_every_version_downloads(store, tmp_path / "downloads")


@pytest.mark.parametrize("point", ["after_manifest", "mid_catalog_aliases", "after_alias_journal",
                                   "after_commit"])
def test_reindex_after_a_crash_restores_exactly_the_committed_state(
        point: str, store: ArtifactStore, store_dir: Path, big_file: Path, make_file: MakeFile,
        history: list[LoggedArtifact]) -> None:
    kill_a_log(store_dir, big_file, point)
    store.log(TraceletArtifact(NAME, "model").add_file(make_file("next.bin", b"after the crash"),
                                                       "weights/big.bin"))
    expected = {name: snapshot(store, name) for name in ("crash/raw", NAME)}
    store.close()

    _delete_catalog(store_dir)
    with ArtifactStore.open(store_dir) as reopened:
        assert reopened.list() == []
        refs = reopened.reindex()
        assert sorted(refs) == sorted(v["ref"] for versions in expected.values() for v in versions)
        # The alias journal is written inside the commit's transaction: after a kill before
        # the commit it is one move ahead, to a v3 whose digest is not the v3 logged later,
        # so reindex falls back to the alias's previous target. It never goes backwards.
        best = "v3" if point == "after_commit" else "v1"
        assert reopened.get(f"{NAME}:best").version == best
        assert {name: snapshot(reopened, name) for name in expected} == expected
        assert refs.skipped == []
        reopened.verify()


def _delete_catalog(store_dir: Path) -> None:
    files = [p for p in store_dir.iterdir() if p.name.startswith("catalog.db")]
    assert files
    for path in files:
        path.unlink()


def test_reindex_restores_every_version_its_inputs_and_aliases(store: ArtifactStore, store_dir: Path,
                                                               make_file: MakeFile, tmp_path: Path) -> None:
    raw1 = store.log(TraceletArtifact("data/raw", "dataset", description="first drop")
                     .add_file(make_file("r1.csv", "a\n1\n")), aliases=["golden"])
    raw2 = store.log(TraceletArtifact("data/raw", "dataset").add_file(make_file("r2.csv", "a\n2\n")))
    feats = store.log(TraceletArtifact("data/features", "dataset", metadata={"rows": 2})
                      .add_object({"mean": 1.5}, "stats").add_reference("https://example.com/big.parquet",
                                                                        size_bytes=10),
                      producer=RunInfo("prefect", "flow-1", step="featurize"), inputs=[raw1, raw2])
    model1 = store.log(TraceletArtifact("models/clf", "model").add_file(make_file("w1.bin", b"w1"), "w.bin"),
                       producer=RunInfo("dagster", "run-7", step="train", partition="2024-01-01"),
                       inputs=[feats], aliases=["production", "candidate"])
    model2 = store.log(TraceletArtifact("models/clf", "model").add_file(make_file("w2.bin", b"w2"), "w.bin"),
                       inputs=[feats, raw2])
    store.set_alias(model2.ref, "candidate")  # moved
    store.set_alias(model1.ref, "staging")
    store.remove_alias("models/clf", "staging")  # removed again
    names = ["data/features", "data/raw", "models/clf"]
    expected = {name: snapshot(store, name) for name in names}
    lineage = {ref: store.lineage(ref).to_dict() for ref in (model1.ref, model2.ref, feats.ref)}
    store.close()

    _delete_catalog(store_dir)
    with ArtifactStore.open(store_dir) as reopened:
        assert reopened.list() == []
        assert reopened.reindex() == [raw1.ref, raw2.ref, feats.ref, model1.ref, model2.ref]
        assert {name: snapshot(reopened, name) for name in names} == expected
        assert reopened.get("models/clf:production") == model1
        assert reopened.get("models/clf:candidate") == model2
        assert reopened.get("data/raw:golden") == raw1
        assert reopened.get("models/clf").inputs == ["data/features:v1", "data/raw:v2"]
        assert {ref: reopened.lineage(ref).to_dict() for ref in lineage} == lineage
        assert [d.to_dict()["ref"] for d in reopened.list()] == ["data/features:v1", "data/raw:v2",
                                                                 "models/clf:v2"]
        assert reopened.verify() == [raw1.ref, raw2.ref, feats.ref, model1.ref, model2.ref]
        assert reopened.reindex() == []  # idempotent
        out = reopened.get("models/clf:production").download(tmp_path / "out")
        assert (out / "w.bin").read_bytes() == b"w1"
        assert reopened.get("data/features").load() == {"mean": 1.5}
        nxt = reopened.log(TraceletArtifact("models/clf", "model").add_file(make_file("w3.bin", b"w3"), "w.bin"))
        assert nxt.version == "v3"


def test_a_new_name_killed_between_manifest_and_commit_is_collected_and_never_reindexed(
        store: ArtifactStore, store_dir: Path, big_file: Path, make_file: MakeFile) -> None:
    """The killed log is the first of its name: gc must still recognise its manifest as
    uncommitted, and reindex must not bring the version back without its blobs."""
    store.log(TraceletArtifact("crash/raw", "dataset").add_file(make_file("raw.csv", "a,b\n1,2\n")))
    kill_a_log(store_dir, big_file, "after_manifest")
    report = store.gc(dry_run=False, grace_seconds=0)
    assert [re.sub(r"\.\w+\.pending$", ".pending", Path(p).name) for p in report.manifests] == ["@v1.pending"]
    assert len(report.blobs) == 2
    store.close()
    _delete_catalog(store_dir)
    with ArtifactStore.open(store_dir) as reopened:
        refs = reopened.reindex()
        assert refs == ["crash/raw:v1"] and refs.skipped == []
        assert [a.ref for a in reopened.list()] == ["crash/raw:v1"]
        assert reopened.verify() == ["crash/raw:v1"]


def test_a_version_committed_but_killed_before_its_manifest_was_promoted_survives_gc_and_reindex(
        store: ArtifactStore, store_dir: Path, big_file: Path, make_file: MakeFile,
        history: list[LoggedArtifact]) -> None:
    kill_a_log(store_dir, big_file, "after_commit")
    manifests = store_dir / "manifests" / "crash" / "model"
    assert list(manifests.glob("@v3*.pending")) and not (manifests / "@v3.json").exists()
    assert store.gc(dry_run=False, grace_seconds=0).manifests == []
    assert (manifests / "@v3.json").exists() and not list(manifests.glob("@v3*.pending"))
    store.close()
    _delete_catalog(store_dir)
    with ArtifactStore.open(store_dir) as reopened:
        assert reopened.reindex()[-1] == f"{NAME}:v3"
        assert reopened.get(f"{NAME}:best").version == "v3"
        reopened.verify()


#: A child that moves ``prod`` round v1 -> v2 -> v3 -> v1 ..., printing each move once it
#: returned, and SIGKILLs itself at the K-th SQL statement or commit (of any transaction).
ALIAS_MOVER = """
import os, signal, sys
from sqlalchemy import event
from tracelet_core import ArtifactStore

store_dir, kill_at = sys.argv[1], int(sys.argv[2])
store = ArtifactStore.open(store_dir)
seen = [0]

def tick(*_args, **_kwargs):
    seen[0] += 1
    if seen[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

event.listen(store.catalog.engine, "before_cursor_execute", tick)
event.listen(store.catalog.engine, "commit", tick)
for move in range(100):
    target = move % 3 + 1
    print(f"moving {target}", flush=True)
    store.set_alias(f"moved:v{target}", "prod")
    print(f"moved {target}", flush=True)
"""


@pytest.mark.parametrize("catalog", ["sqlite", "postgresql"])
def test_reindex_after_a_kill_during_an_alias_move_never_goes_backwards(
        catalog: str, store_dir: Path, make_file: MakeFile, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Killed at every statement of a few moves in turn: the rebuilt ``prod`` is the catalog's,
    or at most the unacknowledged move in flight; never the state before the last move."""
    if catalog == "postgresql":
        monkeypatch.setenv("TRACELET_CATALOG_URL", request.getfixturevalue("postgres_url"))
    with ArtifactStore.open(store_dir) as store:
        for n in range(1, 4):
            store.log(TraceletArtifact("moved").add_file(make_file(f"m{n}.txt", f"version {n}")))
        store.set_alias("moved:v3", "prod")
    kills = 0
    for kill_at in range(3, 42, 3 if catalog == "sqlite" else 6):  # spread over the first moves
        child = subprocess.run([sys.executable, "-c", textwrap.dedent(ALIAS_MOVER), str(store_dir), str(kill_at)],
                               check=False, capture_output=True, text=True, timeout=120)
        assert child.returncode == -signal.SIGKILL, child.stderr
        kills += 1
        lines = child.stdout.split()
        in_flight = int(lines[-1]) if lines and lines[-2] == "moving" else None
        with ArtifactStore.open(store_dir) as store:
            committed = store.get("moved:prod").version_number
            with ArtifactStore.open(store_dir, catalog_url=f"sqlite:///{tmp_path / f'rebuilt{kill_at}.db'}") as rebuilt:
                assert rebuilt.reindex() == ["moved:v1", "moved:v2", "moved:v3"]
                restored = rebuilt.get("moved:prod").version_number
            assert restored in {committed, in_flight}, (kill_at, committed, restored, child.stdout)
            store.set_alias("moved:v3", "prod")  # the next child starts from prod=v3 again
    assert kills >= 7
