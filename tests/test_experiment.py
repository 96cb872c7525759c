"""The ``Experiment`` facade, settings and the backend registry it resolves names through."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_support import FolderBackend
from support import MakeFile

from tracelet_core import (
    ArtifactStore,
    ArtifactType,
    BackendError,
    ConfigurationError,
    Experiment,
    ExperimentConfig,
    TraceletSettings,
    register_backend,
    route,
)
from tracelet_core._backends import BUILTIN_BACKENDS, unregister_backend


@pytest.fixture
def exp_store(store_dir: Path) -> Iterator[ArtifactStore]:
    with ArtifactStore.open(store_dir) as store:
        yield store


def test_guide_quickstart_logs_and_reads_back(exp_store: ArtifactStore, make_file: MakeFile) -> None:
    exp = Experiment(name="my_experiment", artifacts=True, store=exp_store)
    exp.start()
    artifact = exp.create_artifact("trained_classifier", ArtifactType.MODEL, "Trained classifier")
    artifact.add_file(make_file("model.pth", b"weights"), "model/classifier.pth")
    artifact.add_file(make_file("config.yaml", "lr: 0.1"), "model/config.yaml")
    results = exp.log_artifact(artifact, aliases=["candidate"])
    exp.stop()
    assert list(results) == ["local"]
    local = results["local"]
    assert local.ok and local.version == "v1" and local.backend == "local" and local.error is None
    got = exp.get_artifact("trained_classifier", version="candidate")
    assert got.producer is not None and got.producer.orchestrator == "tracelet"
    assert got.producer.name == "my_experiment"
    assert [a.ref for a in exp.list_artifacts(type_filter=ArtifactType.MODEL)] == ["trained_classifier:v1"]
    assert exp.list_artifacts(type_filter="dataset") == []


def test_get_artifact_in_a_started_experiment_becomes_an_input(exp_store: ArtifactStore) -> None:
    with Experiment("prep", store=exp_store) as prep:
        prep.log_artifact(prep.create_artifact("raw", "dataset").add_object([1, 2], "rows"))
    with Experiment("train", store=exp_store) as train:
        raw = train.get_artifact("raw")
        assert raw.load() == [1, 2]
        train.log_artifact(train.create_artifact("model", "model").add_object({"w": 1}, "w"))
    model = exp_store.get("model")
    assert model.inputs == ["raw:v1"]
    graph = exp_store.lineage("model:v1")
    assert set(graph.artifact_refs) == {"model:v1", "raw:v1"}


def test_reading_outside_a_started_experiment_records_nothing(exp_store: ArtifactStore) -> None:
    exp = Experiment("e", store=exp_store)
    exp.log_artifact(exp.create_artifact("a", "config").add_object({}, "c"))
    exp.get_artifact("a")
    assert exp.inputs == []


def test_unknown_backend_names_raise_configuration_error(exp_store: ArtifactStore,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="unknown backend 'nosuch'"):
        Experiment("e", backend=["nosuch"], store=exp_store)
    # a built-in backend whose SDK is missing names the extra to install (fault injected by
    # pointing the registry at a module that does not exist)
    monkeypatch.setitem(BUILTIN_BACKENDS, "mlflow", "tracelet_core.backends.not_installed:Nothing")
    with pytest.raises(ConfigurationError, match=r"tracelet-artifacts\[mlflow\]"):
        Experiment("e", backend="mlflow", store=exp_store)


def test_backends_from_env_and_registry_receive_routed_versions(
        exp_store: ArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = FolderBackend(str(tmp_path / "tracker"))
    register_backend("folder", lambda: backend)
    try:
        monkeypatch.setenv("TRACELET_BACKENDS", "folder")
        with Experiment("e", store=exp_store) as exp:
            results = exp.log_artifact(exp.create_artifact("cfg", "config").add_object({"a": 1}, "c"))
        assert set(results) == {"local", "folder"}
        assert results["folder"].ok and backend.uploads == 1
        assert (tmp_path / "tracker/cfg/v1/files/c.json").read_text().strip().startswith("{")
        assert [a.ref for a in exp.list_artifacts(backend="folder")] == ["cfg:v1"]
        with pytest.raises(ConfigurationError):
            exp.list_artifacts(backend="wandb")
    finally:
        unregister_backend("folder")


def test_a_failing_backend_never_fails_the_local_commit(exp_store: ArtifactStore, tmp_path: Path) -> None:
    broken = FolderBackend(str(tmp_path / "tracker"), fail=True)
    broken.name = "broken"
    exp = Experiment("e", backend=[broken], store=exp_store)
    results = exp.log_artifact(exp.create_artifact("cfg", "config").add_object({"a": 1}, "c"))
    assert results["local"].ok
    assert not results["broken"].ok and "tracker unreachable" in (results["broken"].error or "")
    assert exp_store.get("cfg").version == "v1"
    strict = Experiment("e", backend=[broken], store=exp_store, strict=True)
    with pytest.raises(BackendError, match="committed locally"):
        strict.log_artifact(strict.create_artifact("cfg", "config").add_object({"a": 2}, "c"))
    assert exp_store.get("cfg").version == "v2"


def test_routing_follows_the_default_table_and_overrides() -> None:
    both = ["mlflow", "wandb", "clearml"]
    assert route(ArtifactType.MODEL, {}, both) == ["mlflow"]
    assert route(ArtifactType.CHECKPOINT, {}, both) == ["mlflow"]
    assert route(ArtifactType.WEIGHTS, {}, both) == ["mlflow"]
    for media in (ArtifactType.IMAGE, ArtifactType.AUDIO, ArtifactType.VIDEO, ArtifactType.VISUALIZATION):
        assert route(media, {}, both) == ["wandb"]
    assert route(ArtifactType.DATASET, {}, both) == ["clearml"]
    for universal in (ArtifactType.CONFIG, ArtifactType.CODE, ArtifactType.CUSTOM, ArtifactType.REPORT,
                      ArtifactType.SAMPLE):
        assert route(universal, {}, both) == both
    assert route(ArtifactType.MODEL, {}, ["wandb"]) == ["wandb"]  # preferred not configured
    assert route(ArtifactType.MODEL, {"preferred_backends": ["clearml", "wandb"]}, both) == ["wandb", "clearml"]
    assert route(ArtifactType.MODEL, {}, []) == []


def test_logging_from_another_thread_uses_the_same_run(exp_store: ArtifactStore) -> None:
    with Experiment("threads", store=exp_store) as exp:
        errors: list[BaseException] = []

        def worker(index: int) -> None:
            try:
                exp.log_artifact(exp.create_artifact(f"t{index}", "custom").add_object(index, "i"))
            except BaseException as exc:  # noqa: BLE001 - surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    runs = {exp_store.get(f"t{i}").producer for i in range(4)}
    assert runs == {exp.run}


def test_settings_read_every_documented_env_var(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRACELET_STORE_URI", str(tmp_path / "s"))
    monkeypatch.setenv("TRACELET_CATALOG_URL", "sqlite:///x.db")
    monkeypatch.setenv("TRACELET_BACKENDS", "mlflow, wandb")
    monkeypatch.setenv("TRACELET_ENABLE_ARTIFACTS", "false")
    monkeypatch.setenv("TRACELET_AUTOMAGIC_ARTIFACTS", "true")
    monkeypatch.setenv("TRACELET_WATCH_FILESYSTEM", "true")
    monkeypatch.setenv("TRACELET_ARTIFACT_WATCH_DIRS", "./checkpoints,./outputs")
    monkeypatch.setenv("TRACELET_ALLOW_PICKLE", "1")
    monkeypatch.setenv("TRACELET_STORAGE_OPTIONS", '{"endpoint_url": "http://127.0.0.1:9000"}')
    settings = TraceletSettings()
    assert settings.store_uri == str(tmp_path / "s")
    assert settings.catalog_url == "sqlite:///x.db"
    assert settings.backends == ["mlflow", "wandb"]
    assert settings.enable_artifacts is False and settings.automagic_artifacts is True
    assert settings.watch_filesystem is True
    assert settings.artifact_watch_dirs == ["./checkpoints", "./outputs"]
    assert settings.allow_pickle is True
    assert settings.storage_options == {"endpoint_url": "http://127.0.0.1:9000"}
    assert TraceletSettings(artifact_watch_dirs=["a"], backends=[]).artifact_watch_dirs == ["a"]


def test_settings_defaults_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRACELET_STORE_URI")
    settings = TraceletSettings()
    assert settings.store_uri == "~/.tracelet/store" and settings.catalog_url is None
    assert settings.backends == [] and settings.enable_artifacts and not settings.automagic_artifacts
    assert not settings.watch_filesystem and settings.artifact_watch_dirs == [] and not settings.allow_pickle
    monkeypatch.setenv("TRACELET_STORAGE_OPTIONS", "[1, 2]")
    with pytest.raises(ConfigurationError):
        TraceletSettings.load()


def test_env_var_disables_artifacts_for_experiments(exp_store: ArtifactStore,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACELET_ENABLE_ARTIFACTS", "false")
    exp = Experiment("e", store=exp_store)
    assert exp.config.enable_artifacts is False
    with pytest.raises(ConfigurationError, match="disabled"):
        exp.log_artifact(exp.create_artifact("a", "config").add_object({}, "c"))


def test_experiment_config_is_taken_as_given(exp_store: ArtifactStore, tmp_path: Path) -> None:
    config = ExperimentConfig(enable_artifacts=True, automagic_artifacts=True, watch_filesystem=False,
                              artifact_watch_dirs=[str(tmp_path)])
    exp = Experiment("e", config=config, artifacts=True, store=exp_store)
    assert exp.config.automagic_artifacts is True and exp.config.artifact_watch_dirs == [str(tmp_path)]
    assert Experiment("e", artifacts=False, store=exp_store).config.enable_artifacts is False


def test_store_argument_accepts_a_uri_or_a_path(tmp_path: Path) -> None:
    for store_arg in (str(tmp_path / "by-uri"), tmp_path / "by-path"):
        exp = Experiment("e", store=store_arg)
        exp.log_artifact(exp.create_artifact("a", "config").add_object({"x": 1}, "c"))
        with ArtifactStore.open(store_arg) as store:
            assert store.get("a").load() == {"x": 1}
