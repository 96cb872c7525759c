"""The delivery outbox: local commit first, failed or interrupted deliveries retried exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import FolderBackend
from typer.testing import CliRunner

from tracelet_core import (
    ArtifactStore,
    BackendError,
    ConfigurationError,
    Experiment,
    IntegrityError,
    PermanentBackendError,
    TransientBackendError,
)
from tracelet_core._backends import register_backend, unregister_backend
from tracelet_core.cli import app


@pytest.fixture
def folder_backend() -> Iterator[None]:
    """``folder`` resolvable by name (with its config), as ``tracelet sync`` needs."""
    register_backend("folder", FolderBackend)
    yield
    unregister_backend("folder")


def log_config(exp: Experiment, value: int) -> dict[str, object]:
    return exp.log_artifact(exp.create_artifact("cfg", "config").add_object({"v": value}, "c"))


def test_failed_delivery_is_kept_and_sync_delivers_it_once(store: ArtifactStore, tmp_path: Path,
                                                           folder_backend: None) -> None:
    tracker = tmp_path / "tracker"
    exp = Experiment("e", backend=[FolderBackend(str(tracker), fail=True)], store=store)
    results = log_config(exp, 1)
    assert results["local"].ok and not results["folder"].ok  # type: ignore[attr-defined]
    [row] = store.deliveries("cfg:v1")
    assert (row.backend, row.status, row.attempts) == ("folder", "failed", 1)
    assert "tracker unreachable" in (row.last_error or "")
    assert row.config == {"root": str(tracker)} and row.run_id == exp.run.run_id

    retried = store.sync()
    assert [(r.backend, r.ok, r.version) for r in retried] == [("folder", True, "v1")]
    assert (tracker / "cfg/v1/files/c.json").is_file()
    assert store.deliveries("cfg:v1")[0].status == "delivered"
    assert store.sync() == []  # nothing left to do: delivered exactly once


def test_sync_retries_idempotently_when_the_tracker_already_has_the_copy(
        store: ArtifactStore, tmp_path: Path, folder_backend: None) -> None:
    tracker = tmp_path / "tracker"
    good = FolderBackend(str(tracker))
    Experiment("e", backend=[good], store=store).log_artifact(
        Experiment("e", store=store).create_artifact("ds", "dataset").add_object([1], "rows"))
    # the tracker got it, but the outcome was never recorded (a crash right after the upload)
    with store.catalog.engine.begin() as conn:
        from sqlalchemy import update

        from tracelet_core._catalog import deliveries

        conn.execute(update(deliveries).values(status="pending"))
    [result] = store.sync()
    assert result.ok
    assert sorted(p.name for p in (tracker / "ds").iterdir()) == ["v1"]


def test_identical_relog_is_not_delivered_twice(store: ArtifactStore, tmp_path: Path) -> None:
    backend = FolderBackend(str(tmp_path / "tracker"))
    exp = Experiment("e", backend=[backend], store=store)
    first = log_config(exp, 1)
    again = log_config(exp, 1)
    assert first["folder"] == again["folder"]  # the recorded result, no second upload
    assert backend.uploads == 1


def test_a_hung_tracker_times_out_without_failing_the_commit(store: ArtifactStore, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    monkeypatch.setenv("TRACELET_BACKEND_TIMEOUT", "0.3")
    exp = Experiment("e", backend=[FolderBackend(str(tmp_path / "t"), block=release)], store=store)
    try:
        results = log_config(exp, 1)
    finally:
        release.set()
    assert results["local"].ok  # type: ignore[attr-defined]
    assert not results["folder"].ok and "TimeoutError" in (results["folder"].error or "")  # type: ignore[attr-defined]
    assert store.deliveries("cfg:v1")[0].status == "failed"


def test_strict_raises_after_the_local_commit(store: ArtifactStore, tmp_path: Path) -> None:
    exp = Experiment("e", backend=[FolderBackend(str(tmp_path / "t"), fail=True)], store=store, strict=True)
    with pytest.raises(BackendError, match="committed locally"):
        log_config(exp, 1)
    assert store.get("cfg").version == "v1"
    assert store.deliveries("cfg:v1")[0].status == "failed"


def test_a_writer_killed_before_delivery_leaves_a_pending_delivery(store_dir: Path, tmp_path: Path,
                                                                    folder_backend: None) -> None:
    tracker = tmp_path / "tracker"
    child = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from backend_support import FolderBackend
        from tracelet_core import ArtifactStore, Experiment

        class DiesOnDelivery(FolderBackend):
            def log(self, artifact):  # fault injection: the process dies mid-delivery
                os.kill(os.getpid(), signal.SIGKILL)

        store = ArtifactStore.open({str(store_dir)!r})
        exp = Experiment("doomed", backend=[DiesOnDelivery({str(tracker)!r})], store=store)
        exp.log_artifact(exp.create_artifact("model", "model").add_object({{"w": 1}}, "w"))
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with ArtifactStore.open(store_dir) as store:
        assert store.get("model").version == "v1"  # the local commit happened first
        [row] = store.deliveries("model:v1")
        assert row.status == "pending" and row.run_name == "doomed"
        results = store.sync()
        assert [r.ok for r in results] == [True]
        assert store.sync() == []
    assert json.loads((tracker / "model/v1/tags.json").read_text())["tracelet.ref"] == "model:v1"


def test_cli_sync_reports_the_retries(store_dir: Path, tmp_path: Path, folder_backend: None) -> None:
    with ArtifactStore.open(store_dir) as store:
        log_config(Experiment("e", backend=[FolderBackend(str(tmp_path / "t"), fail=True)], store=store), 1)
    result = CliRunner().invoke(app, ["--store", str(store_dir), "sync", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["retried"], data["delivered"]) == (1, 1)
    assert data["results"][0]["backend"] == "folder" and data["results"][0]["version"] == "v1"
    again = CliRunner().invoke(app, ["--store", str(store_dir), "sync"])
    assert again.exit_code == 0 and "retried 0 deliveries" in again.stdout


def test_cli_sync_exits_1_while_deliveries_still_fail(store_dir: Path, tmp_path: Path) -> None:
    class AlwaysDown(FolderBackend):
        def __init__(self, root: str) -> None:
            super().__init__(root, fail=True)

    register_backend("folder", AlwaysDown)
    try:
        with ArtifactStore.open(store_dir) as store:
            log_config(Experiment("e", backend=[AlwaysDown(str(tmp_path / "t"))], store=store), 1)
        result = CliRunner().invoke(app, ["--store", str(store_dir), "sync"])
    finally:
        unregister_backend("folder")
    assert result.exit_code == 1
    assert "folder: FAILED ConnectionError: tracker unreachable" in result.stdout
    assert result.stderr.strip() == "error: 1 delivery still failing; run tracelet sync again later"


def test_sync_of_an_unavailable_backend_is_a_configuration_error(store: ArtifactStore, tmp_path: Path,
                                                                  folder_backend: None) -> None:
    log_config(Experiment("e", backend=[FolderBackend(str(tmp_path / "t"), fail=True)], store=store), 1)
    unregister_backend("folder")
    with pytest.raises(ConfigurationError, match="folder"):
        store.sync()
    assert store.deliveries("cfg:v1")[0].status == "failed"


def test_get_artifact_from_a_backend_checks_its_copy(store: ArtifactStore, tmp_path: Path) -> None:
    tracker = tmp_path / "tracker"
    exp = Experiment("e", backend=[FolderBackend(str(tracker))], store=store)
    log_config(exp, 1)
    assert exp.get_artifact("cfg", backend="folder").ref == "cfg:v1"
    assert [a.ref for a in exp.list_artifacts(backend="folder")] == ["cfg:v1"]
    (tracker / "cfg/v1/files/c.json").write_text('{"v": 666}')
    with pytest.raises(IntegrityError) as info:
        exp.get_artifact("cfg", backend="folder")
    assert info.value.problems == ["folder: c.json missing or different"]


class SdkBackend(FolderBackend):
    """A tracker whose SDK raises ``error`` (translated by ``sdk_errors``, as real backends do)."""

    name = "sdk"

    def __init__(self, root: str, error: BaseException) -> None:
        super().__init__(root)
        self.error = error

    def log(self, artifact: Any) -> Any:
        from tracelet_core.backends import sdk_errors

        with sdk_errors(self.name, f"uploading {artifact.ref}", (OSError, ValueError)):
            raise self.error


@pytest.mark.parametrize(("error", "kind"), [
    (ConnectionRefusedError("connection refused"), TransientBackendError),
    (TimeoutError("read timed out"), TransientBackendError),
    (ValueError("experiment is deleted"), PermanentBackendError),
])
def test_a_failed_delivery_keeps_the_type_of_its_error(store: ArtifactStore, tmp_path: Path,
                                                       error: BaseException, kind: type[BackendError]) -> None:
    exp = Experiment("e", backend=[SdkBackend(str(tmp_path / "t"), error)], store=store)
    result = log_config(exp, 1)["sdk"]
    assert not result.ok and (result.error or "").startswith("BackendError: sdk: uploading cfg:v1 failed")
    assert result.error_type == kind.__name__ and issubclass(kind, BackendError)
    [row] = store.deliveries("cfg:v1")
    assert row.status == "failed" and (row.result or {}).get("error_type") == kind.__name__


def test_log_artifact_result_carries_the_logged_version(store: ArtifactStore, tmp_path: Path) -> None:
    exp = Experiment("e", backend=[FolderBackend(str(tmp_path / "t"))], store=store)
    first = exp.log_artifact(exp.create_artifact("cfg", "config").add_object({"v": 1}, "c"))
    again = exp.log_artifact(exp.create_artifact("cfg", "config").add_object({"v": 1}, "c"))
    assert set(first) == {"local", "folder"} and isinstance(first, dict)
    assert (first.logged.ref, first.logged.created) == ("cfg:v1", True)
    assert (again.logged.ref, again.logged.created) == ("cfg:v1", False)
    assert again["folder"].ok and store.deliveries("cfg:v1")[0].attempts == 1  # delivered once


def test_sync_delivers_every_other_backend_before_naming_one_it_cannot_build(
        store: ArtifactStore, tmp_path: Path, folder_backend: None) -> None:
    class Other(FolderBackend):
        name = "other"

    register_backend("other", Other)
    try:
        exp = Experiment("e", backend=[FolderBackend(str(tmp_path / "f"), fail=True),
                                       Other(str(tmp_path / "o"), fail=True)], store=store)
        log_config(exp, 1)
        unregister_backend("folder")
        with pytest.raises(ConfigurationError, match="folder"):
            store.sync()
    finally:
        unregister_backend("other")
    statuses = {d.backend: (d.status, d.attempts) for d in store.deliveries("cfg:v1")}
    assert statuses == {"folder": ("failed", 2), "other": ("delivered", 2)}
    [folder] = [d for d in store.deliveries("cfg:v1") if d.backend == "folder"]
    assert (folder.last_error or "").startswith("ConfigurationError: unknown backend 'folder'")
