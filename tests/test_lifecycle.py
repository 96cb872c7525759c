"""Lifecycle: delete (a tombstone), protection, prune, stored retention policies and their CLI.

Deletes and prunes run on both catalogs (``any_store``); blobs collected by ``gc`` after a
delete on every storage kind (``contract_store``); deletions kept by ``reindex`` on each
storage kind (``blob_location``, which opens its own catalogs).
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from backend_support import FolderBackend
from sqlalchemy import update
from support import MakeFile, StoreLocation
from typer.testing import CliRunner

from tracelet_core import (
    ArtifactDeletedError,
    ArtifactNotFoundError,
    ArtifactStore,
    Experiment,
    InvalidArtifactError,
    LoggedArtifact,
    ProtectedVersionError,
    RunInfo,
    TraceletArtifact,
    TraceletError,
)
from tracelet_core._catalog import versions
from tracelet_core.cli import app

DAY = 86400.0


def log_text(store: ArtifactStore, name: str, text: str, make_file: MakeFile, **kwargs: object) -> LoggedArtifact:
    path = make_file(f"{name.replace('/', '_')}-{abs(hash(text))}.txt", text)
    return store.log(TraceletArtifact(name, "dataset").add_file(path, "data.txt"), **kwargs)  # type: ignore[arg-type]


def age(store: ArtifactStore, artifact: LoggedArtifact, days: float) -> None:
    """Make ``artifact`` look ``days`` old (no sleeping: its row's creation time moves back)."""
    with store.catalog.engine.begin() as conn:
        conn.execute(update(versions).where(versions.c.id == artifact._record.id)
                     .values(created_at=artifact._record.created_at - days * DAY))


# -- delete -----------------------------------------------------------------------------------
def test_a_deleted_version_is_a_tombstone(any_store: ArtifactStore, make_file: MakeFile) -> None:
    v1, v2, v3 = (log_text(any_store, "data", str(i), make_file) for i in (1, 2, 3))
    record = any_store.delete("data:v3", reason="wrong labels")
    assert record.ref == "data:v3" and record.digest == v3.digest
    with pytest.raises(ArtifactDeletedError) as caught:
        any_store.get("data:v3")
    assert isinstance(caught.value, ArtifactNotFoundError)
    assert re.search(r"data:v3 was deleted at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00: wrong labels", str(caught.value))
    assert caught.value.reason == "wrong labels"
    assert any_store.get("data").ref == "data:v2"  # latest moves back
    assert [v.ref for v in any_store.versions("data")] == ["data:v1", "data:v2"]
    assert [v.ref for v in any_store.list()] == ["data:v2"]
    with pytest.raises(ArtifactDeletedError):
        any_store.delete("data:v3")  # once only
    # the number is never reused, and the same content again is a new version
    assert log_text(any_store, "data", "3", make_file).ref == "data:v4"
    # identical to the (new) latest: that version, nothing new
    again = log_text(any_store, "data", "3", make_file)
    assert (again.ref, again.created) == ("data:v4", False)
    any_store.delete("data:v4")
    assert log_text(any_store, "data", "2", make_file).ref == "data:v2"  # the latest live one
    for ref in ("data:v1", "data:v2"):
        any_store.delete(ref, reason=None)
    assert any_store.list() == [] and any_store.versions("data") == []
    with pytest.raises(ArtifactNotFoundError, match="no versions"):
        any_store.get("data")
    assert any_store.verify() == []
    assert v1.ref == "data:v1" and v2.ref == "data:v2"


def test_a_deleted_version_cannot_be_an_input_and_its_tags_hide(any_store: ArtifactStore, make_file: MakeFile) -> None:
    old = log_text(any_store, "raw", "a", make_file)
    any_store.catalog.add_tags(old._record.id, ["gold"])
    log_text(any_store, "raw", "b", make_file)
    any_store.delete(old.ref)
    assert any_store.list(tag="gold") == [] and any_store.versions("raw", tag="gold") == []
    with pytest.raises(ArtifactDeletedError):
        log_text(any_store, "model", "m", make_file, inputs=["raw:v1"])


def test_aliased_and_upstream_versions_are_protected(any_store: ArtifactStore, make_file: MakeFile) -> None:
    raw = log_text(any_store, "raw", "r", make_file)
    features = log_text(any_store, "features", "f", make_file, inputs=[raw])
    model = log_text(any_store, "model", "m", make_file, inputs=[features], aliases=["prod"],
                     producer=RunInfo("dagster", "run-1", step="train"))
    log_text(any_store, "model", "m2", make_file)
    with pytest.raises(ProtectedVersionError, match=r"alias 'prod'.*force=True") as direct:
        any_store.delete(model.ref)
    assert direct.value.reasons == ["alias 'prod' points at it"]
    with pytest.raises(ProtectedVersionError, match=r"raw:v1 is protected \(upstream of model:v1 \(alias 'prod'\)\)"):
        any_store.delete("raw:v1")  # two levels up
    assert any_store.get("raw:v1").digest == raw.digest and any_store.get("model:prod").ref == "model:v1"
    assert isinstance(direct.value, TraceletError)

    deleted = any_store.delete("raw:v1", force=True, reason="leaked data")
    assert deleted.ref == "raw:v1"
    graph = any_store.lineage(model.ref, depth=None).to_dict()
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert nodes["raw:v1"]["deleted"] is True and "deleted" not in nodes["features:v1"]
    assert any_store.get("features:v1").inputs == ["raw:v1"]  # what was built from it keeps its history

    removed = any_store.delete("model:prod", force=True)
    assert removed.aliases == ["prod"]
    with pytest.raises(ArtifactNotFoundError, match="prod"):
        any_store.get("model:prod")
    any_store.delete("features:v1")  # no longer upstream of anything aliased
    assert any_store.get("model").ref == "model:v2"


def test_a_forced_delete_removes_the_alias_from_the_trackers(store: ArtifactStore, tracker: FolderBackend) -> None:
    with Experiment("e", backend=[tracker], store=store) as exp:
        for value in (1, 2):
            assert exp.log_artifact(exp.create_artifact("cfg", "config").add_object({"v": value}, "c"))["folder"].ok
    store.set_alias("cfg:v1", "prod")
    store.delete("cfg:v1", force=True)
    assert tracker.alias_moves() == [["set", "cfg:v1", "prod"], ["remove", "cfg:v1", "prod"]]
    assert store.alias_events("cfg") == []  # both delivered


def test_delete_refuses_bad_input_and_changes_nothing(any_store: ArtifactStore, make_file: MakeFile) -> None:
    log_text(any_store, "data", "1", make_file)
    with pytest.raises(ArtifactNotFoundError):
        any_store.delete("data:v9")
    with pytest.raises(ArtifactNotFoundError):
        any_store.delete("nothing:v1")
    with pytest.raises(InvalidArtifactError):
        any_store.delete("data:v1", reason=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidArtifactError):
        any_store.delete("bad name!")
    assert [v.ref for v in any_store.versions("data")] == ["data:v1"]


# -- gc and reindex ---------------------------------------------------------------------------
def test_gc_collects_a_deleted_versions_blobs_once_nothing_uses_them(contract_store: ArtifactStore,
                                                                    make_file: MakeFile) -> None:
    shared = make_file("shared.bin", b"shared")
    only = make_file("only.bin", b"only mine")
    v1 = contract_store.log(TraceletArtifact("data", "dataset").add_file(shared).add_file(only))
    v2 = contract_store.log(TraceletArtifact("data", "dataset").add_file(shared))
    digests = {e.path: e.digest for e in v1.files}
    contract_store.delete(v1.ref)
    report = contract_store.gc(dry_run=False)  # within the grace period: a deleted version's blob goes anyway
    assert report.blobs == [digests["only.bin"]] and report.bytes_freed == len(b"only mine")
    assert contract_store.blobs.has_blob(digests["shared.bin"])
    assert contract_store.verify() == [v2.ref]
    assert contract_store.get(v2.ref).path("shared.bin").read_bytes() == b"shared"


def test_reindex_keeps_deletions(blob_location: StoreLocation, make_file: MakeFile, tmp_path: Path) -> None:
    with blob_location.open(catalog_url=f"sqlite:///{tmp_path / 'lost.db'}") as store:
        raw = log_text(store, "raw", "r1", make_file)
        log_text(store, "raw", "r2", make_file)
        log_text(store, "model", "m", make_file, inputs=[raw])
        store.delete("raw:v1", reason="bad rows")
    with blob_location.open(catalog_url=f"sqlite:///{tmp_path / 'new.db'}") as fresh:
        assert fresh.reindex() == ["raw:v1", "raw:v2", "model:v1"]
        with pytest.raises(ArtifactDeletedError, match="bad rows"):
            fresh.get("raw:v1")
        assert [v.ref for v in fresh.versions("raw")] == ["raw:v2"]
        assert fresh.get("model:v1").inputs == ["raw:v1"]
        nodes = {n["id"]: n for n in fresh.lineage("model:v1").to_dict()["nodes"]}
        assert nodes["raw:v1"]["deleted"] is True
        assert log_text(fresh, "raw", "r3", make_file).ref == "raw:v3"


def test_reindex_keeps_tags_and_the_alias_history(blob_location: StoreLocation, make_file: MakeFile,
                                                  tmp_path: Path) -> None:
    train = RunInfo("prefect", "flow-7", step="train", name="retrain")
    with blob_location.open(catalog_url=f"sqlite:///{tmp_path / 'lost.db'}") as store:
        store.log(TraceletArtifact("model", "model", tags=["baseline"]).add_file(make_file("m1", "w.bin")),
                  aliases=["candidate"], producer=train)
        store.log(TraceletArtifact("model", "model", tags=["nightly", "gpu"]).add_file(make_file("m2", "w.bin")))
        store.set_alias("model:v2", "candidate", reason="better auc")
        store.set_alias("model:v1", "production")
        store.remove_alias("model", "production", reason="rolled back")
        tags = {v.ref: v.tags for v in store.versions("model")}
        history = [change.to_dict() for change in store.alias_history("model")]
    with blob_location.open(catalog_url=f"sqlite:///{tmp_path / 'new.db'}") as fresh:
        report = fresh.reindex()
        assert list(report) == ["model:v1", "model:v2"] and report.skipped == []
        assert {v.ref: v.tags for v in fresh.versions("model")} == tags == {
            "model:v1": ["baseline"], "model:v2": ["gpu", "nightly"]}
        assert [change.to_dict() for change in fresh.alias_history("model")] == history
        assert [(c["alias"], c["before"], c["after"], c["reason"]) for c in history] == [
            ("candidate", None, "model:v1", None), ("candidate", "model:v1", "model:v2", "better auc"),
            ("production", None, "model:v1", None), ("production", "model:v1", None, "rolled back")]
        assert history[0]["by"]["name"] == "retrain"  # the producing run, as recorded
        assert fresh.get("model:candidate").ref == "model:v2"


# -- prune ------------------------------------------------------------------------------------
def test_prune_keeps_the_newest_the_latest_and_the_protected(any_store: ArtifactStore, make_file: MakeFile) -> None:
    made = [log_text(any_store, "ckpt", f"c{i}", make_file) for i in range(1, 6)]
    log_text(any_store, "eval", "e", make_file, inputs=[made[1]], aliases=["best"])
    dry = any_store.prune("ckpt", keep_last=2)
    assert dry.dry_run and dry.deleted == ["ckpt:v3", "ckpt:v1"]
    assert dry.kept == {"ckpt:v2": "upstream of eval:v1 (alias 'best')"}
    assert [v.ref for v in any_store.versions("ckpt")] == [m.ref for m in made]  # a dry run changes nothing
    real = any_store.prune("ckpt", keep_last=2, dry_run=False)
    assert (real.deleted, real.kept, real.bytes_freed) == (dry.deleted, dry.kept, dry.bytes_freed)
    assert real.bytes_freed == 4
    assert [v.ref for v in any_store.versions("ckpt")] == ["ckpt:v2", "ckpt:v4", "ckpt:v5"]
    with pytest.raises(ArtifactDeletedError, match="pruned by retention rule"):
        any_store.get("ckpt:v1")
    assert any_store.prune("ckpt", keep_last=2, dry_run=False).deleted == []


def test_prune_older_than_and_both_rules(any_store: ArtifactStore, make_file: MakeFile) -> None:
    made = [log_text(any_store, "team/a", f"a{i}", make_file) for i in range(1, 5)]
    other = [log_text(any_store, "solo", f"s{i}", make_file) for i in range(1, 3)]
    for artifact, days in zip(made, (40, 35, 31, 1), strict=True):
        age(any_store, artifact, days)
    for artifact in other:
        age(any_store, artifact, 100)
    assert any_store.prune("team/*", older_than="30d").deleted == ["team/a:v3", "team/a:v2", "team/a:v1"]
    assert any_store.prune("team/*", older_than=timedelta(days=32), keep_last=2).deleted == ["team/a:v2",
                                                                                                "team/a:v1"]
    everything = any_store.prune(older_than="50d")  # every name; the latest of each stays
    assert everything.deleted == ["solo:v1"] and everything.kept == {"solo:v2": "the latest version of solo"}


def test_prune_counts_only_blobs_no_remaining_version_uses(any_store: ArtifactStore, make_file: MakeFile) -> None:
    shared = make_file("shared.bin", b"0123456789")
    any_store.log(TraceletArtifact("d", "dataset").add_file(shared).add_file(make_file("x.bin", b"xyz")))
    any_store.log(TraceletArtifact("d", "dataset").add_file(shared))
    report = any_store.prune("d", keep_last=1, dry_run=False)
    assert report.deleted == ["d:v1"] and report.bytes_freed == 3
    assert any_store.gc(dry_run=False).bytes_freed == 3


def test_prune_refuses_bad_rules(any_store: ArtifactStore, make_file: MakeFile) -> None:
    log_text(any_store, "data", "1", make_file)
    log_text(any_store, "data", "2", make_file)
    for kwargs in ({"keep_last": 0}, {"keep_last": True}, {"older_than": "soon"}, {"older_than": "-3d"},
                   {"older_than": timedelta(0)}, {"older_than": 30}):
        with pytest.raises(InvalidArtifactError):
            any_store.prune("data", dry_run=False, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidArtifactError, match="may only end"):
        any_store.prune("da*ta", keep_last=1)
    assert len(any_store.versions("data")) == 2
    assert any_store.prune("data").deleted == []  # no rule and no policy: nothing
    with pytest.raises(ArtifactNotFoundError):
        any_store.prune("dta", keep_last=1)  # a typo is not "nothing to prune"


# -- stored policies --------------------------------------------------------------------------
def test_stored_policies_apply_the_most_specific_match(any_store: ArtifactStore, make_file: MakeFile) -> None:
    for name in ("team/a", "team/b", "other"):
        for i in range(1, 5):
            log_text(any_store, name, f"{name}{i}", make_file)
    any_store.set_retention("*", keep_last=3)
    any_store.set_retention("team/*", keep_last=2, older_than="12h")
    any_store.set_retention("team/b", keep_last=1)
    assert any_store.retention() == {"*": {"keep_last": 3, "older_than": None},
                                     "team/*": {"keep_last": 2, "older_than": "12h"},
                                     "team/b": {"keep_last": 1, "older_than": None}}
    report = any_store.prune(dry_run=False)  # team/a: nothing is 12h old yet
    assert report.deleted == ["other:v1", "team/b:v3", "team/b:v2", "team/b:v1"]
    any_store.remove_retention("team/b")
    assert set(any_store.retention()) == {"*", "team/*"}
    with pytest.raises(ArtifactNotFoundError):
        any_store.remove_retention("team/b")
    with pytest.raises(InvalidArtifactError):
        any_store.set_retention("team/*")  # no rule
    any_store.set_retention("team/*", keep_last=5)  # replaces
    assert any_store.retention()["team/*"] == {"keep_last": 5, "older_than": None}


# -- CLI --------------------------------------------------------------------------------------
def test_cli_delete_prune_and_retention(store_dir: Path, make_file: MakeFile) -> None:
    with ArtifactStore.open(store_dir) as store:
        for i in range(1, 5):
            log_text(store, "ckpt", f"c{i}", make_file)
        store.set_alias("ckpt:v2", "best")

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["--store", str(store_dir), *args])
        return result.exit_code, result.output

    code, out = run("delete", "ckpt:v2")
    assert code == 1 and "protected" in out and "force" in out
    assert run("delete", "ckpt:v2", "--force", "--reason", "bad") == (0, "deleted ckpt:v2 (aliases removed: best)\n")
    code, out = run("prune", "ckpt", "--keep-last", "2", "--json")
    assert code == 0 and json.loads(out) == {"dry_run": True, "deleted": ["ckpt:v1"], "kept": {},
                                             "bytes_freed": 2}
    code, out = run("prune", "ckpt", "--keep-last", "2", "--apply")
    assert code == 0 and "deleted ckpt:v1" in out and "1 version" in out
    assert run("retention", "set", "ckpt", "--keep-last", "1", "--older-than", "30d")[0] == 0
    code, out = run("retention", "ls", "--json")
    assert json.loads(out) == {"ckpt": {"keep_last": 1, "older_than": "30d"}}
    assert run("retention", "ls") == (0, "ckpt: keep last 1 and older than 30d\n")
    assert run("retention", "rm", "ckpt") == (0, "no retention policies\n")
    code, out = run("retention", "drop", "ckpt")
    assert code == 1 and "set, ls or rm" in out
    code, out = run("prune", "--older-than", "soon")
    assert code == 1 and "not a duration" in out
    code, out = run("delete", "ckpt:v1", "--json")
    assert code == 1 and "was deleted at" in out
    with ArtifactStore.open(store_dir) as store:
        assert [v.ref for v in store.versions("ckpt")] == ["ckpt:v3", "ckpt:v4"]


# -- schema -----------------------------------------------------------------------------------
def test_a_catalog_from_before_deletions_gains_them(catalog_url: str) -> None:
    """A schema 6 catalog (no tombstones, no policies) is upgraded in place by migration 7."""
    from sqlalchemy import delete as sql_delete
    from sqlalchemy import inspect, text

    from tracelet_core._catalog import Catalog, schema_table

    catalog = Catalog(catalog_url)
    with catalog.engine.begin() as conn:
        conn.execute(text("ALTER TABLE versions DROP COLUMN deleted_at"))
        conn.execute(text("ALTER TABLE versions DROP COLUMN deleted_reason"))
        conn.execute(text("DROP TABLE retention_policies"))
        conn.execute(sql_delete(schema_table).where(schema_table.c.version == 7))
    catalog.dispose()
    upgraded = Catalog(catalog_url)
    with upgraded.engine.connect() as conn:
        assert {"deleted_at", "deleted_reason"} <= {c["name"] for c in inspect(conn).get_columns("versions")}
        assert "retention_policies" in inspect(conn).get_table_names()
    upgraded.set_retention("*", 3, None)
    assert upgraded.retention_policies() == {"*": (3, None)}
    upgraded.dispose()


def test_a_delete_whose_commit_fails_leaves_no_tombstone(store: ArtifactStore, make_file: MakeFile) -> None:
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    first = log_text(store, "data", "1", make_file)
    second = log_text(store, "data", "2", make_file)
    store.delete(first.ref, reason="kept in the file")

    def fail(_conn: object) -> None:
        raise OperationalError("COMMIT", {}, ConnectionError("the connection dropped at commit"))

    event.listen(store.catalog.engine, "commit", fail)
    try:
        with pytest.raises(TraceletError):
            store.delete(second.ref)
    finally:
        event.remove(store.catalog.engine, "commit", fail)
    assert store.get(second.ref).digest == second.digest
    assert [(t["version"], t["reason"]) for t in store.blobs.read_tombstones("data")] == [(1, "kept in the file")]


def test_a_prune_racing_a_writer_loses_nothing_new(any_store: ArtifactStore, make_file: MakeFile) -> None:
    import threading

    logged: list[str] = []
    paths = [make_file(f"race-{i}.txt", f"content {i}") for i in range(12)]

    def writer() -> None:
        for path in paths:
            logged.append(any_store.log(TraceletArtifact("ckpt", "dataset").add_file(path, "data.txt")).ref)

    thread = threading.Thread(target=writer)
    thread.start()
    reports = []
    while thread.is_alive() or not reports:
        reports.append(any_store.prune("ckpt", keep_last=2, dry_run=False) if logged else None)
    thread.join()
    pruned = {ref for report in reports if report is not None for ref in report.deleted}
    live = [v.ref for v in any_store.versions("ckpt")]
    assert set(logged) == pruned | set(live) and not pruned & set(live)  # every version is one or the other
    assert logged[-2:] == live[-2:]  # the newest ones were never pruned
    for report in reports:
        if report is not None and report.deleted:  # each prune kept the two newest it saw
            assert len(report.deleted) <= len(logged) - 2


# -- alias history ----------------------------------------------------------------------------
def test_every_alias_change_is_recorded(any_store: ArtifactStore, make_file: MakeFile) -> None:
    from datetime import timezone

    run = RunInfo("dagster", "run-7", step="train")
    log_text(any_store, "model", "a", make_file, aliases=["prod"], producer=run)
    log_text(any_store, "model", "b", make_file)
    any_store.set_alias("model:v2", "prod", reason="better AUC")
    any_store.set_alias("model:v2", "prod")  # nothing moves: nothing recorded
    any_store.set_alias("model:v1", "staging")
    any_store.remove_alias("model", "staging", reason="done")
    again = log_text(any_store, "model", "b", make_file, aliases=["canary"], producer=run)  # the same content
    assert again.created is False
    any_store.delete("model:v2", force=True, reason="leak")
    history = any_store.alias_history("model")
    assert [(c.alias, c.before, c.after, c.reason) for c in history] == [
        ("prod", None, "model:v1", None), ("prod", "model:v1", "model:v2", "better AUC"),
        ("staging", None, "model:v1", None), ("staging", "model:v1", None, "done"),
        ("canary", None, "model:v2", None),
        ("canary", "model:v2", None, "model:v2 deleted: leak"), ("prod", "model:v2", None, "model:v2 deleted: leak")]
    assert history[0].by is not None and history[0].by.run_id == "run-7" and history[1].by is None
    assert history[4].by == history[0].by
    assert history[0].at.tzinfo == timezone.utc and history[0].at <= history[-1].at
    assert [c.after for c in any_store.alias_history("model", "staging")] == ["model:v1", None]
    assert json.loads(json.dumps([c.to_dict() for c in history]))[1]["reason"] == "better AUC"
    with pytest.raises(ArtifactNotFoundError):
        any_store.alias_history("nothing")
    with pytest.raises(InvalidArtifactError):
        any_store.set_alias("model:v1", "prod", reason=1)  # type: ignore[arg-type]
    assert [c.alias for c in any_store.alias_history("model")][-1] == "prod"  # the refused move left no trace


def test_reindex_names_an_alias_whose_move_never_committed(store_dir: Path, make_file: MakeFile,
                                                           tmp_path: Path) -> None:
    """A journal one move ahead (the writer died before its commit): reindex keeps the previous
    target and says so; the CLI prints it and exits 1."""
    with ArtifactStore.open(store_dir, catalog_url=f"sqlite:///{tmp_path / 'lost.db'}") as store:
        v1 = log_text(store, "data", "1", make_file)
        log_text(store, "data", "2", make_file)
        store.set_alias(v1.ref, "prod")
        store.blobs.write_alias_journal("data", {"format": 2, "aliases": {
            "prod": [{"version": 3, "digest": "blake3:" + "0" * 64}, {"version": 1, "digest": v1.digest}]}})
    with ArtifactStore.open(store_dir, catalog_url=f"sqlite:///{tmp_path / 'fresh.db'}") as fresh:
        report = fresh.reindex()
        assert report == ["data:v1", "data:v2"] and report.skipped == []
        assert report.unsettled_aliases == {"data:prod": "data:v1"} and not report.clean
        assert fresh.get("data:prod").ref == "data:v1"
    result = CliRunner().invoke(app, ["--store", str(store_dir), "--catalog", f"sqlite:///{tmp_path / 'cli.db'}",
                                      "reindex"])
    assert result.exit_code == 1
    assert "unsettled alias data:prod: its last move never committed; kept data:v1" in result.stdout
    assert "1 unsettled alias" in result.output
