"""Automagic capture: ``torch.save`` and watched folders (Lightning: ``test_lightning.py``).

Everything runs for real (torch, Lightning, the store); the only stand-in is a ``log``
callable that raises, to inject a failing capture.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tracelet_core import (
    ArtifactStore,
    ConfigurationError,
    Experiment,
    ExperimentConfig,
    LoggedArtifact,
    TraceletSettings,
)
from tracelet_core._automagic import (
    AutomagicSession,
    artifact_name_for,
    suppress_capture,
    type_for_file,
)

ORIGINAL_SAVE = torch.save


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ArtifactStore]:
    with ArtifactStore.open(tmp_path / "store") as opened:
        yield opened


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


@pytest.fixture(autouse=True)
def torch_save_is_restored() -> Iterator[None]:
    """No test leaves ``torch.save`` patched."""
    yield
    assert torch.save is ORIGINAL_SAVE


def automagic(store: ArtifactStore, name: str = "run") -> Experiment:
    return Experiment(name, automagic_artifacts=True, store=store)


def session_of(exp: Experiment) -> AutomagicSession:
    session = exp._automagic
    assert session is not None
    return session


def file_bytes(logged: LoggedArtifact, tmp_path: Path) -> bytes:
    (entry,) = logged.files
    return (logged.download(tmp_path / f"dl-{logged.name.replace('/', '_')}-{logged.version}")
            / entry.path).read_bytes()


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))


# -- torch.save -----------------------------------------------------------------------------
def test_state_dict_is_logged_as_weights(store: ArtifactStore, workdir: Path, tmp_path: Path) -> None:
    model = small_model()
    target = workdir / "model.pth"
    with automagic(store) as exp:
        result = torch.save(model.state_dict(), target)
        assert result is None
    (logged,) = store.versions("model")
    assert logged.type.value == "weights"
    assert logged.metadata["captured_by"] == "torch.save"
    assert logged.metadata["source_path"] == str(target)
    assert logged.producer is not None and logged.producer.run_id == exp.run.run_id
    assert file_bytes(logged, tmp_path) == target.read_bytes()
    assert exp.automagic_errors == []


@pytest.mark.parametrize("extra_key", ["epoch", "global_step", "optimizer_state_dict",
                                       "model_state_dict", "state_dict", "optimizer"])
def test_training_checkpoint_dict_is_logged_as_checkpoint(
        store: ArtifactStore, workdir: Path, tmp_path: Path, extra_key: str) -> None:
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    payload: dict[str, Any] = {"model_state_dict": model.state_dict(), "loss": 0.5,
                               extra_key: optimizer.state_dict() if "optim" in extra_key else 3}
    with automagic(store):
        torch.save(payload, str(workdir / "checkpoint.pth"))
    (logged,) = store.versions("checkpoint")
    assert logged.type.value == "checkpoint"
    assert file_bytes(logged, tmp_path) == (workdir / "checkpoint.pth").read_bytes()


def test_module_is_logged_as_model(store: ArtifactStore, workdir: Path) -> None:
    with automagic(store):
        torch.save(small_model(), workdir / "net.pt")
    (logged,) = store.versions("net")
    assert logged.type.value == "model"


@pytest.mark.parametrize("obj", [torch.zeros(3), [1, 2, 3], {}, {"a": torch.zeros(1), "b": 1}],
                         ids=["tensor", "list", "empty-dict", "mixed-dict"])
def test_anything_else_is_logged_as_checkpoint(store: ArtifactStore, workdir: Path, obj: Any) -> None:
    with automagic(store):
        torch.save(obj, workdir / "thing.pt")
    assert store.get("thing").type.value == "checkpoint"


def test_keyword_arguments_and_return_value_pass_through(store: ArtifactStore, workdir: Path) -> None:
    with automagic(store):
        assert torch.save(obj={"w": torch.ones(2)}, f=workdir / "kw.pt") is None
    assert store.get("kw").type.value == "weights"
    assert torch.load(workdir / "kw.pt", weights_only=True)["w"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize(("filename", "expected"), [
    ("my model v2.pth", "my_model_v2"),
    ("epoch=3-step=120.ckpt", "epoch_3-step_120"),
    ("_private.pt", "private"),
    ("résumé.pt", "r_sum"),
])
def test_invalid_stems_are_sanitised(store: ArtifactStore, workdir: Path, filename: str,
                                     expected: str) -> None:
    with automagic(store):
        torch.save({"w": torch.ones(1)}, workdir / filename)
    assert [a.name for a in store.list()] == [expected]


def test_artifact_name_for_never_returns_an_invalid_name() -> None:
    assert artifact_name_for("...") == "artifact"
    assert artifact_name_for("a/b") == "a_b"
    assert len(artifact_name_for("x" * 500)) == 200


def test_saves_to_file_objects_are_not_captured(store: ArtifactStore, workdir: Path) -> None:
    buffer = io.BytesIO()
    with automagic(store) as exp:
        torch.save({"w": torch.ones(2)}, buffer)
        with open(workdir / "handle.pt", "wb") as handle:
            torch.save({"w": torch.ones(2)}, handle)
    assert buffer.getvalue()
    assert store.list() == []
    assert exp.automagic_errors == []


def test_failed_save_propagates_and_logs_nothing(store: ArtifactStore, workdir: Path) -> None:
    with automagic(store) as exp, pytest.raises(RuntimeError):
        torch.save({"w": torch.ones(1)}, workdir / "no-such-dir" / "w.pt")
    assert store.list() == []
    assert exp.automagic_errors == []


def test_torch_save_is_patched_only_while_started(store: ArtifactStore, workdir: Path) -> None:
    exp = automagic(store)
    assert torch.save is ORIGINAL_SAVE
    exp.start()
    assert torch.save is not ORIGINAL_SAVE
    exp.stop()
    assert torch.save is ORIGINAL_SAVE
    torch.save({"w": torch.ones(1)}, workdir / "after.pt")
    assert store.list() == []


def test_overlapping_experiments_share_one_patch(tmp_path: Path, workdir: Path) -> None:
    with ArtifactStore.open(tmp_path / "a") as store_a, ArtifactStore.open(tmp_path / "b") as store_b:
        first, second = automagic(store_a, "first").start(), automagic(store_b, "second").start()
        patched = torch.save
        torch.save({"w": torch.ones(1)}, workdir / "both.pt")
        first.stop()
        assert torch.save is patched  # the second experiment still captures
        torch.save({"w": torch.ones(1)}, workdir / "only_second.pt")
        second.stop()
        assert torch.save is ORIGINAL_SAVE
        assert [a.name for a in store_a.list()] == ["both"]
        assert sorted(a.name for a in store_b.list()) == ["both", "only_second"]
        assert store_b.get("both").producer.run_id == second.run.run_id  # type: ignore[union-attr]


def test_overlapping_experiments_stopped_in_start_order_restore_too(store: ArtifactStore) -> None:
    first, second = automagic(store, "first").start(), automagic(store, "second").start()
    second.stop()
    assert torch.save is not ORIGINAL_SAVE
    first.stop()
    assert torch.save is ORIGINAL_SAVE


def test_automagic_off_captures_nothing(store: ArtifactStore, workdir: Path) -> None:
    with Experiment("plain", store=store) as exp:
        assert torch.save is ORIGINAL_SAVE
        torch.save({"w": torch.ones(1)}, workdir / "model.pth")
    assert exp._automagic is None
    assert store.list() == []


def test_artifacts_disabled_means_no_capture(store: ArtifactStore, workdir: Path) -> None:
    with Experiment("off", artifacts=False, automagic_artifacts=True, store=store):
        assert torch.save is ORIGINAL_SAVE
        torch.save({"w": torch.ones(1)}, workdir / "model.pth")
    assert store.list() == []


def test_failing_capture_never_breaks_torch_save(store: ArtifactStore, workdir: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    def broken_log(artifact: Any) -> Any:
        raise OSError("store is read-only")

    target = workdir / "model.pth"
    with automagic(store) as exp:
        monkeypatch.setattr(session_of(exp), "log", broken_log)  # fault injection
        with caplog.at_level(logging.WARNING, logger="tracelet.automagic"):
            assert torch.save({"w": torch.ones(2)}, target) is None
        errors = exp.automagic_errors
    assert torch.load(target, weights_only=True)["w"].tolist() == [1.0, 1.0]
    assert len(errors) == 1
    assert "model.pth" in errors[0] and "OSError: store is read-only" in errors[0]
    assert "\n" not in errors[0]
    assert any("store is read-only" in r.getMessage() for r in caplog.records
               if r.name == "tracelet.automagic" and r.levelno == logging.WARNING)
    assert store.list() == []


def test_tracelets_own_torch_serializer_is_not_captured(store: ArtifactStore) -> None:
    with automagic(store) as exp:
        draft = exp.create_artifact("mine", "weights").add_model(small_model())
        exp.log_artifact(draft)
    assert [a.name for a in store.list()] == ["mine"]


def test_suppress_capture_skips_saves_in_its_block(store: ArtifactStore, workdir: Path) -> None:
    with automagic(store):
        with suppress_capture():
            torch.save({"w": torch.ones(1)}, workdir / "quiet.pt")
        torch.save({"w": torch.ones(1)}, workdir / "loud.pt")
    assert [a.name for a in store.list()] == ["loud"]


def test_environment_variable_turns_capture_on(store: ArtifactStore, workdir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACELET_AUTOMAGIC_ARTIFACTS", "true")
    with Experiment("from-env", store=store) as exp:
        assert exp.config.automagic_artifacts
        torch.save({"w": torch.ones(1)}, workdir / "env.pth")
    assert store.get("env").type.value == "weights"


def test_same_content_saved_twice_is_one_version(store: ArtifactStore, workdir: Path) -> None:
    with automagic(store):
        torch.save({"w": torch.ones(2)}, workdir / "w.pt")
        torch.save({"w": torch.ones(2)}, workdir / "w.pt")
        torch.save({"w": torch.zeros(2)}, workdir / "w.pt")
    assert [v.version for v in store.versions("w")] == ["v1", "v2"]


def test_importing_tracelet_core_imports_neither_torch_nor_lightning() -> None:
    code = ("import sys, tracelet_core; "
            "bad = [m for m in ('torch', 'lightning', 'pytorch_lightning') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# -- watched folders ------------------------------------------------------------------------
def watching(store: ArtifactStore, *folders: Path, interval: float = 3600.0,
             capture_saves: bool = False, stable_checks: int = 1) -> Experiment:
    """An experiment watching ``folders``; the long interval leaves scanning to the test.

    One stable check (a file is logged by the second scan that sees it unchanged) keeps
    these tests short; the default rule (3 checks, 5 s max wait) is tested further down."""
    config = ExperimentConfig(watch_filesystem=True, automagic_artifacts=capture_saves,
                              artifact_watch_dirs=[str(f) for f in folders])
    return Experiment("watch", config=config, store=store,
                      settings=TraceletSettings.load(watch_interval=interval,
                                                     watch_stable_checks=stable_checks))


def test_new_file_is_logged_once_stable(store: ArtifactStore, workdir: Path, tmp_path: Path) -> None:
    with watching(store, workdir) as exp:
        session = session_of(exp)
        (workdir / "results.csv").write_text("a,b\n1,2\n")
        assert session.scan_once() == []  # seen once: not yet known to be stable
        assert store.list() == []
        assert session.scan_once() == ["results"]
        assert session.scan_once() == []  # unchanged: not logged again
    (logged,) = store.versions("results")
    assert logged.type.value == "dataset"
    assert logged.metadata["captured_by"] == "watcher"
    assert logged.metadata["source_path"] == str(workdir / "results.csv")
    assert file_bytes(logged, tmp_path) == b"a,b\n1,2\n"


def test_file_still_growing_waits_for_stability(store: ArtifactStore, workdir: Path) -> None:
    with watching(store, workdir) as exp:
        session = session_of(exp)
        target = workdir / "big.bin"
        target.write_bytes(b"x" * 10)
        session.scan_once()
        with target.open("ab") as handle:
            handle.write(b"y" * 10)
        assert session.scan_once() == []
        assert session.scan_once() == ["big"]
    (logged,) = store.versions("big")
    assert logged.size_bytes == 20


def test_changed_file_becomes_a_new_version(store: ArtifactStore, workdir: Path, tmp_path: Path) -> None:
    target = workdir / "config.yaml"
    with watching(store, workdir) as exp:
        session = session_of(exp)
        target.write_text("lr: 0.1\n")
        session.scan_once()
        session.scan_once()
        target.write_text("lr: 0.01\n")  # a different size, so a different stat signature
        assert session.scan_once() == []
        assert session.scan_once() == ["config"]
    versions = store.versions("config")
    assert [(v.version, v.type.value) for v in versions] == [("v1", "config"), ("v2", "config")]
    assert file_bytes(versions[1], tmp_path) == b"lr: 0.01\n"


def test_touched_but_identical_file_gets_no_new_version(store: ArtifactStore, workdir: Path) -> None:
    target = workdir / "notes.txt"
    with watching(store, workdir) as exp:
        session = session_of(exp)
        target.write_text("same")
        session.scan_once()
        session.scan_once()
        stat = target.stat()
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        session.scan_once()
        session.scan_once()  # logged again, and the store returns the existing version
    assert [v.version for v in store.versions("notes")] == ["v1"]


def test_hidden_and_temporary_files_are_skipped(store: ArtifactStore, workdir: Path) -> None:
    with watching(store, workdir) as exp:
        session = session_of(exp)
        for name in (".hidden.pt", "upload.tmp", "weights.part", "~lock.pt", "kept.pt"):
            (workdir / name).write_bytes(b"data")
        (workdir / ".cache").mkdir()
        (workdir / ".cache" / "inner.pt").write_bytes(b"data")
        session.scan_once()
        assert session.scan_once() == ["kept"]
    assert [a.name for a in store.list()] == ["kept"]


def test_files_present_at_start_are_not_logged(store: ArtifactStore, workdir: Path) -> None:
    (workdir / "old.pt").write_bytes(b"from a previous run")
    with watching(store, workdir) as exp:
        session = session_of(exp)
        session.scan_once()
        session.scan_once()
        (workdir / "old.pt").write_bytes(b"rewritten by this run")
        session.scan_once()
        session.scan_once()
    assert [(a.name, a.version) for a in store.list()] == [("old", "v1")]
    assert store.get("old").size_bytes == len(b"rewritten by this run")


def test_stop_runs_a_final_scan(store: ArtifactStore, workdir: Path) -> None:
    with watching(store, workdir) as exp:
        session = session_of(exp)
        (workdir / "seen_once.onnx").write_bytes(b"onnx")
        session.scan_once()
        (workdir / "never_scanned.png").write_bytes(b"png")
    assert store.get("seen_once").type.value == "model"
    assert store.get("never_scanned").type.value == "image"


def test_nested_files_are_named_by_their_folder(store: ArtifactStore, workdir: Path) -> None:
    nested = workdir / "version 0" / "checkpoints"
    with watching(store, workdir) as exp:
        nested.mkdir(parents=True)
        (nested / "epoch=1-step=8.ckpt").write_bytes(b"ckpt")
        session_of(exp).scan_once()
        assert session_of(exp).scan_once() == ["version_0/checkpoints/epoch_1-step_8"]
    assert store.get("version_0/checkpoints/epoch_1-step_8").type.value == "checkpoint"


@pytest.mark.parametrize(("filename", "expected"), [
    ("a.pt", "checkpoint"), ("a.pth", "checkpoint"), ("a.ckpt", "checkpoint"),
    ("a.safetensors", "weights"), ("a.bin", "weights"),
    ("a.onnx", "model"), ("a.pkl", "model"), ("a.joblib", "model"),
    ("a.png", "image"), ("a.JPG", "image"), ("a.jpeg", "image"), ("a.gif", "image"), ("a.webp", "image"),
    ("a.wav", "audio"), ("a.mp3", "audio"), ("a.flac", "audio"),
    ("a.mp4", "video"), ("a.avi", "video"), ("a.mov", "video"),
    ("a.html", "report"), ("a.ipynb", "report"), ("a.pdf", "report"),
    ("a.yaml", "config"), ("a.yml", "config"), ("a.json", "config"), ("a.toml", "config"),
    ("a.py", "code"),
    ("a.csv", "dataset"), ("a.parquet", "dataset"), ("a.npy", "dataset"), ("a.npz", "dataset"),
    ("a.txt", "custom"), ("Makefile", "custom"),
])
def test_watched_file_type_from_extension(filename: str, expected: str) -> None:
    assert type_for_file(Path(filename)).value == expected


def test_missing_watch_dir_is_reported_not_created(store: ArtifactStore, tmp_path: Path) -> None:
    missing = tmp_path / "later"
    with watching(store, missing) as exp:
        session = session_of(exp)
        assert len(exp.automagic_errors) == 1 and str(missing) in exp.automagic_errors[0]
        session.scan_once()
        assert not missing.exists()
        missing.mkdir()  # created by the user's code after the start: watched from now on
        (missing / "late.json").write_text("{}")
        session.scan_once()
        session.scan_once()
    assert store.get("late").type.value == "config"


def test_failed_watched_log_is_reported_and_watching_goes_on(
        store: ArtifactStore, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = watching(store, workdir).start()
    session = session_of(exp)
    real_log = session.log

    def broken_log(artifact: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(session, "log", broken_log)  # fault injection
    (workdir / "first.txt").write_text("1")
    session.scan_once()
    assert session.scan_once() == []
    monkeypatch.setattr(session, "log", real_log)
    (workdir / "second.txt").write_text("2")
    session.scan_once()
    assert session.scan_once() == ["second"]
    errors = exp.automagic_errors
    exp.stop()
    assert len(errors) == 1 and "first.txt" in errors[0] and "disk full" in errors[0]
    assert [a.name for a in store.list()] == ["second"]


def test_torch_save_into_a_watched_folder_is_logged_once(store: ArtifactStore, workdir: Path) -> None:
    with watching(store, workdir, capture_saves=True) as exp:
        torch.save({"w": torch.ones(1)}, workdir / "model.pth")
        session_of(exp).scan_once()
        session_of(exp).scan_once()
    (logged,) = store.versions("model")
    assert logged.type.value == "weights"  # typed by content, not by the watcher's extension guess
    assert logged.metadata["captured_by"] == "torch.save"


def test_background_thread_scans_and_stops(store: ArtifactStore, workdir: Path) -> None:
    exp = watching(store, workdir, interval=0.01).start()
    session = session_of(exp)
    thread = session._thread
    assert thread is not None and thread.is_alive() and thread.daemon
    (workdir / "report.html").write_text("<p>hi</p>")
    # the scan running now may have missed the file; the next two see it, the second logs it
    assert session.wait_for_scans(session.scans + 3, timeout=60)
    assert store.get("report").type.value == "report"
    exp.stop()
    assert not thread.is_alive()
    assert [v.version for v in store.versions("report")] == ["v1"]


def test_watching_only_does_not_patch_torch_save(store: ArtifactStore, workdir: Path) -> None:
    with watching(store, workdir):
        assert torch.save is ORIGINAL_SAVE


# -- the stability rule: TRACELET_WATCH_STABLE_CHECKS and TRACELET_WATCH_MAX_WAIT ------------
class FakeClock:
    """The watcher's clock, moved by the test: no sleeping, no timing luck."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watch_session(store: ArtifactStore, folder: Path, clock: FakeClock, **rule: Any) -> AutomagicSession:
    """A session scanned only by the test, with the default rule unless ``rule`` says."""
    settings = TraceletSettings.load(**{f"watch_{k}": v for k, v in rule.items()})
    return AutomagicSession(store.log, capture_saves=False, watch_dirs=[folder], watch_interval=3600,
                            stable_checks=settings.watch_stable_checks, max_wait=settings.watch_max_wait,
                            clock=clock)


def test_default_rule_is_three_stable_checks_and_five_seconds() -> None:
    settings = TraceletSettings.load()
    assert (settings.watch_stable_checks, settings.watch_max_wait) == (3, 5.0)


def test_a_file_is_logged_after_three_unchanged_scans(store: ArtifactStore, workdir: Path) -> None:
    clock = FakeClock()
    session = watch_session(store, workdir, clock)
    session.start()
    try:
        (workdir / "metrics.json").write_text("{}")
        found = []
        for _ in range(5):
            clock.now += 1.0  # within the max wait: the full rule applies
            found.append(session.scan_once())
    finally:
        session.stop()
    # seen, then unchanged in 3 consecutive scans: logged by the 4th scan, once
    assert found == [[], [], [], ["metrics"], []]


def test_a_file_growing_past_the_max_wait_is_logged_when_it_settles(
        store: ArtifactStore, workdir: Path) -> None:
    clock = FakeClock()
    session = watch_session(store, workdir, clock)
    session.start()
    target = workdir / "train.log"
    try:
        for step in range(8):  # 16 s of growth, far past the 5 s max wait: never logged early
            with target.open("a") as handle:
                handle.write(f"step {step}\n")
            clock.now += 2.0
            assert session.scan_once() == []
        clock.now += 2.0
        assert session.scan_once() == ["train"]  # the first unchanged scan after the wait
        clock.now += 2.0
        assert session.scan_once() == []
    finally:
        session.stop()
    (logged,) = store.versions("train")
    assert logged.size_bytes == target.stat().st_size
    assert logged.metadata["captured_by"] == "watcher"


def test_a_settled_file_after_a_short_burst_still_needs_every_check(
        store: ArtifactStore, workdir: Path) -> None:
    clock = FakeClock()
    session = watch_session(store, workdir, clock, stable_checks=2, max_wait=60.0)
    session.start()
    target = workdir / "weights.bin"
    try:
        target.write_bytes(b"a")
        assert session.scan_once() == []
        target.write_bytes(b"ab")  # changed: the count starts again
        clock.now += 1.0
        assert [session.scan_once() for _ in range(3)] == [[], [], ["weights"]]
    finally:
        session.stop()
    assert store.get("weights").size_bytes == 2


def test_stop_logs_a_file_that_never_settled(store: ArtifactStore, workdir: Path) -> None:
    clock = FakeClock()
    session = watch_session(store, workdir, clock)
    session.start()
    target = workdir / "growing.csv"
    for rows in range(3):
        target.write_text("x\n" * (rows + 1))
        clock.now += 10.0
        session.scan_once()
    session.stop()  # never dropped: the final scan logs it as it is
    assert store.get("growing").size_bytes == 6


def test_environment_sets_the_rule(store: ArtifactStore, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACELET_WATCH_STABLE_CHECKS", "2")
    monkeypatch.setenv("TRACELET_WATCH_MAX_WAIT", "0.5")
    config = ExperimentConfig(watch_filesystem=True, artifact_watch_dirs=[str(workdir)])
    with Experiment("env", config=config, store=store) as exp:
        session = session_of(exp)
        assert (session.stable_checks, session.max_wait) == (2, 0.5)
    monkeypatch.setenv("TRACELET_WATCH_STABLE_CHECKS", "0")
    with pytest.raises(ConfigurationError, match="(?i)watch_stable_checks"):
        TraceletSettings.load()


# -- artifact_stats -------------------------------------------------------------------------
def test_artifact_stats_count_logs_captures_and_waiting_deliveries(
        store: ArtifactStore, workdir: Path, tmp_path: Path) -> None:
    from backend_support import FolderBackend

    from tracelet_core._backends import register_backend, unregister_backend

    tracker = FolderBackend(str(tmp_path / "tracker"), fail=True)
    with Experiment("stats", backend=tracker, automagic_artifacts=True, store=store) as exp:
        torch.save({"w": torch.ones(1)}, workdir / "w.pt")
        results = exp.log_artifact(exp.create_artifact("notes", "report").add_object({"a": 1}, "notes"))
        assert results["folder"].ok is False  # the tracker is down; the version is committed
        stats = exp.artifact_stats()
    assert stats["logged"] == 2 and stats["captured"] == {"torch.save": 1}
    assert stats["pending_deliveries"] == 2 and stats["delivery_failures"] == 2
    assert stats["failed"] == 0 and stats["errors"] == []
    assert stats["backends"] == ["folder"] and stats["automagic"] is True
    register_backend("folder", FolderBackend)  # sync rebuilds it by name, reachable now
    try:
        store.sync()  # what `tracelet sync` does
    finally:
        unregister_backend("folder")
    assert exp.artifact_stats()["pending_deliveries"] == 0
