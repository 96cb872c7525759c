"""Provenance on every producer: git commit, branch and dirty flag of the working directory's
repository (read from ``.git``, one ``git status`` per process and folder), the Python version
and the versions of the libraries in use; shown by ``tracelet show``, compared by ``diff``."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy  # noqa: F401 - imported, so its version is recorded
import pytest
from typer.testing import CliRunner

import tracelet_core._provenance as provenance_module
from tracelet_core import ArtifactStore, RunInfo, TraceletArtifact
from tracelet_core.cli import app


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e",
                           "-c", "init.defaultBranch=main", *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def make_repo(path: Path) -> str:
    path.mkdir(parents=True)
    git(path, "init", "-q")
    (path / "train.py").write_text("print('train')\n")
    git(path, "add", "train.py")
    git(path, "commit", "-q", "-m", "first")
    return git(path, "rev-parse", "HEAD")


def log(store: ArtifactStore, value: object, run: str = "run-1", **extra: object) -> RunInfo:
    producer = RunInfo("tracelet", run, extra=dict(extra))
    logged = store.log(TraceletArtifact("m", "model").add_object(value, "v"), producer=producer)
    assert logged.producer is not None
    return logged.producer


def test_git_python_and_packages_recorded(store: ArtifactStore, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    commit = make_repo(tmp_path / "clean")
    monkeypatch.chdir(tmp_path / "clean")
    extra = log(store, 1).extra
    assert extra["git"] == {"commit": commit, "branch": "main", "dirty": False}
    assert extra["python"] == platform.python_version()
    packages = extra["packages"]
    assert packages["tracelet-artifacts"] == "0.1.0" and packages["numpy"] == numpy.__version__
    assert "dagster" not in packages and "prefect" not in packages  # not the orchestrator here

    commit2 = make_repo(tmp_path / "dirty")
    (tmp_path / "dirty" / "train.py").write_text("print('changed')\n")
    (tmp_path / "dirty" / "untracked.txt").write_text("not part of the code")
    monkeypatch.chdir(tmp_path / "dirty" )
    assert log(store, 2, "run-2").extra["git"] == {"commit": commit2, "branch": "main", "dirty": True}
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)
    if not any((p / ".git").exists() for p in (outside, *outside.parents)):
        assert "git" not in log(store, 3, "run-3").extra


def test_worktree_packed_refs_and_detached_head(store: ArtifactStore, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    commit = make_repo(tmp_path / "repo")
    git(tmp_path / "repo", "worktree", "add", "-q", "-b", "feature", str(tmp_path / "wt"))
    git(tmp_path / "repo", "pack-refs", "--all")  # no loose ref files left
    monkeypatch.chdir(tmp_path / "wt")
    assert log(store, 1).extra["git"] == {"commit": commit, "branch": "feature", "dirty": False}
    git(tmp_path / "repo", "checkout", "-q", "--detach", "HEAD")
    (tmp_path / "repo" / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "repo" / "sub")  # found from a subfolder
    assert log(store, 2, "run-2").extra["git"] == {"commit": commit, "branch": None, "dirty": False}


def test_one_git_call_per_process_and_folder(store: ArtifactStore, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    make_repo(tmp_path / "repo")
    monkeypatch.chdir(tmp_path / "repo")
    calls: list[list[str]] = []
    real = subprocess.run

    def counting(args: list[str], **kwargs: object) -> object:
        calls.append(args)
        return real(args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(provenance_module.subprocess, "run", counting)
    for value in range(5):
        log(store, value, f"run-{value}")
    assert len(calls) == 1 and "--no-optional-locks" in calls[0]  # never takes the index lock


def test_no_environment_values_and_callers_keys_win(store: ArtifactStore, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    make_repo(tmp_path / "repo")
    git(tmp_path / "repo", "remote", "add", "origin", "https://user:hunter2@example.com/r.git")
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    producer = log(store, 1, python="mine")
    text = json.dumps(producer.extra)
    assert "s3cr3t-value" not in text and "hunter2" not in text and "example.com" not in text
    assert producer.extra["python"] == "mine" and "git" in producer.extra


def test_dedup_idempotency_and_equality_ignore_provenance(store: ArtifactStore) -> None:
    run = RunInfo("dagster", "r1", step="train")
    first = store.log(TraceletArtifact("m", "model").add_object(1, "v"), producer=run, idempotency_key="k")
    again = store.log(TraceletArtifact("m", "model").add_object(1, "v"), producer=run, idempotency_key="k")
    assert first.created and not again.created and again.ref == first.ref
    assert first.producer == run and hash(first.producer) == hash(run)  # extra is not identity
    assert first.producer is not None and "dagster" in first.producer.extra["packages"]


def test_a_run_that_reads_before_it_logs_keeps_provenance(store: ArtifactStore) -> None:
    raw = store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
    run = RunInfo("dagster", "r1", step="train")
    store.record_consumption(run, [raw])  # the IO manager records reads before the output
    logged = store.log(TraceletArtifact("m", "model").add_object(1, "v"), producer=run, inputs=[raw])
    assert logged.producer is not None and logged.producer.extra["python"] == platform.python_version()


def test_packages_only_when_imported(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import json, sys
        from tracelet_core import ArtifactStore, RunInfo, TraceletArtifact
        store = ArtifactStore.open({str(tmp_path / "store")!r})
        v = store.log(TraceletArtifact("m", "model").add_object(1, "v"), producer=RunInfo("prefect", "r"))
        print(json.dumps([sorted(v.producer.extra["packages"]), "numpy" in sys.modules]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          cwd=tmp_path)
    packages, numpy_loaded = json.loads(done.stdout)
    assert not numpy_loaded and packages == ["prefect", "tracelet-artifacts"]


def test_show_prints_and_diff_compares_it(store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = make_repo(tmp_path / "repo")
    monkeypatch.chdir(tmp_path / "repo")
    with ArtifactStore.open(store_dir) as store:
        log(store, 1)
        (tmp_path / "repo" / "train.py").write_text("print('v2')\n")
        git(tmp_path / "repo", "commit", "-q", "-am", "second")
        second = git(tmp_path / "repo", "rev-parse", "HEAD")
        provenance_module._git_cache.clear()  # a new process would see the new commit
        log(store, 2, "run-2")
        found = store.diff("m:v1", "m:v2").producer
    assert found is not None and [p["extra"]["git"]["commit"] for p in found if p] == [first, second]
    runner = CliRunner()
    shown = runner.invoke(app, ["--store", str(store_dir), "show", "m:v1"], env={"COLUMNS": "300"})
    assert shown.exit_code == 0, shown.output
    assert f"git {first[:12]} on main, clean" in shown.stdout and platform.python_version() in shown.stdout
    assert "tracelet-artifacts 0.1.0" in shown.stdout
    diffed = runner.invoke(app, ["--store", str(store_dir), "diff", "m:v1", "m:v2"])
    assert f"git commit: {first!r} -> {second!r}" in diffed.stdout


def test_a_removed_working_directory_still_logs(store: ArtifactStore, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    extra = log(store, 1).extra
    assert "git" not in extra and extra["python"] == platform.python_version()


def test_dagster_steps_record_provenance(store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real Dagster run: the step that reads (its run row is made by the read) and logs."""
    from dagster import asset, materialize

    from tracelet_dagster import TraceletIOManager

    commit = make_repo(tmp_path / "repo")
    monkeypatch.chdir(tmp_path / "repo")

    @asset
    def raw() -> dict[str, int]:
        return {"a": 1}

    @asset
    def doubled(raw: dict[str, int]) -> dict[str, int]:
        return {key: value * 2 for key, value in raw.items()}

    assert materialize([raw, doubled], resources={"io_manager": TraceletIOManager(store_uri=str(store_dir))}).success
    with ArtifactStore.open(store_dir) as store:
        for name in ("raw", "doubled"):
            producer = store.get(name).producer
            assert producer is not None and producer.orchestrator == "dagster"
            assert producer.extra["git"] == {"commit": commit, "branch": "main", "dirty": False}
            assert "dagster" in producer.extra["packages"] and producer.extra["python"] == platform.python_version()
