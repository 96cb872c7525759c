"""The ``tracelet`` command line, run in-process through typer's ``CliRunner`` (the real app,
the real store) and, for the entry point and real exit codes, as a subprocess."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from backend_support import FolderBackend
from support import MakeFile
from typer.testing import CliRunner, Result

from tracelet_core import ArtifactStore, Experiment, RunInfo, TraceletArtifact
from tracelet_core.cli import app
from tracelet_core.cli._app import one_line

runner = CliRunner()
BIG = 9 * 1024 * 1024  # above the store's progress-bar threshold


def run_cli(store_dir: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, ["--store", str(store_dir), *args], env=env)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert result.stderr == ""
    return result.stdout


def ok_json(result: Result) -> object:
    return json.loads(ok(result))


def assert_one_line_error(result: Result, *fragments: str) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit)  # no exception escaped the command
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def blob_file(store_dir: Path, digest: str) -> Path:
    hexdigest = digest.split(":", 1)[1]
    return store_dir / "blobs" / hexdigest[:2] / hexdigest  # the documented layout


def make_orphan_blob(store_dir: Path, age_seconds: float = 120.0) -> str:
    """A blob no version refers to, last modified ``age_seconds`` ago."""
    digest = "blake3:" + "ab" * 32
    path = blob_file(store_dir, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"orphan")
    past = time.time() - age_seconds
    os.utime(path, (past, past))
    return digest


@pytest.fixture
def pipeline(store: ArtifactStore) -> dict[str, str]:
    """raw -> features (no producer) -> model (prefect run) -> report (dagster run)."""
    raw = store.log(TraceletArtifact("data/raw", "dataset").add_object({"rows": 3}, "raw"))
    features = store.log(TraceletArtifact("data/features", "dataset").add_object([1, 2], "x"),
                         inputs=[raw])
    model = store.log(TraceletArtifact("clf", "model", description="a classifier")
                      .add_object({"w": [0.5]}, "model"),
                      producer=RunInfo("prefect", "run-1", step="train"),
                      inputs=[features, raw], aliases=["production"])
    report = store.log(TraceletArtifact("report", "report").add_object({"acc": 0.9}, "scores"),
                       producer=RunInfo("dagster", "run-2", step="evaluate"), inputs=[model])
    return {"raw": raw.ref, "features": features.ref, "model": model.ref, "report": report.ref}


# -- log --------------------------------------------------------------------------------------
def test_log_file_prints_the_new_ref(store_dir: Path, make_file: MakeFile) -> None:
    path = make_file("weights.bin", b"\x00\x01")
    assert ok(run_cli(store_dir, "log", str(path), "--name", "w", "--type", "weights")) == "w:v1\n"
    with ArtifactStore.open(store_dir) as store:
        logged = store.get("w:v1")
        assert logged.type.value == "weights"
        assert [f.path for f in logged.files] == ["weights.bin"]


def test_log_json_reports_the_whole_version(store_dir: Path, make_file: MakeFile) -> None:
    path = make_file("config.yaml", "lr: 0.1\n")
    data = ok_json(run_cli(store_dir, "log", str(path), "--name", "team/config", "--type", "config",
                           "--alias", "best", "-a", "candidate", "--description", "tuned",
                           "--json"))
    assert isinstance(data, dict)
    assert data["ref"] == "team/config:v1"
    assert data["type"] == "config"
    assert sorted(data["aliases"]) == ["best", "candidate"]
    assert data["description"] == "tuned"
    assert [f["path"] for f in data["files"]] == ["config.yaml"]
    assert data["files"][0]["digest"].startswith("blake3:")
    assert data["size_bytes"] == len("lr: 0.1\n")


def test_log_directory_adds_every_file(store_dir: Path, make_file: MakeFile) -> None:
    make_file("ds/train/a.csv", "a")
    make_file("ds/test/b.csv", "bb")
    data = ok_json(run_cli(store_dir, "log", str(make_file("ds/README", "r").parent),
                           "--name", "ds", "--type", "dataset", "--json"))
    assert isinstance(data, dict)
    assert sorted(f["path"] for f in data["files"]) == ["README", "test/b.csv", "train/a.csv"]


def test_log_without_type_is_custom_and_unchanged_content_keeps_the_version(
        store_dir: Path, make_file: MakeFile) -> None:
    path = make_file("notes.txt", "same")
    assert ok(run_cli(store_dir, "log", str(path), "--name", "notes")) == "notes:v1\n"
    assert ok(run_cli(store_dir, "log", str(path), "--name", "notes")) == "unchanged: kept notes:v1\n"
    path.write_text("changed")
    assert ok(run_cli(store_dir, "log", str(path), "--name", "notes")) == "notes:v2\n"
    shown = ok_json(run_cli(store_dir, "show", "notes", "--json"))
    assert isinstance(shown, dict) and shown["type"] == "custom"


# -- ls ---------------------------------------------------------------------------------------
def test_ls_on_an_empty_store(store_dir: Path, store: ArtifactStore) -> None:
    assert ok(run_cli(store_dir, "ls")) == "no artifacts\n"
    assert ok_json(run_cli(store_dir, "ls", "--json")) == []


def test_ls_table_shows_latest_versions(store_dir: Path, pipeline: dict[str, str]) -> None:
    out = ok(run_cli(store_dir, "ls"))
    for header in ("REF", "TYPE", "ALIASES", "SIZE", "CREATED"):
        assert header in out
    for ref in pipeline.values():
        assert ref in out
    assert "production" in out


def test_ls_json_filters_by_name_and_type(store_dir: Path, pipeline: dict[str, str]) -> None:
    everything = ok_json(run_cli(store_dir, "ls", "--json"))
    assert isinstance(everything, list)
    assert sorted(a["ref"] for a in everything) == sorted(pipeline.values())
    model = next(a for a in everything if a["name"] == "clf")
    assert model["type"] == "model" and model["aliases"] == ["production"]
    assert model["version"] == "v1" and model["size_bytes"] > 0
    assert model["digest"].startswith("blake3:") and model["created_at"]

    under_data = ok_json(run_cli(store_dir, "ls", "data", "--json"))
    assert isinstance(under_data, list)
    assert sorted(a["name"] for a in under_data) == ["data/features", "data/raw"]
    reports = ok_json(run_cli(store_dir, "ls", "--type", "report", "--json"))
    assert isinstance(reports, list) and [a["ref"] for a in reports] == [pipeline["report"]]


def test_ls_shows_only_the_latest_version(store_dir: Path, make_file: MakeFile) -> None:
    path = make_file("a.txt", "1")
    ok(run_cli(store_dir, "log", str(path), "--name", "a"))
    path.write_text("2")
    ok(run_cli(store_dir, "log", str(path), "--name", "a"))
    listed = ok_json(run_cli(store_dir, "ls", "--json"))
    assert isinstance(listed, list) and [a["ref"] for a in listed] == ["a:v2"]


# -- show -------------------------------------------------------------------------------------
def test_show_text_names_entries_producer_inputs_and_aliases(
        store_dir: Path, pipeline: dict[str, str]) -> None:
    out = ok(run_cli(store_dir, "show", "clf:production"))
    for expected in ("clf:v1", "(model)", "production", "a classifier", "prefect run run-1 / train",
                     "data/features:v1", "data/raw:v1", "model.json", "json", "objects"):
        assert expected in out


def test_show_json_is_to_dict(store_dir: Path, store: ArtifactStore, make_file: MakeFile) -> None:
    artifact = (TraceletArtifact("bundle", "model", metadata={"lr": 0.1})
                .add_file(make_file("w.bin", b"123"), "weights/w.bin")
                .add_object({"k": "v"}, "params")
                .add_reference("https://example.com/data.csv", size_bytes=10, name="data.csv"))
    inp = store.log(TraceletArtifact("src", "dataset").add_object([1], "rows"))
    logged = store.log(artifact, producer=RunInfo("dagster", "r9", step="s"), inputs=[inp],
                       aliases=["best"])
    data = ok_json(run_cli(store_dir, "show", "bundle:v1", "--json"))
    assert data == {**logged.to_dict(), "created": False}  # show never creates
    assert isinstance(data, dict)
    assert data["files"][0]["path"] == "weights/w.bin"
    assert data["objects"][0]["name"] == "params"
    assert data["references"][0]["uri"] == "https://example.com/data.csv"
    assert data["producer"]["orchestrator"] == "dagster" and data["producer"]["step"] == "s"
    assert data["inputs"] == ["src:v1"] and data["aliases"] == ["best"]
    assert data["metadata"] == {"lr": 0.1}

    out = ok(run_cli(store_dir, "show", "bundle"))
    for expected in ("files", "weights/w.bin", "references", "https://example.com/data.csv",
                     "dagster run r9 / s", '{"lr": 0.1}', "src:v1"):
        assert expected in out


def test_show_prints_user_text_literally(store_dir: Path, store: ArtifactStore) -> None:
    store.log(TraceletArtifact("odd", description="[bold]not markup[/x]").add_object(1, "one"))
    assert "[bold]not markup[/x]" in ok(run_cli(store_dir, "show", "odd"))


# -- get --------------------------------------------------------------------------------------
def test_get_writes_the_exact_bytes(store_dir: Path, tmp_path: Path, make_file: MakeFile) -> None:
    content = bytes(range(256)) * 7
    make_file("model/weights.bin", content)
    make_file("model/sub/config.json", '{"a": 1}')
    ok(run_cli(store_dir, "log", str(tmp_path / "files" / "model"), "--name", "m", "-t", "model"))
    dest = tmp_path / "out"
    out = ok(run_cli(store_dir, "get", "m:latest", "-o", str(dest)))
    assert "m:v1" in out and "2 files" in out
    assert (dest / "weights.bin").read_bytes() == content
    assert (dest / "sub" / "config.json").read_text() == '{"a": 1}'


def test_get_json(store_dir: Path, tmp_path: Path, pipeline: dict[str, str]) -> None:
    dest = tmp_path / "fetched"
    data = ok_json(run_cli(store_dir, "get", pipeline["model"], "--output", str(dest), "--json"))
    assert data == {"ref": "clf:v1", "path": str(dest.resolve()), "files": ["model.json"]}
    assert json.loads((dest / "model.json").read_text()) == {"w": [0.5]}


def test_get_a_corrupted_blob_fails_with_one_line(
        store_dir: Path, tmp_path: Path, store: ArtifactStore, make_file: MakeFile) -> None:
    logged = store.log(TraceletArtifact("c").add_file(make_file("c.txt", "good")))
    corrupt(blob_file(store_dir, logged.files[0].digest or ""))
    result = run_cli(store_dir, "get", "c", "-o", str(tmp_path / "out"))
    assert_one_line_error(result, "corrupted")
    assert not (tmp_path / "out").exists()  # nothing left behind: no folder, no staging copy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["files", "store"]


# -- lineage ----------------------------------------------------------------------------------
def test_lineage_text_is_a_tree_upstream(store_dir: Path, pipeline: dict[str, str]) -> None:
    out = ok(run_cli(store_dir, "lineage", "clf"))
    lines = out.splitlines()
    assert lines[0].startswith("clf:v1 (model)") and "production" in lines[0]
    assert "prefect: train (run run-1)" in out
    assert "data/features:v1" in out and "data/raw:v1" in out
    assert "report" not in out  # downstream of the model, not upstream


def test_lineage_text_downstream(store_dir: Path, pipeline: dict[str, str]) -> None:
    out = ok(run_cli(store_dir, "lineage", "data/raw", "--downstream"))
    assert out.splitlines()[0].startswith("data/raw:v1")
    for expected in ("data/features:v1", "clf:v1", "dagster: evaluate (run run-2)", "report:v1"):
        assert expected in out


def test_lineage_json(store_dir: Path, pipeline: dict[str, str]) -> None:
    data = ok_json(run_cli(store_dir, "lineage", "report:v1", "--format", "json"))
    assert isinstance(data, dict)
    assert data["root"] == "report:v1" and data["direction"] == "upstream"
    ids = {n["id"] for n in data["nodes"]}
    assert {"report:v1", "clf:v1", "data/features:v1", "data/raw:v1",
            "run:prefect/run-1/train", "run:dagster/run-2/evaluate"} <= ids
    assert {"source": "run:dagster/run-2/evaluate", "target": "report:v1",
            "relation": "produced"} in data["edges"]


def test_lineage_depth_limits_the_walk(store_dir: Path, pipeline: dict[str, str]) -> None:
    data = ok_json(run_cli(store_dir, "lineage", "report", "-f", "json", "--depth", "1"))
    assert isinstance(data, dict)
    ids = {n["id"] for n in data["nodes"]}
    assert "clf:v1" in ids and "data/raw:v1" not in ids
    root_only = ok_json(run_cli(store_dir, "lineage", "report", "-f", "json", "--depth", "0"))
    assert isinstance(root_only, dict) and [n["id"] for n in root_only["nodes"]] == ["report:v1"]


def test_lineage_mermaid(store_dir: Path, pipeline: dict[str, str]) -> None:
    out = ok(run_cli(store_dir, "lineage", "clf", "--format", "mermaid"))
    assert out.startswith("graph LR\n")
    assert '["clf:v1 (model)"]' in out
    assert '(["prefect: train (run run-1)"])' in out
    assert "-->" in out


def test_lineage_dot_downstream(store_dir: Path, pipeline: dict[str, str]) -> None:
    out = ok(run_cli(store_dir, "lineage", "clf:v1", "--downstream", "--format", "dot"))
    assert out.startswith("digraph lineage {")
    assert out.rstrip().endswith("}")
    assert '"clf:v1" -> "run:dagster/run-2/evaluate" [label="consumed"];' in out
    assert '"run:dagster/run-2/evaluate" -> "report:v1" [label="produced"];' in out


def test_lineage_rejects_an_unknown_format(store_dir: Path, pipeline: dict[str, str]) -> None:
    result = run_cli(store_dir, "lineage", "clf", "--format", "png")
    assert result.exit_code == 2  # typer's own usage error


# -- alias ------------------------------------------------------------------------------------
def test_alias_then_show(store_dir: Path, make_file: MakeFile) -> None:
    path = make_file("m.txt", "1")
    ok(run_cli(store_dir, "log", str(path), "--name", "m"))
    path.write_text("2")
    ok(run_cli(store_dir, "log", str(path), "--name", "m"))
    assert ok(run_cli(store_dir, "alias", "m:v1", "production")) == "m:production -> m:v1\n"
    shown = ok_json(run_cli(store_dir, "show", "m:production", "--json"))
    assert isinstance(shown, dict) and shown["ref"] == "m:v1" and shown["aliases"] == ["production"]
    assert "production" in ok(run_cli(store_dir, "show", "m:v1"))

    moved = ok_json(run_cli(store_dir, "alias", "m:latest", "production", "--json"))
    assert moved == {"name": "m", "alias": "production", "ref": "m:v2", "aliases": ["production"]}
    v1 = ok_json(run_cli(store_dir, "show", "m:v1", "--json"))
    assert isinstance(v1, dict) and v1["aliases"] == []


def test_alias_reports_the_trackers_it_updated(store_dir: Path, store: ArtifactStore, tracker: FolderBackend) -> None:
    with Experiment("e", backend=[tracker], store=store) as exp:
        exp.log_artifact(exp.create_artifact("cfg", "config").add_object({"v": 1}, "c"))
    assert ok(run_cli(store_dir, "alias", "cfg:v1", "prod")) == "cfg:prod -> cfg:v1\ntrackers: folder updated\n"
    assert tracker.alias_moves() == [["set", "cfg:v1", "prod"]]
    (tracker.root / "DOWN").write_text("")
    removed = ok_json(run_cli(store_dir, "alias", "cfg", "prod", "--remove", "--json"))
    assert isinstance(removed, dict) and removed["trackers"]["folder"].startswith("failed: ")
    assert "tracker unreachable" in removed["trackers"]["folder"]


def test_alias_remove(store_dir: Path, pipeline: dict[str, str]) -> None:
    assert ok(run_cli(store_dir, "alias", "clf", "production", "--remove")) == \
        "removed alias 'production' from clf\n"
    shown = ok_json(run_cli(store_dir, "show", "clf", "--json"))
    assert isinstance(shown, dict) and shown["aliases"] == []
    assert_one_line_error(run_cli(store_dir, "show", "clf:production"), "production")
    assert_one_line_error(run_cli(store_dir, "alias", "clf", "production", "--remove"),
                          "no alias 'production'")


def test_alias_history_lists_every_change_with_its_reason(store_dir: Path, make_file: MakeFile) -> None:
    path = make_file("m.txt", "1")
    ok(run_cli(store_dir, "log", str(path), "--name", "m"))
    path.write_text("2")
    ok(run_cli(store_dir, "log", str(path), "--name", "m"))
    ok(run_cli(store_dir, "alias", "m:v1", "production", "--reason", "first release"))
    ok(run_cli(store_dir, "alias", "m:v2", "production", "--reason", "retrained"))
    ok(run_cli(store_dir, "alias", "m", "production", "--remove", "--reason", "rollback"))

    changes = ok_json(run_cli(store_dir, "alias", "history", "m", "--json"))
    assert isinstance(changes, list)
    assert [(c["alias"], c["before"], c["after"], c["reason"]) for c in changes] == [
        ("production", None, "m:v1", "first release"),
        ("production", "m:v1", "m:v2", "retrained"),
        ("production", "m:v2", None, "rollback"),
    ]
    lines = ok(run_cli(store_dir, "alias", "history", "m")).splitlines()
    assert len(lines) == 3 and lines[1].endswith("m:production  m:v1 -> m:v2 (retrained)")
    assert_one_line_error(run_cli(store_dir, "alias", "history", "nope"), "nope")


# -- verify -----------------------------------------------------------------------------------
def corrupt(path: Path) -> None:
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    path.write_bytes(b"tampered")


def test_verify_ok(store_dir: Path, pipeline: dict[str, str]) -> None:
    assert ok(run_cli(store_dir, "verify")) == "ok: 4 versions verified\n"
    assert ok(run_cli(store_dir, "verify", "clf")) == "ok: 1 version verified\n"
    data = ok_json(run_cli(store_dir, "verify", "--json"))
    assert isinstance(data, dict) and data["ok"] is True
    assert sorted(data["checked"]) == sorted(pipeline.values())


def test_verify_reports_every_problem_and_exits_1(store_dir: Path, store: ArtifactStore,
                                                  make_file: MakeFile) -> None:
    logged = store.log(TraceletArtifact("pair")
                       .add_file(make_file("a.txt", "aaa"))
                       .add_file(make_file("b.txt", "bbb")))
    store.log(TraceletArtifact("fine").add_file(make_file("c.txt", "ccc")))
    for entry in logged.files:
        corrupt(blob_file(store_dir, entry.digest or ""))

    result = run_cli(store_dir, "verify")
    assert_one_line_error(result, "2 problems found")
    problems = result.stdout.splitlines()
    assert len(problems) == 2
    assert any("pair:v1: a.txt" in p for p in problems)
    assert any("pair:v1: b.txt" in p for p in problems)

    assert ok(run_cli(store_dir, "verify", "fine")) == "ok: 1 version verified\n"

    as_json = run_cli(store_dir, "verify", "pair", "--json")
    assert_one_line_error(as_json, "2 problems found")
    data = json.loads(as_json.stdout)
    assert data["ok"] is False and len(data["problems"]) == 2


# -- gc ---------------------------------------------------------------------------------------
def test_gc_dry_run_then_delete(store_dir: Path, pipeline: dict[str, str]) -> None:
    orphan = make_orphan_blob(store_dir)
    path = blob_file(store_dir, orphan)

    assert ok(run_cli(store_dir, "gc", "--dry-run")).startswith("would remove 0 blobs")  # too young
    preview = ok(run_cli(store_dir, "gc", "--dry-run", "--grace", "0"))
    assert preview.startswith("would remove 1 blob,") and orphan in preview
    assert path.exists()

    report = ok_json(run_cli(store_dir, "gc", "--grace", "0", "--json"))
    assert isinstance(report, dict)
    assert report["dry_run"] is False and report["blobs"] == [orphan]
    assert not path.exists()
    ok(run_cli(store_dir, "verify"))  # nothing a version needs was touched
    assert ok(run_cli(store_dir, "gc", "--grace", "0")).startswith("removed 0 blobs")


def test_gc_json_dry_run(store_dir: Path, store: ArtifactStore) -> None:
    orphan = make_orphan_blob(store_dir)
    report = ok_json(run_cli(store_dir, "gc", "--dry-run", "--grace", "0", "--json"))
    assert isinstance(report, dict)
    assert report["dry_run"] is True and report["blobs"] == [orphan]
    assert blob_file(store_dir, orphan).exists()


def test_gc_refuses_a_negative_grace(store_dir: Path) -> None:
    assert run_cli(store_dir, "gc", "--grace", "-1").exit_code == 2


# -- sync, reindex ----------------------------------------------------------------------------
def test_sync_reports_retried_deliveries(store_dir: Path, store: ArtifactStore) -> None:
    assert ok(run_cli(store_dir, "sync")) == "retried 0 deliveries\n"
    assert ok_json(run_cli(store_dir, "sync", "--json")) == {"retried": 0, "delivered": 0, "results": []}


def test_reindex_rebuilds_a_lost_catalog(store_dir: Path, make_file: MakeFile) -> None:
    ok(run_cli(store_dir, "log", str(make_file("a.txt", "a")), "--name", "a", "--alias", "best"))
    ok(run_cli(store_dir, "log", str(make_file("b.txt", "b")), "--name", "b"))
    assert ok(run_cli(store_dir, "reindex")) == "added 0 versions\n"
    for leftover in store_dir.glob("catalog.db*"):
        leftover.unlink()
    assert_one_line_error(run_cli(store_dir, "ls"), "catalog", "tracelet --store", "reindex")
    assert not (store_dir / "catalog.db").exists()  # ls created no empty catalog

    rebuilt = run_cli(store_dir, "reindex")  # it found versions the catalog lacked: exit 1
    assert rebuilt.stdout == "a:v1\nb:v1\nadded 2 versions\n"
    assert_one_line_error(rebuilt, "the catalog was not clean", "2 missing versions")
    shown = ok_json(run_cli(store_dir, "show", "a:best", "--json"))
    assert isinstance(shown, dict) and shown["ref"] == "a:v1"
    assert ok_json(run_cli(store_dir, "reindex", "--json")) == {"added": []}


# -- global options ---------------------------------------------------------------------------
def test_store_defaults_to_the_environment(tmp_path: Path, make_file: MakeFile) -> None:
    path = make_file("env.txt", "e")
    assert ok(runner.invoke(app, ["log", str(path), "--name", "env"])) == "env:v1\n"
    assert (tmp_path / "default-store" / "catalog.db").exists()  # TRACELET_STORE_URI (conftest)
    other = tmp_path / "from-env"
    result = runner.invoke(app, ["log", str(path), "-n", "env", "--json"], env={"TRACELET_STORE_URI": str(other)})
    assert isinstance(data := ok_json(result), dict) and data["created"] is True
    assert (other / "catalog.db").exists()


def test_catalog_option_picks_the_catalog(store_dir: Path, tmp_path: Path,
                                          make_file: MakeFile) -> None:
    catalog = tmp_path / "elsewhere.db"
    url = f"sqlite:///{catalog}"
    ok(run_cli(store_dir, "--catalog", url, "log", str(make_file("x.txt")), "--name", "x"))
    assert catalog.exists() and not (store_dir / "catalog.db").exists()
    listed = ok_json(run_cli(store_dir, "--catalog", url, "ls", "--json"))
    assert isinstance(listed, list) and [a["ref"] for a in listed] == ["x:v1"]


def test_version_option() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("tracelet ")


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "Usage" in result.output and "lineage" in result.output


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "fragment"), [
    (["show", "nope"], "nope"),
    (["show", "clf:v9"], "v9"),
    (["show", "../x"], "invalid artifact name"),
    (["show", "clf:bad alias"], "invalid version or alias"),
    (["get", "nope:v1", "-o", "out"], "nope"),
    (["lineage", "nope"], "nope"),
    (["lineage", "a//b"], "invalid artifact name"),
    (["alias", "nope:v1", "prod"], "nope"),
    (["alias", "clf:v1", "latest"], "latest"),
    (["alias", "clf:v1", "v7"], "shadow a version"),
    (["verify", "nope"], "nope"),
    (["ls", "--type", "bogus"], "unknown artifact type 'bogus'"),
    (["ls", "../x"], "invalid artifact name"),
    (["log", "missing.txt", "--name", "x"], "no such file or directory"),
    (["log", "{file}", "--name", "../x"], "invalid artifact name"),
    (["log", "{file}", "--name", "x", "--type", "bogus"], "unknown artifact type"),
    (["log", "{file}", "--name", "x", "--alias", "latest"], "latest"),
])
def test_bad_input_is_one_stderr_line_and_exit_1(store_dir: Path, make_file: MakeFile,
                                                 pipeline: dict[str, str], args: list[str],
                                                 fragment: str) -> None:
    file = str(make_file("input.txt", "x"))
    result = run_cli(store_dir, *[file if a == "{file}" else a for a in args])
    assert_one_line_error(result, fragment)
    assert result.stdout == ""


@pytest.mark.parametrize("args", [
    ["--store", "s3://bucket/prefix", "ls"],  # remote store without a catalog
    ["--store", "", "ls"],
    ["--catalog", "not a url", "ls"],
])
def test_configuration_errors_are_one_line(args: list[str]) -> None:
    assert_one_line_error(runner.invoke(app, args))


def test_usage_errors_keep_exit_code_2(store_dir: Path) -> None:
    assert run_cli(store_dir, "show").exit_code == 2
    assert run_cli(store_dir, "log", "x").exit_code == 2  # --name is required
    assert run_cli(store_dir, "frobnicate").exit_code == 2


def test_one_line_folds_multi_line_messages() -> None:
    folded = one_line("2 problem(s) found:\n  a: bad\n  b: bad\n")
    assert folded == "2 problem(s) found: a: bad; b: bad"
    assert one_line("single") == "single"
    assert one_line("\n") == "unknown error"


# -- progress bars and --json -----------------------------------------------------------------
def test_progress_bars_never_reach_json_output(store_dir: Path, tmp_path: Path,
                                               make_file: MakeFile) -> None:
    big = make_file("big.bin", os.urandom(BIG))
    terminal = {"TTY_COMPATIBLE": "1"}  # rich draws bars as if stdout were a terminal

    shown = run_cli(store_dir, "log", str(big), "--name", "big", "--json", env=terminal)
    data = ok_json(shown)
    assert isinstance(data, dict) and data["size_bytes"] == BIG
    dest = tmp_path / "o"
    fetched = ok_json(run_cli(store_dir, "get", "big", "-o", str(dest), "--json", env=terminal))
    assert fetched == {"ref": "big:v1", "path": str(dest.resolve()), "files": ["big.bin"]}
    assert (dest / "big.bin").read_bytes() == big.read_bytes()

    with_bar = run_cli(store_dir, "get", "big", "-o", str(tmp_path / "p"), env=terminal)
    assert with_bar.exit_code == 0
    assert "download big:v1" in with_bar.stderr  # without --json the CLI shows progress, on stderr
    assert "download big:v1" not in with_bar.stdout


@pytest.mark.parametrize("args", [
    ["ls", "--json"], ["show", "clf", "--json"], ["lineage", "clf", "--format", "json"],
    ["alias", "clf:v1", "best", "--json"], ["verify", "--json"], ["gc", "--dry-run", "--json"],
    ["sync", "--json"], ["reindex", "--json"],
])
def test_json_output_is_one_document(store_dir: Path, pipeline: dict[str, str],
                                     args: list[str]) -> None:
    result = run_cli(store_dir, *args)
    json.loads(ok(result))


# -- the installed entry point ------------------------------------------------------------------
def tracelet_script() -> Path:
    name = "tracelet.exe" if sys.platform == "win32" else "tracelet"
    return Path(sys.executable).with_name(name)


def test_console_script_round_trip_and_exit_codes(store_dir: Path, make_file: MakeFile) -> None:
    script = str(tracelet_script())
    path = make_file("real.txt", "real")

    logged = subprocess.run([script, "--store", str(store_dir), "log", str(path), "--name", "real",
                             "--json"], capture_output=True, text=True, check=False)
    assert logged.returncode == 0, logged.stderr
    assert json.loads(logged.stdout)["ref"] == "real:v1"

    missing = subprocess.run([script, "--store", str(store_dir), "show", "real:v2"],
                             capture_output=True, text=True, check=False)
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr.splitlines() == [
        "error: artifact 'real' has no version or alias 'v2'; real has 1 version (v1), no aliases"]


def test_python_dash_m_runs_the_cli(store_dir: Path) -> None:
    bad = subprocess.run([sys.executable, "-m", "tracelet_core.cli", "--store", str(store_dir),
                          "log", "does-not-exist", "--name", "x"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert len(bad.stderr.splitlines()) == 1 and "Traceback" not in bad.stderr
    usage = subprocess.run([sys.executable, "-m", "tracelet_core.cli", "show"],
                           capture_output=True, text=True, check=False)
    assert usage.returncode == 2


# -- round 2: where --store goes, stores that are not there, created, safe get, labels ----------
STORE_COMMANDS = ["ls", "show", "get", "lineage", "alias", "verify", "gc", "sync", "log", "reindex"]


@pytest.mark.parametrize("args", [["ls", "--json"], ["show", "clf", "--json"], ["verify"],
                                  ["lineage", "clf", "-f", "json"]])
def test_store_option_works_after_the_subcommand(store_dir: Path, tmp_path: Path,
                                                 pipeline: dict[str, str], args: list[str]) -> None:
    before = ok(runner.invoke(app, ["--store", str(store_dir), *args]))
    after = ok(runner.invoke(app, [*args, "--store", str(store_dir)]))
    assert after == before
    # Given twice, the one after the subcommand wins.
    other = tmp_path / "other"
    assert ok(runner.invoke(app, ["--store", str(other), *args, "--store", str(store_dir)])) == before
    assert not other.exists()


def test_catalog_option_works_after_the_subcommand(store_dir: Path, tmp_path: Path, make_file: MakeFile) -> None:
    url = f"sqlite:///{tmp_path / 'side.db'}"
    ok(runner.invoke(app, ["log", str(make_file("x.txt")), "-n", "x", "--store", str(store_dir), "--catalog", url]))
    assert (tmp_path / "side.db").exists() and not (store_dir / "catalog.db").exists()


@pytest.mark.parametrize("command", STORE_COMMANDS)
def test_every_store_command_takes_store_and_catalog(command: str) -> None:
    help_text = ok(runner.invoke(app, [command, "--help"]))
    assert "--store URI" in help_text and "--catalog URL" in help_text


@pytest.mark.parametrize("args", [["ls"], ["ls", "--json"], ["show", "clf"], ["get", "clf", "-o", "{tmp}/out"],
                                  ["lineage", "clf"], ["verify"], ["gc"], ["gc", "--dry-run"], ["sync"], ["reindex"],
                                  ["alias", "clf:v1", "best"], ["alias", "clf", "best", "--remove"],
                                  ["versions", "clf"], ["export-lineage"]])
@pytest.mark.parametrize("where", ["missing", "empty folder"])
def test_every_command_but_log_on_a_missing_store_exits_1_and_creates_nothing(
        tmp_path: Path, args: list[str], where: str) -> None:
    store_dir = tmp_path / "nowhere" / "store"
    if where == "empty folder":
        store_dir.mkdir(parents=True)
    result = run_cli(store_dir, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert_one_line_error(result, "no tracelet store at", str(store_dir))
    assert result.stdout == ""
    if where == "missing":
        assert not (tmp_path / "nowhere").exists()
    else:
        assert list(store_dir.iterdir()) == []
    assert not (tmp_path / "out").exists()


def test_read_only_commands_check_the_store_from_the_environment(tmp_path: Path) -> None:
    missing = tmp_path / "env-store"
    result = runner.invoke(app, ["ls"], env={"TRACELET_STORE_URI": str(missing)})
    assert_one_line_error(result, "no tracelet store at")
    assert not missing.exists()


def test_an_empty_catalog_beside_manifests_says_to_reindex(store_dir: Path, tmp_path: Path,
                                                           pipeline: dict[str, str]) -> None:
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert_one_line_error(run_cli(store_dir, "--catalog", fresh, "ls"), "catalog", "empty", "tracelet reindex")
    assert run_cli(store_dir, "--catalog", fresh, "reindex").exit_code == 1  # it added the versions
    assert ok(run_cli(store_dir, "--catalog", fresh, "reindex")) == "added 0 versions\n"
    assert "clf:v1" in ok(run_cli(store_dir, "--catalog", fresh, "ls"))


def test_log_says_whether_it_created_the_version(store_dir: Path, make_file: MakeFile) -> None:
    path = make_file("notes.txt", "same")
    first = ok_json(run_cli(store_dir, "log", str(path), "-n", "notes", "--json"))
    again = ok_json(run_cli(store_dir, "log", str(path), "-n", "notes", "--json"))
    assert isinstance(first, dict) and isinstance(again, dict)
    assert (first["ref"], first["created"]) == ("notes:v1", True)
    assert (again["ref"], again["created"]) == ("notes:v1", False)
    assert ok(run_cli(store_dir, "log", str(path), "-n", "notes")) == "unchanged: kept notes:v1\n"
    shown = ok_json(run_cli(store_dir, "show", "notes", "--json"))
    assert isinstance(shown, dict) and shown["created"] is False


def test_get_refuses_a_folder_that_is_not_empty(store_dir: Path, tmp_path: Path,
                                                pipeline: dict[str, str]) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me")
    assert_one_line_error(run_cli(store_dir, "get", "clf", "-o", str(dest)), "not empty", "--force")
    assert [p.name for p in dest.iterdir()] == ["mine.txt"]

    ok(run_cli(store_dir, "get", "clf", "-o", str(dest), "--force"))
    assert sorted(p.name for p in dest.iterdir()) == ["mine.txt", "model.json"]
    assert json.loads((dest / "model.json").read_text()) == {"w": [0.5]}
    assert not list(tmp_path.glob(".tracelet-get-*"))


def test_get_of_another_version_into_a_used_folder_does_not_merge(store_dir: Path, tmp_path: Path,
                                                                  make_file: MakeFile) -> None:
    ok(run_cli(store_dir, "log", str(make_file("a.txt", "a")), "-n", "doc"))
    ok(run_cli(store_dir, "log", str(make_file("b.txt", "b")), "-n", "doc"))
    dest = tmp_path / "doc"
    ok(run_cli(store_dir, "get", "doc:v1", "-o", str(dest)))
    assert ok(run_cli(store_dir, "get", "doc:v1", "-o", str(dest))) == f"doc:v1 -> {dest} (1 file)\n"  # same: fine
    assert_one_line_error(run_cli(store_dir, "get", "doc:v2", "-o", str(dest)), "not empty")
    assert [p.name for p in dest.iterdir()] == ["a.txt"]


def test_a_failed_get_with_force_leaves_the_folder_as_it_was(
        store_dir: Path, tmp_path: Path, store: ArtifactStore, make_file: MakeFile) -> None:
    logged = store.log(TraceletArtifact("two").add_file(make_file("one.txt", "1"))
                       .add_file(make_file("two.txt", "2")))
    corrupt(blob_file(store_dir, logged.files[1].digest or ""))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "one.txt").write_text("old")
    assert_one_line_error(run_cli(store_dir, "get", "two", "-o", str(dest), "--force"), "corrupted")
    assert [(p.name, p.read_text()) for p in dest.iterdir()] == [("one.txt", "old")]
    assert not list(tmp_path.glob(".tracelet-get-*"))


def test_a_failed_get_removes_the_folders_it_created(
        store_dir: Path, tmp_path: Path, store: ArtifactStore, make_file: MakeFile) -> None:
    logged = store.log(TraceletArtifact("c").add_file(make_file("c.txt", "good")))
    corrupt(blob_file(store_dir, logged.files[0].digest or ""))
    assert_one_line_error(run_cli(store_dir, "get", "c", "-o", str(tmp_path / "deep" / "er" / "out")))
    assert not (tmp_path / "deep").exists()


@pytest.mark.parametrize("command", [[], *[[c] for c in STORE_COMMANDS]])
def test_help_shows_no_type_placeholders(command: list[str]) -> None:
    help_text = ok(runner.invoke(app, [*command, "--help"]))
    assert "<bool>" not in help_text and "<str>" not in help_text.split("Options:")[-1]


def test_verify_names_a_missing_manifest_once(store_dir: Path, store: ArtifactStore) -> None:
    store.log(TraceletArtifact("gone").add_object(1, "one"))
    (store_dir / "manifests" / "gone" / "@v1.json").unlink()
    result = run_cli(store_dir, "verify")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["BAD gone:v1: manifest of gone:v1 is missing from the store"]


def test_lineage_labels_shorten_run_ids_and_hide_made_up_job_names(store_dir: Path, store: ArtifactStore) -> None:
    flow_run, task_run = "0b9f6c2e-61d4-4a8e-9a31-5f0c7a2f9e11", "7d2e4b10-3c5a-4f7e-8b9d-1a2b3c4d5e6f"
    data = store.log(TraceletArtifact("data").add_object(1, "v"),
                     producer=RunInfo("prefect", flow_run, step=task_run, name="export"))
    store.log(TraceletArtifact("model", "model").add_object(2, "v"), inputs=[data],
              producer=RunInfo("dagster", "c5d1f9a2-0e4b-4c3d-9f8e-7a6b5c4d3e2f", step="model",
                               name="__ephemeral_asset_job__"))
    for output_format in ("text", "mermaid", "dot", "html", "svg"):
        out = ok(run_cli(store_dir, "lineage", "model", "-f", output_format))
        if output_format in ("html", "svg"):  # what is drawn (tooltips keep the full ids)
            out = "\n".join(re.findall(r"<text[^>]*>(.*?)</text>", out))
        assert "prefect: export" in out and "run 0b9f6c2e" in out, output_format
        assert "dagster: model" in out and "run c5d1f9a2" in out, output_format
        assert "__ephemeral_asset_job__" not in out, output_format
        if output_format in ("text", "mermaid"):
            assert flow_run not in out and task_run not in out, output_format


def test_lineage_html_and_svg_go_to_a_file(store_dir: Path, tmp_path: Path, pipeline: dict[str, str]) -> None:
    page = tmp_path / "lineage.html"
    out = ok(run_cli(store_dir, "lineage", "report", "--format", "html", "-o", str(page)))
    assert out == f"wrote the lineage of report:v1 (6 nodes) to {page}\n"
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count('class="node ') == 6
    drawing = tmp_path / "lineage.svg"
    ok(run_cli(store_dir, "lineage", "report", "-f", "svg", "-o", str(drawing)))
    assert drawing.read_text().startswith("<?xml") and "<svg" in drawing.read_text()
    tree = tmp_path / "tree.txt"
    ok(run_cli(store_dir, "lineage", "report", "-o", str(tree)))
    assert tree.read_text().startswith("report:v1 (report)") and "\x1b[" not in tree.read_text()


# -- round 3: versions, --json anywhere, hints, digests, exit codes ---------------------------
def test_reindex_opens_a_store_whose_catalog_is_missing_but_nothing_else(store_dir: Path, tmp_path: Path,
                                                                        make_file: MakeFile) -> None:
    ok(run_cli(store_dir, "log", str(make_file("a.txt", "a")), "--name", "a"))
    for leftover in store_dir.glob("catalog.db*"):
        leftover.unlink()
    assert_one_line_error(run_cli(store_dir, "gc"), "catalog", "reindex")
    assert run_cli(store_dir, "reindex").stdout == "a:v1\nadded 1 version\n"
    assert ok(run_cli(store_dir, "reindex")) == "added 0 versions\n"  # clean now: exit 0


def test_versions_lists_every_version_oldest_first(store_dir: Path, store: ArtifactStore) -> None:
    for rows in ([1], [1, 2], [1, 2, 3]):
        store.log(TraceletArtifact("clf", "model").add_object(rows, "w"), aliases=["production"] if len(rows) == 2
                  else ())
    # identical content: only the tag lands on v3
    store.log(TraceletArtifact("clf", "model", tags=["reviewed"]).add_object([1, 2, 3], "w"))
    lines = ok(run_cli(store_dir, "versions", "clf")).splitlines()
    assert lines[0].split() == ["VERSION", "CREATED", "SIZE", "ALIASES", "TAGS"]
    assert [line.split()[0] for line in lines[1:]] == ["v1", "v2", "v3"]
    assert "production" in lines[2] and lines[3].rstrip().endswith("reviewed")
    data = ok_json(run_cli(store_dir, "versions", "clf", "--json"))
    assert isinstance(data, list)
    assert [(v["ref"], v["aliases"], v["tags"]) for v in data] == [
        ("clf:v1", [], []), ("clf:v2", ["production"], []), ("clf:v3", [], ["reviewed"])]
    assert all({"created_at", "size_bytes", "digest"} <= set(v) for v in data)


@pytest.mark.parametrize("args", [["versions", "clf"], ["ls"], ["show", "clf"], ["verify"],
                                  ["alias", "clf:v1", "best"], ["gc", "--dry-run"], ["sync"]])
def test_json_works_before_or_after_the_command(store_dir: Path, pipeline: dict[str, str], args: list[str]) -> None:
    after = ok_json(runner.invoke(app, ["--store", str(store_dir), *args, "--json"]))
    before = ok_json(runner.invoke(app, ["--json", "--store", str(store_dir), *args]))
    assert before == after


def test_json_before_a_command_without_json_output_says_so(store_dir: Path, pipeline: dict[str, str]) -> None:
    assert_one_line_error(runner.invoke(app, ["--json", "--store", str(store_dir), "lineage", "clf"]),
                          "`tracelet lineage` has no --json output")


@pytest.mark.parametrize(("args", "fragments"), [
    (["show", "clf@production"], ["did you mean clf:production?"]),
    (["show", "clf:1"], ["did you mean clf:v1?", "clf has 1 version (v1)", "production"]),
    (["get", "clf:7"], ["a version number is written clf:v7", "clf has 1 version (v1)"]),
    (["show", "clf:v9"], ["no version or alias 'v9'", "clf has 1 version (v1) and the aliases production"]),
    (["show", "data/featurs"], ["no artifact named 'data/featurs'", "did you mean data/features"]),
    (["lineage", "reprot"], ["did you mean report?"]),
    (["verify", "clf:staging"], ["clf has 1 version"]),
    (["alias", "clf:v2", "best"], ["clf has 1 version (v1)"]),
    (["alias", "clf", "staging", "--remove"], ["has no alias 'staging'", "the aliases production"]),
    (["versions", "clff"], ["did you mean clf?"]),
    (["show", "zzz"], ["no artifact named 'zzz'", "`tracelet ls` lists the names"]),
])
def test_a_bad_ref_gets_a_hint(store_dir: Path, pipeline: dict[str, str], args: list[str],
                               fragments: list[str]) -> None:
    result = run_cli(store_dir, *args)
    assert_one_line_error(result, *fragments)
    assert result.stdout == ""


def test_many_versions_are_abbreviated_in_a_hint(store_dir: Path, store: ArtifactStore) -> None:
    for i in range(8):
        store.log(TraceletArtifact("many", "dataset").add_object([i], "rows"))
    assert_one_line_error(run_cli(store_dir, "show", "many:v9"), "many has 8 versions (v1, v2, v3, ..., v6, v7, v8)")


def test_show_never_folds_a_digest(store_dir: Path, store: ArtifactStore, make_file: MakeFile) -> None:
    logged = store.log(TraceletArtifact("wide", "model", description="a long description " * 8)
                       .add_file(make_file("w.bin", b"123"), "weights/a/rather/deep/path/w.bin"))
    for columns in ("40", "80", "200"):
        shown = ok(run_cli(store_dir, "show", "wide", env={"COLUMNS": columns}))
        lines = shown.splitlines()
        assert any(line.split() == ["digest", logged.digest] for line in lines), shown
        assert any(logged.files[0].digest in line.split() for line in lines), shown
        assert "weights/a/rather/deep/path/w.bin" in shown


def test_verify_and_reindex_exit_0_only_when_clean(store_dir: Path, store: ArtifactStore,
                                                   make_file: MakeFile) -> None:
    logged = store.log(TraceletArtifact("d", "dataset").add_file(make_file("a.txt", "a")))
    assert ok(run_cli(store_dir, "verify")) == "ok: 1 version verified\n"
    assert ok(run_cli(store_dir, "reindex")) == "added 0 versions\n"
    # a manifest reindex cannot read: it is skipped, named, and the exit code says so
    stray = Path(store.blobs.manifest_path("stray", 1))
    stray.parent.mkdir(parents=True)
    stray.write_text("{not json")
    skipped = run_cli(store_dir, "reindex", "--json")
    assert skipped.exit_code == 1
    report = json.loads(skipped.stdout)
    assert report["added"] == [] and len(report["skipped"]) == 1 and "stray" in report["skipped"][0]
    assert_one_line_error(skipped, "the catalog was not clean", "skipped 1 manifest or journal")
    blob_file(store_dir, logged.files[0].digest).write_bytes(b"b")
    assert_one_line_error(run_cli(store_dir, "verify"), "1 problem found")
