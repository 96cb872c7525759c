"""The alias-event outbox: alias moves reach every tracker holding the version, in order per
name, exactly once; ``sync`` retries what failed; the registry refuses to clobber a name."""

from __future__ import annotations

from pathlib import Path

import pytest
from backend_support import FolderBackend
from typer.testing import CliRunner

from tracelet_core import ArtifactStore, ConfigurationError, Experiment
from tracelet_core._backends import register_backend, unregister_backend
from tracelet_core.backends import Backend
from tracelet_core.cli import app


def log_two(store: ArtifactStore, tracker: FolderBackend) -> None:
    with Experiment("e", backend=[tracker], store=store) as exp:
        for value in (1, 2):
            assert exp.log_artifact(exp.create_artifact("cfg", "config").add_object({"v": value}, "c"))["folder"].ok


def test_moves_made_while_the_tracker_is_down_arrive_in_order_once(store: ArtifactStore,
                                                                   tracker: FolderBackend) -> None:
    log_two(store, tracker)
    (tracker.root / "DOWN").touch()
    store.set_alias("cfg:v1", "prod")  # committed locally even though the tracker is down
    store.set_alias("cfg:v2", "prod")
    store.remove_alias("cfg", "prod")
    assert store.get("cfg:v2").aliases == [] and tracker.alias_moves() == []
    waiting = store.alias_events("cfg")
    assert [(e.action, e.ref, e.status) for e in waiting] == [
        ("set", "cfg:v1", "failed"), ("remove", "cfg:v1", "pending"), ("set", "cfg:v2", "pending"),
        ("remove", "cfg:v2", "pending")]  # the first failed; the rest wait behind it

    assert not [r for r in store.sync() if r.ok]  # still down: nothing jumps the queue
    (tracker.root / "DOWN").unlink()
    assert [r.ok for r in store.sync()] == [True] * 4
    assert tracker.alias_moves() == [["set", "cfg:v1", "prod"], ["remove", "cfg:v1", "prod"],
                                     ["set", "cfg:v2", "prod"], ["remove", "cfg:v2", "prod"]]
    assert store.sync() == [] and len(tracker.alias_moves()) == 4


def test_a_move_waits_for_its_versions_own_delivery(store: ArtifactStore, tracker: FolderBackend,
                                                    tmp_path: Path) -> None:
    down = FolderBackend(str(tracker.root), fail=True)
    exp = Experiment("e", backend=[down], store=store)
    assert not exp.log_artifact(exp.create_artifact("cfg", "config").add_object({"v": 1}, "c"))["folder"].ok
    store.set_alias("cfg:v1", "prod")
    assert [e.status for e in store.alias_events("cfg")] == ["pending"]  # the tracker lacks the version
    assert [(r.version, r.ok) for r in store.sync()] == [("v1", True), ("cfg:v1", True)]
    assert tracker.alias_moves() == [["set", "cfg:v1", "prod"]]


def test_versions_no_tracker_holds_queue_nothing_and_moving_nowhere_is_no_event(
        store: ArtifactStore, tracker: FolderBackend) -> None:
    plain = store.log(Experiment("x", store=store).create_artifact("solo", "config").add_object({"v": 1}, "c"))
    store.set_alias(plain.ref, "prod")
    assert store.alias_events("solo", status="delivered") == store.alias_events("solo") == []
    log_two(store, tracker)
    store.set_alias("cfg:v1", "prod")
    store.set_alias("cfg:v1", "prod")  # already there: nothing moves
    assert len(store.alias_events("cfg", status="delivered")) == 1


def test_the_cli_alias_command_reaches_the_tracker(store_dir: Path, tracker: FolderBackend) -> None:
    with ArtifactStore.open(store_dir) as store:
        log_two(store, tracker)
    result = CliRunner().invoke(app, ["--store", str(store_dir), "alias", "cfg:v2", "best"])
    assert result.exit_code == 0, result.output
    assert tracker.alias_moves() == [["set", "cfg:v2", "best"]]


def test_a_backend_without_alias_hooks_keeps_working(store: ArtifactStore, tmp_path: Path) -> None:
    class Minimal(Backend):  # a third-party backend written before alias events existed
        name = "minimal"

        def log(self, artifact):  # type: ignore[no-untyped-def]
            from tracelet_core import ArtifactResult

            return ArtifactResult(backend=self.name, ok=True, version=artifact.version)

    register_backend("minimal", Minimal)
    try:
        exp = Experiment("e", backend=[Minimal()], store=store)
        exp.log_artifact(exp.create_artifact("cfg", "config").add_object({"v": 1}, "c"))
        store.set_alias("cfg:v1", "prod")
        assert [e.status for e in store.alias_events("cfg", status="delivered")] == ["delivered"]
    finally:
        unregister_backend("minimal")


def test_registering_a_taken_name_is_refused_unless_asked(tracker: FolderBackend) -> None:
    class Other(FolderBackend):
        pass

    register_backend("folder", FolderBackend)  # the same factory again: fine
    with pytest.raises(ConfigurationError, match="'folder' is already taken"):
        register_backend("folder", Other)
    with pytest.raises(ConfigurationError, match="'mlflow' is already taken"):
        register_backend("mlflow", Other)
    register_backend("folder", Other, clobber=True)
    from tracelet_core._backends import resolve_backend

    assert type(resolve_backend("folder", {"root": str(tracker.root)})) is Other


def test_a_tracker_unknown_here_fails_the_event_not_the_alias_change(store: ArtifactStore,
                                                                     tracker: FolderBackend) -> None:
    log_two(store, tracker)
    unregister_backend("folder")  # e.g. the CLI of another installation, without the backend
    store.set_alias("cfg:v1", "prod")
    assert store.get("cfg:prod").ref == "cfg:v1"
    [event] = store.alias_events("cfg")
    assert event.status == "failed" and "ConfigurationError" in (event.last_error or "")
    register_backend("folder", FolderBackend)
    assert [r.ok for r in store.sync()] == [True] and tracker.alias_moves() == [["set", "cfg:v1", "prod"]]
