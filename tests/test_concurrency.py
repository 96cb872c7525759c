"""Many processes writing one store at once: no lost, duplicated or mixed-up versions.

Each writer is a separate interpreter (``subprocess``) that opens its own
``ArtifactStore.open(store_dir)``. Writers first report ``ready`` and then block on stdin; the
parent releases them all at once by writing ``go`` to each, so the work truly overlaps without
any sleeping.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from support import MakeFile

from tracelet_core import ArtifactStore, TraceletArtifact
from tracelet_core._catalog import MIGRATIONS

WRITERS = 4

#: Every child starts with this: open the store (unless told to open it after ``go``), say
#: ``ready``, wait for ``go``. The child's own body follows and prints one JSON line.
PREAMBLE = """
import json, sys
from pathlib import Path
from tracelet_core import ArtifactStore, RunInfo, TraceletArtifact

store_dir, writer, work = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
work.mkdir(parents=True, exist_ok=True)
OPEN_LATE = {open_late}
store = None if OPEN_LATE else ArtifactStore.open(store_dir)
print("ready", flush=True)
assert sys.stdin.readline() == "go\\n"
if OPEN_LATE:
    store = ArtifactStore.open(store_dir)
"""


def run_together(body: str, store_dir: Path, tmp_path: Path, writers: int = WRITERS,
                 open_late: bool = False, timeout: float = 120) -> list[Any]:
    """Start ``writers`` children running ``body``, release them at once, return their JSON."""
    script = PREAMBLE.format(open_late=open_late) + textwrap.dedent(body)
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(store_dir), str(w), str(tmp_path / f"w{w}")],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for w in range(writers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line != "ready\n":
                _, err = proc.communicate(timeout=timeout)
                raise AssertionError(f"writer did not start: {line!r}\n{err}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, f"writer failed ({proc.returncode}):\n{err}"
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture(params=["full", "none"], autouse=True)
def durability(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test in both durability modes (the writer processes inherit the setting)."""
    monkeypatch.setenv("TRACELET_DURABILITY", request.param)
    return str(request.param)


@pytest.fixture
def store(store_dir: Path, catalog_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ArtifactStore]:
    """Every test here runs on SQLite and on PostgreSQL: the writer processes inherit the
    catalog through ``TRACELET_CATALOG_URL``."""
    monkeypatch.setenv("TRACELET_CATALOG_URL", catalog_url)
    with ArtifactStore.open(store_dir, catalog_url=catalog_url) as opened:
        yield opened


def blob_count(store_dir: Path) -> int:
    return sum(1 for p in (store_dir / "blobs").rglob("*") if p.is_file())


def alias_map(store: ArtifactStore, name: str) -> dict[str, str]:
    return {alias: v.version for v in store.versions(name) for alias in v.aliases}


# -- many writers, one name -----------------------------------------------------------------
LOGS_PER_WRITER = 25

WRITE_MANY = f"""
LOGS_PER_WRITER = {LOGS_PER_WRITER}
results = []
for i in range(LOGS_PER_WRITER):
    content = f"writer {{writer}} log {{i}}\\n"
    source = work / "data.txt"
    source.write_text(content)
    logged = store.log(TraceletArtifact("shared/model", "model").add_file(source, "data.txt"),
                       producer=RunInfo("test", f"writer-{{writer}}", step=str(i)))
    results.append([logged.version_number, content])
print(json.dumps(results))
"""


def test_four_processes_logging_one_name_get_contiguous_versions(store: ArtifactStore, store_dir: Path,
                                                                 tmp_path: Path) -> None:
    reports = run_together(WRITE_MANY, store_dir, tmp_path)

    total = WRITERS * LOGS_PER_WRITER
    versions = store.versions("shared/model")
    assert [v.version for v in versions] == [f"v{n}" for n in range(1, total + 1)]
    assert store.get("shared/model").version == f"v{total}"

    claimed: dict[int, str] = {}
    for writer, report in enumerate(reports):
        numbers = [number for number, _ in report]
        assert len(report) == LOGS_PER_WRITER
        assert numbers == sorted(numbers), f"writer {writer} saw its versions out of order"
        for number, content in report:
            assert number not in claimed, f"v{number} was handed to two logs"
            claimed[number] = content
    assert sorted(claimed) == list(range(1, total + 1))
    order = [claimed[n].split()[1] for n in range(1, total + 1)]
    switches = sum(1 for a, b in pairwise(order) if a != b)
    assert switches > WRITERS - 1, "the writers never overlapped; the test proved nothing"

    for version in versions:
        out = version.download(tmp_path / "out" / version.version)
        content = (out / "data.txt").read_text()
        assert content == claimed[version.version_number]  # each version holds what its writer wrote
        author, _, counter = content.removeprefix("writer ").strip().partition(" log ")
        assert version.producer is not None
        assert (version.producer.run_id, version.producer.step) == (f"writer-{author}", counter)
    assert len(set(claimed.values())) == total
    assert store.verify() == [f"shared/model:v{n}" for n in range(1, total + 1)]
    manifests = sorted(p.name for p in (store_dir / "manifests" / "shared" / "model").glob("@v*.json"))
    assert manifests == sorted(f"@v{n}.json" for n in range(1, total + 1))
    assert not [p for p in (store_dir / "tmp").iterdir()]  # no leftovers from any writer


# -- dedup under contention -----------------------------------------------------------------
WRITE_SAME = """
source = work / "same.bin"
source.write_bytes(b"identical bytes from every writer" * 1000)
results = []
for _ in range(5):
    artifact = (TraceletArtifact("dedup/model", "model").add_file(source, "weights.bin")
                .add_object({"epochs": 3}, "config"))
    logged = store.log(artifact)
    results.append([logged.version, logged.digest])
print(json.dumps(results))
"""


def test_identical_content_from_several_processes_makes_exactly_one_version(
        store: ArtifactStore, store_dir: Path, tmp_path: Path) -> None:
    reports = run_together(WRITE_SAME, store_dir, tmp_path)
    versions = store.versions("dedup/model")
    assert [v.version for v in versions] == ["v1"]
    seen = {tuple(item) for report in reports for item in report}
    assert seen == {("v1", versions[0].digest)}
    assert blob_count(store_dir) == 2  # one file blob and one object blob, written once
    assert store.verify() == ["dedup/model:v1"]


# -- concurrent alias moves -----------------------------------------------------------------
MOVE_ALIASES = """
targets = []
for i in range(20):
    shared = f"aliased:v{(writer + i) % 4 + 1}"
    mine = f"aliased:v{(writer * 3 + i) % 4 + 1}"
    store.set_alias(shared, "production")
    store.set_alias(mine, f"writer-{writer}")
    targets.append(mine.rpartition(":")[2])
print(json.dumps(targets[-1]))
"""


def test_concurrent_alias_moves_end_on_exactly_one_version(store: ArtifactStore, store_dir: Path,
                                                           make_file: MakeFile, tmp_path: Path) -> None:
    for n in range(4):
        store.log(TraceletArtifact("aliased").add_file(make_file(f"a{n}.txt", f"content {n}"), "a.txt"))
    store.set_alias("aliased:v1", "production")
    last_targets = run_together(MOVE_ALIASES, store_dir, tmp_path)

    holders = [v.version for v in store.versions("aliased") if "production" in v.aliases]
    assert len(holders) == 1
    assert store.get("aliased:production").version == holders[0]
    expected = {"production": holders[0], **{f"writer-{w}": t for w, t in enumerate(last_targets)}}
    assert alias_map(store, "aliased") == expected

    # the alias journal written beside the manifests agrees with the catalog
    with ArtifactStore.open(store_dir, catalog_url=f"sqlite:///{tmp_path / 'rebuilt.db'}") as rebuilt:
        assert rebuilt.reindex() == [f"aliased:v{n}" for n in range(1, 5)]
        assert alias_map(rebuilt, "aliased") == expected


# -- upsert from several processes, then finish ---------------------------------------------
UPSERT_PARTS = """
for i in range(5):
    part = work / f"part-{writer}-{i}.bin"
    part.write_bytes(f"writer {writer} part {i}".encode() * 100)
    artifact = TraceletArtifact("sharded/dataset", "dataset", metadata={f"writer-{writer}": i})
    artifact.add_file(part, f"shards/part-{writer}-{i}.bin")
    if i == 0:
        common = work / "README.txt"
        common.write_text("the same readme from every writer")
        artifact.add_file(common, "README.txt")
    store.upsert(artifact, group="epoch-7")
print(json.dumps("done"))
"""


def test_upsert_from_several_processes_then_finish_gives_one_version(store: ArtifactStore,
                                                                     store_dir: Path,
                                                                     tmp_path: Path) -> None:
    run_together(UPSERT_PARTS, store_dir, tmp_path)
    drafts = store.drafts()
    assert [(d.name, d.group) for d in drafts] == [("sharded/dataset", "epoch-7")]
    expected_paths = ["README.txt"] + sorted(f"shards/part-{w}-{i}.bin" for w in range(WRITERS)
                                             for i in range(5))
    assert sorted(e["path"] for e in drafts[0].entries) == sorted(expected_paths)

    logged = store.finish("sharded/dataset", group="epoch-7", aliases=["complete"])
    assert logged.ref == "sharded/dataset:v1" and logged.aliases == ["complete"]
    assert sorted(f.path for f in logged.files) == sorted(expected_paths)
    assert logged.metadata == {f"writer-{w}": 4 for w in range(WRITERS)}
    assert store.drafts() == []
    assert [v.version for v in store.versions("sharded/dataset")] == ["v1"]
    out = logged.download(tmp_path / "out")
    for w in range(WRITERS):
        for i in range(5):
            assert (out / "shards" / f"part-{w}-{i}.bin").read_bytes() == f"writer {w} part {i}".encode() * 100
    assert (out / "README.txt").read_text() == "the same readme from every writer"
    assert store.verify() == ["sharded/dataset:v1"]


# -- opening a fresh store from several processes at once -----------------------------------
OPEN_AND_LOG = """
source = work / "own.txt"
source.write_text(f"written by {writer}")
logged = store.log(TraceletArtifact(f"fresh/w{writer}").add_file(source))
shared = store.log(TraceletArtifact("fresh/shared").add_file(source))
print(json.dumps([logged.ref, shared.version_number]))
"""


def test_processes_opening_a_fresh_store_at_once_create_it_once(store_dir: Path, tmp_path: Path) -> None:
    assert not store_dir.exists()
    reports = run_together(OPEN_AND_LOG, store_dir, tmp_path, open_late=True)
    assert sorted(ref for ref, _ in reports) == [f"fresh/w{w}:v1" for w in range(WRITERS)]
    assert sorted(number for _, number in reports) == list(range(1, WRITERS + 1))
    db = sqlite3.connect(store_dir / "catalog.db")
    try:
        applied = db.execute("SELECT version FROM tracelet_schema ORDER BY version").fetchall()
        assert applied == [(number,) for number, _ in MIGRATIONS]  # each migration ran exactly once
    finally:
        db.close()
    with ArtifactStore.open(store_dir) as store:
        assert len(store.verify()) == 2 * WRITERS



# -- eight writers on each catalog ------------------------------------------------------------
WRITE_FIFTY = WRITE_MANY.replace(f"LOGS_PER_WRITER = {LOGS_PER_WRITER}", "LOGS_PER_WRITER = 50")


def test_eight_processes_times_fifty_logs_on_sqlite_and_postgresql(
        store_dir: Path, tmp_path: Path, catalog_url: str, monkeypatch: Any) -> None:
    """The catalog (SQLite or PostgreSQL) hands out exactly v1..v400, each holding its writer's bytes."""
    monkeypatch.setenv("TRACELET_CATALOG_URL", catalog_url)  # the writers inherit it
    reports = run_together(WRITE_FIFTY, store_dir, tmp_path, writers=8, timeout=300)
    with ArtifactStore.open(store_dir, catalog_url=catalog_url) as store:
        versions = store.versions("shared/model")
        assert [v.version_number for v in versions] == list(range(1, 401))
        written = {number: content for report in reports for number, content in report}
        assert sorted(written) == list(range(1, 401))
        for version in versions[::37]:  # a spread of versions, byte for byte
            assert version.path("data.txt").read_text() == written[version.version_number]
        store.verify()
