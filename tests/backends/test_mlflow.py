"""The MLflow backend: the shared suite on a SQLite tracking store; what an MLflow user sees
(registry versions and aliases, run tags, ``download_artifacts`` bytes); routing by name; and
one real ``mlflow server`` on 127.0.0.1 for the unreachable-tracker fault test."""

from __future__ import annotations

import os

# MLflow decides at import whether to send telemetry (to an outside host); tests never do.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from backend_support import FolderBackend, log_in_run  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Run  # noqa: E402
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository  # noqa: E402
from suite import BackendSuite, TrackerView  # noqa: E402
from support import free_port  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from tracelet_core import (  # noqa: E402
    ArtifactResult,
    ArtifactStore,
    Backend,
    BackendError,
    Experiment,
    LoggedArtifact,
    TraceletArtifact,
    TraceletSettings,
)
from tracelet_core.backends.mlflow import (  # noqa: E402
    MlflowBackend,
    registered_model_name,
    run_tag_key,
    version_record,
)
from tracelet_core.cli import app  # noqa: E402

pytestmark = [
    # MLflow's SQLAlchemy store still configures a ``noload`` relationship (SQLAlchemy 2.1).
    pytest.mark.filterwarnings(r"ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"),
]


@pytest.fixture(autouse=True)
def mlflow_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer MLflow settings; MLflow's relative defaults (``mlruns``) land in tmp_path."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.chdir(tmp_path)


def runs_holding(client: MlflowClient, artifact: LoggedArtifact) -> list[Run]:
    """Active runs, in any experiment, whose tags record ``artifact``'s ref."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    key = run_tag_key(artifact.name, artifact.version)
    return [run for run in client.search_runs(experiments, f"tags.`{key}` LIKE '%'")
            if json.loads(run.data.tags[key])["ref"] == artifact.ref]


def record_of(run: Run, artifact: LoggedArtifact) -> dict[str, Any]:
    """The version's record run tag, parsed."""
    record = version_record(run.data.tags, artifact.name, artifact.version)
    assert record is not None, run.data.tags
    return record


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class TestMlflowBackend(BackendSuite):
    """The shared suite against a SQLite tracking store and a local artifact root."""

    @pytest.fixture
    def make_backend(self, tracking_uri: str, artifact_root: str, tmp_path: Path) -> Callable[[], MlflowBackend]:
        self.scratch = tmp_path / "read-back"
        return lambda: MlflowBackend(tracking_uri=tracking_uri, artifact_location=artifact_root)

    def read_back(self, backend: Backend, artifact: LoggedArtifact, result: ArtifactResult) -> TrackerView:
        assert isinstance(backend, MlflowBackend)
        client = MlflowClient(tracking_uri=backend.tracking_uri)
        runs = runs_holding(client, artifact)
        assert runs, f"no MLflow run carries {artifact.ref}"
        run = runs[0]
        dest = self.scratch / f"{artifact.name}-{artifact.version}-{len(list(self.scratch.glob('*')))}"
        dest.mkdir(parents=True)
        local = Path(mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path=f"{artifact.name}/{artifact.version}", dst_path=str(dest),
            tracking_uri=backend.tracking_uri))
        record = record_of(run, artifact)
        manifest = json.loads((local / "tracelet-manifest.json").read_text())
        tags = {f"tracelet.{k}": str(v) for k, v in record.items()}
        tags["tracelet.inputs"] = ",".join(manifest["inputs"])
        references = {**manifest["referenced"], **{r["name"]: r["uri"] for r in manifest["references"]}}
        return TrackerView(files=tree(local / "files") if (local / "files").is_dir() else {}, tags=tags,
                           references=references, copies=len(runs))

    def break_tracker(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def refuse(repo: Any, local_dir: str, artifact_path: str | None = None) -> None:
            raise ConnectionError("injected fault: the artifact store refused the upload")

        monkeypatch.setattr(LocalArtifactRepository, "log_artifacts", refuse)

    def aliases_held(self, backend: Backend, artifact: LoggedArtifact) -> set[str]:
        assert isinstance(backend, MlflowBackend)
        client = MlflowClient(tracking_uri=backend.tracking_uri)
        [found] = client.search_model_versions(
            f"name = '{registered_model_name(artifact.name)}' and tags.`tracelet.ref` = '{artifact.ref}'")
        model_version = client.get_model_version(found.name, found.version)  # search leaves out aliases
        [run] = runs_holding(client, artifact)
        tagged = set(record_of(run, artifact)["aliases"])
        assert set(model_version.aliases) == tagged, (model_version.aliases, tagged)  # registry and run agree
        in_tag = {a for a in model_version.tags["tracelet.aliases"].split(",") if a}
        assert in_tag == tagged, (in_tag, tagged)  # the version's tracelet.aliases tag keeps step
        return set(model_version.aliases)

    def params_held(self, backend: Backend, artifact: LoggedArtifact, result: ArtifactResult) -> dict[str, str]:
        assert isinstance(backend, MlflowBackend)
        [run] = runs_holding(MlflowClient(tracking_uri=backend.tracking_uri), artifact)
        return dict(run.data.params)

    def status_held(self, backend: Backend, artifact: LoggedArtifact) -> str | None:
        assert isinstance(backend, MlflowBackend)
        client = MlflowClient(tracking_uri=backend.tracking_uri)
        [found] = client.search_model_versions(
            f"name = '{registered_model_name(artifact.name)}' and tags.`tracelet.ref` = '{artifact.ref}'")
        [run] = runs_holding(client, artifact)
        on_run = run.data.tags.get(run_tag_key(artifact.name, artifact.version, "status"))
        assert found.tags.get("tracelet.status") == on_run  # model version and run agree
        return on_run

    def media_held(self, backend: Backend, artifact: LoggedArtifact, result: ArtifactResult) -> list[str]:
        assert isinstance(backend, MlflowBackend)
        client = MlflowClient(tracking_uri=backend.tracking_uri)
        [run] = runs_holding(client, artifact)
        return [a.path for a in client.list_artifacts(run.info.run_id, "images")]

    def test_aliases_given_to_log_leave_the_previous_version(self, make_backend: Any, store: ArtifactStore,
                                                             version: LoggedArtifact) -> None:
        self.check_aliases_given_to_log_leave_the_previous_version(make_backend, store, version)

    # -- MLflow specifics -----------------------------------------------------------------
    def test_a_model_is_registered_with_tags_and_mirrored_aliases(
            self, make_backend: Callable[[], MlflowBackend], version: LoggedArtifact, store: ArtifactStore,
            tmp_path: Path) -> None:
        backend = make_backend()
        store.set_alias(version.ref, "prod.eu")
        first = backend.log(store.get(version.ref))
        assert (first.ok, first.version, first.uri) == (True, "1", "models:/suite.model/1")

        client = MlflowClient(tracking_uri=backend.tracking_uri)
        registered = client.get_registered_model("suite.model")
        assert registered.tags["tracelet.name"] == "suite/model"
        model_version = client.get_model_version_by_alias("suite.model", "candidate")
        assert str(model_version.version) == "1"
        assert str(client.get_model_version_by_alias("suite.model", "prod_eu").version) == "1"  # '.' -> '_'
        assert model_version.tags["tracelet.ref"] == "suite/model:v1"
        assert model_version.tags["tracelet.digest"] == version.digest
        assert model_version.tags["tracelet.inputs"] == "suite/raw:v1"
        assert model_version.description == "suite model"
        assert model_version.source.endswith("/suite/model/v1/files")
        # the registry's copy is the run's files
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/suite.model/1",
                                                         dst_path=str(tmp_path / "registry"),
                                                         tracking_uri=backend.tracking_uri))
        assert tree(local)["weights/model.bin"] == version.path("weights/model.bin").read_bytes()

        # the next version takes the alias; relogging v1 makes no second registry version
        v2 = store.log(version.new_draft().add_object({"loss": 0.2}, "loss"), aliases=["candidate"])
        assert backend.log(v2).version == "2"
        assert backend.log(store.get(version.ref)).version == "1"
        assert str(client.get_model_version_by_alias("suite.model", "candidate").version) == "2"
        assert sorted(str(m.version) for m in client.search_model_versions("name = 'suite.model'")) == ["1", "2"]

    def test_the_run_carries_tags_and_download_artifacts_returns_the_bytes(
            self, make_backend: Callable[[], MlflowBackend], version: LoggedArtifact, tmp_path: Path) -> None:
        backend = make_backend()
        result = log_in_run(backend, version, "suite-experiment", "run-42")
        client = MlflowClient(tracking_uri=backend.tracking_uri)
        [run] = runs_holding(client, version)
        assert client.get_experiment(run.info.experiment_id).name == "suite-experiment"
        assert run.info.run_name == "suite-experiment" and run.info.status == "FINISHED"
        assert run.data.tags["tracelet.run_id"] == "run-42"
        record = json.loads(run.data.tags["tracelet/suite/model/v1"])  # one compact tag per version
        assert record == {"ref": "suite/model:v1", "digest": version.digest, "type": "model",
                          "aliases": ["candidate"], "registered_model": f"suite.model/{result.version}"}
        assert not [k for k in run.data.tags if k.startswith("tracelet/") and k != "tracelet/suite/model/v1"]
        assert run.data.tags["mlflow.user"] and run.data.tags["mlflow.source.type"] == "LOCAL"
        assert run.data.tags["mlflow.source.name"]

        everything = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / "dl"),
                                                              tracking_uri=backend.tracking_uri))
        files = tree(everything)
        for entry in [*version.files, *version.objects]:
            assert files[f"suite/model/v1/files/{entry.path}"] == version.path(entry.path).read_bytes()
        manifest = json.loads(files["suite/model/v1/tracelet-manifest.json"])
        assert (manifest["ref"], manifest["digest"], manifest["inputs"]) == ("suite/model:v1", version.digest,
                                                                             ["suite/raw:v1"])

    def test_a_model_routes_to_mlflow_named_by_string_with_the_tracking_uri_from_env(
            self, store: ArtifactStore, make_file: Any, tmp_path: Path, empty_tracking_db: Path,
            monkeypatch: pytest.MonkeyPatch) -> None:
        shutil.copy(empty_tracking_db, tmp_path / "env.db")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'env.db'}")
        folder = FolderBackend(str(tmp_path / "folder"))
        with Experiment("routing", backend=["mlflow", folder], store=store) as exp:
            model = exp.log_artifact(exp.create_artifact("clf", "model").add_file(make_file("m.pt", b"pt"), "m.pt"))
            config = exp.log_artifact(exp.create_artifact("cfg", "config").add_object({"lr": 0.1}, "cfg"))
            run_id = exp.run.run_id
        assert sorted(model) == ["local", "mlflow"]  # model -> mlflow only
        assert sorted(config) == ["folder", "local", "mlflow"]  # config -> every backend
        assert model["mlflow"].ok and config["mlflow"].ok, (model["mlflow"].error, config["mlflow"].error)
        assert store.deliveries("clf:v1")[0].config["tracking_uri"] == f"sqlite:///{tmp_path / 'env.db'}"

        client = MlflowClient()  # the env's tracking URI
        [run] = client.search_runs([client.get_experiment_by_name("routing").experiment_id])
        assert run.data.tags["tracelet.run_id"] == run_id and run.info.status == "FINISHED"
        assert {json.loads(run.data.tags["tracelet/clf/v1"])["ref"],
                json.loads(run.data.tags["tracelet/cfg/v1"])["ref"]} == {"clf:v1", "cfg:v1"}
        assert client.get_model_version("clf", "1").tags["tracelet.ref"] == "clf:v1"
        assert exp.get_artifact("clf", backend="mlflow").ref == "clf:v1"  # read back through MLflow, verified

    def test_name_collisions_in_the_registry_and_missing_copies_are_backend_errors(
            self, make_backend: Callable[[], MlflowBackend], store: ArtifactStore, make_file: Any) -> None:
        backend = make_backend()
        backend.log(store.log(TraceletArtifact("team/clf", "model").add_object({"w": 1}, "w")))
        dotted = store.log(TraceletArtifact("team.clf", "model").add_object({"w": 2}, "w"))
        with pytest.raises(BackendError, match="belongs to tracelet name 'team/clf'"):
            backend.log(dotted)
        with pytest.raises(BackendError, match="holds no copy of team.clf:v1"):
            backend.fetch("team.clf", "v1", Path("fetched"))

    def test_sdk_errors_become_backend_errors_with_the_cause_chained(
            self, make_backend: Callable[[], MlflowBackend], version: LoggedArtifact,
            monkeypatch: pytest.MonkeyPatch) -> None:
        backend = make_backend()
        self.break_tracker(monkeypatch)
        with pytest.raises(BackendError, match="uploading suite/model:v1") as caught:
            backend.log(version)
        assert isinstance(caught.value.__cause__, ConnectionError)

    def test_a_delivery_cut_short_after_registering_is_completed_without_duplicates(
            self, make_backend: Callable[[], MlflowBackend], version: LoggedArtifact,
            monkeypatch: pytest.MonkeyPatch) -> None:
        def reset(*args: Any, **kwargs: Any) -> None:
            raise ConnectionError("injected fault: connection reset")

        backend = make_backend()
        with monkeypatch.context() as faults:  # the run tags (written last) never arrive
            faults.setattr(MlflowClient, "log_batch", reset)
            with pytest.raises(BackendError, match="tagging run"):
                backend.log(version)
        result = backend.log(version)
        client = MlflowClient(tracking_uri=backend.tracking_uri)
        assert len(runs_holding(client, version)) == 1
        assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == 1
        assert [str(m.version) for m in client.search_model_versions("name = 'suite.model'")] == [result.version]

    def test_a_writer_killed_mid_upload_is_delivered_once_by_tracelet_sync(
            self, tracking_uri: str, artifact_root: str, store_dir: Path, tmp_path: Path) -> None:
        child = textwrap.dedent(f"""
            import os, signal
            os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
            from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
            from tracelet_core import ArtifactStore, Experiment
            from tracelet_core.backends.mlflow import MlflowBackend

            upload = LocalArtifactRepository.log_artifacts
            def upload_then_die(self, *args, **kwargs):  # fault injection: killed after the upload
                upload(self, *args, **kwargs)
                os.kill(os.getpid(), signal.SIGKILL)
            LocalArtifactRepository.log_artifacts = upload_then_die

            store = ArtifactStore.open({str(store_dir)!r})
            backend = MlflowBackend(tracking_uri={tracking_uri!r}, artifact_location={artifact_root!r})
            exp = Experiment("doomed", backend=[backend], store=store)
            exp.log_artifact(exp.create_artifact("clf", "model").add_object({{"w": 1}}, "w"))
        """)
        proc = subprocess.run([sys.executable, "-W", "ignore", "-c", child], capture_output=True, text=True,
                              check=False, cwd=tmp_path, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        client = MlflowClient(tracking_uri=tracking_uri)
        [half] = client.search_runs([client.get_experiment_by_name("doomed").experiment_id])
        assert not [k for k in half.data.tags if k.startswith("tracelet/")]  # files there, tags not

        synced = CliRunner().invoke(app, ["--store", str(store_dir), "sync", "--json"])
        assert synced.exit_code == 0, synced.output
        assert json.loads(synced.stdout)["delivered"] == 1
        [run] = client.search_runs([client.get_experiment_by_name("doomed").experiment_id])
        assert run.info.run_id == half.info.run_id and json.loads(run.data.tags["tracelet/clf/v1"])["ref"] == "clf:v1"
        assert [str(m.version) for m in client.search_model_versions("name = 'clf'")] == ["1"]
        assert "retried 0 deliveries" in CliRunner().invoke(app, ["--store", str(store_dir), "sync"]).stdout


# -- a real tracking server ------------------------------------------------------------------
@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """``start(port)`` runs ``mlflow server`` (SQLite store, proxied artifacts) on 127.0.0.1 and
    returns its URL once ``/health`` answers; the server is killed at the end."""
    started: list[tuple[subprocess.Popen[bytes], Any]] = []
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def start(port: int) -> str:
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner processes
        log = (tmp_path / "server.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
             "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
        started.append((proc, log))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90  # it answers after about 12-15 s
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                with no_proxy.open(f"{url}/health", timeout=1) as answer:
                    if answer.status == 200:
                        return url
            except OSError:
                time.sleep(0.25)  # the next poll; connection refused comes back at once
        raise AssertionError(f"mlflow server did not answer {url}/health within 90 s")

    yield start
    for proc, log in started:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_an_unreachable_tracker_fails_fast_then_sync_delivers_once_to_a_real_server(
        mlflow_server: Callable[[int], str], store: ArtifactStore, make_file: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)  # default settings: MLflow alone would retry for minutes
    default = TraceletSettings.model_fields["backend_timeout"].default
    assert default == 10.0
    monkeypatch.setattr(store.settings, "backend_timeout", default)
    port = free_port()  # nothing listens here yet (as after the server stopped)
    url = f"http://127.0.0.1:{port}"
    exp = Experiment("served", backend=[MlflowBackend(tracking_uri=url)], store=store)
    model = exp.create_artifact("served/clf", "model").add_file(make_file("w.bin", b"\x00weights" * 64), "w.bin")

    results = exp.log_artifact(model, aliases=["staging"])
    assert results["local"].ok and not results["mlflow"].ok
    # MLflow itself gave up (a BackendError naming the server), not tracelet's time limit
    # (that one reports "TimeoutError: no answer from mlflow within 10.0 s").
    error = results["mlflow"].error or ""
    assert error.startswith("BackendError") and str(port) in error, error
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # tracelet's bounds were undone
    assert store.deliveries("served/clf:v1")[0].status == "failed"

    assert mlflow_server(port) == url
    retried = store.sync()
    assert [(r.backend, r.ok, r.version, r.uri) for r in retried] == [("mlflow", True, "1", "models:/served.clf/1")]
    assert store.sync() == []

    client = MlflowClient(tracking_uri=url)
    logged = store.get("served/clf:v1")
    [run] = runs_holding(client, logged)
    assert run.data.tags["tracelet.run_id"] == exp.run.run_id
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied through the server
    local = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="served/clf/v1/files",
                                                     dst_path=str(tmp_path / "dl"), tracking_uri=url))
    assert tree(local) == {"w.bin": b"\x00weights" * 64}
    assert client.get_model_version_by_alias("served.clf", "staging").tags["tracelet.digest"] == logged.digest
    assert [str(m.version) for m in client.search_model_versions("name = 'served.clf'")] == ["1"]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"  # delivered late, ended all the same

    store.set_alias("served/clf:v1", "production")  # delivered right away through the outbox
    assert str(client.get_model_version_by_alias("served.clf", "production").version) == "1"
    assert store.sync() == []


# -- what an MLflow user loads and sees ------------------------------------------------------
class TinyNet(torch.nn.Module):
    """A model MLflow's pytorch flavor can rebuild (importable, made without arguments)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x))


class NeedsArguments(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def test_torch_and_sklearn_models_load_with_pyfunc_and_predict_what_the_models_predict(
        tracking_uri: str, artifact_root: str, store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.linear_model import LogisticRegression

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)  # models:/ URIs resolve through it
    torch.manual_seed(0)
    net, example = TinyNet(), torch.randn(5, 4)
    features = np.array([[0.0, 1.0], [1.0, 0.0], [0.9, 0.2], [0.1, 0.8]])
    clf = LogisticRegression().fit(features, [0, 1, 1, 0])
    backend = MlflowBackend(tracking_uri=tracking_uri, artifact_location=artifact_root)
    with Experiment("native", backend=[backend], store=store) as exp:
        torch_result = exp.log_artifact(TraceletArtifact("demo/classifier", "model")
                                        .add_model(net, input_example=example))["mlflow"]
        sklearn_result = exp.log_artifact(TraceletArtifact("demo/sklearn", "model")
                                          .add_model(clf, input_example=features))["mlflow"]
    assert torch_result.uri == "models:/demo.classifier/1", torch_result.error
    assert sklearn_result.uri == "models:/demo.sklearn/1", sklearn_result.error

    loaded = mlflow.pyfunc.load_model("models:/demo.classifier/1")
    np.testing.assert_allclose(loaded.predict(example.numpy()), net(example).detach().numpy(), rtol=1e-5)
    assert loaded.metadata.get_input_schema() is not None and loaded.metadata.get_output_schema() is not None
    assert set(loaded.metadata.flavors) >= {"pytorch", "python_function"}
    np.testing.assert_array_equal(mlflow.pyfunc.load_model("models:/demo.sklearn/1").predict(features),
                                  clf.predict(features))
    np.testing.assert_array_equal(mlflow.sklearn.load_model("models:/demo.sklearn/1").predict(features),
                                  clf.predict(features))

    client = MlflowClient(tracking_uri=tracking_uri)
    logged = client.search_logged_models([client.get_experiment_by_name("native").experiment_id])
    assert sorted(m.model_type for m in logged) == ["pytorch", "sklearn"]
    assert {m.tags["tracelet.ref"] for m in logged} == {"demo/classifier:v1", "demo/sklearn:v1"}
    version = client.get_model_version("demo.classifier", "1")
    assert version.source in {f"models:/{m.model_id}" for m in logged}
    assert version.tags["tracelet.ref"] == "demo/classifier:v1"
    [run] = client.search_runs([client.get_experiment_by_name("native").experiment_id])
    assert run.info.status == "FINISHED"


def test_a_model_mlflow_cannot_rebuild_stays_run_files_and_says_why(
        make_file: Any, tracking_uri: str, artifact_root: str, store: ArtifactStore) -> None:
    backend = MlflowBackend(tracking_uri=tracking_uri, artifact_location=artifact_root)
    logged = store.log(TraceletArtifact("demo/wide", "model").add_model(NeedsArguments(3)))
    result = backend.log(logged)
    assert result.ok and result.uri == "models:/demo.wide/1", result.error
    client = MlflowClient(tracking_uri=tracking_uri)
    [run] = runs_holding(client, logged)
    assert "needs arguments" in record_of(run, logged)["flavor_error"]
    assert client.get_model_version("demo.wide", "1").source.endswith("/demo/wide/v1/files")


def test_many_and_long_config_keys_stay_within_mlflows_limits(
        tracking_uri: str, artifact_root: str, store: ArtifactStore) -> None:
    many = {f"k{i:03d}": i for i in range(150)}  # more than one log_batch holds
    config = TraceletArtifact("demo/config", "config").add_object(
        {"optimizer": {"lr": 0.1, "name": "adam"}, "long": "x" * 7000, **many}, "hparams")
    backend = MlflowBackend(tracking_uri=tracking_uri, artifact_location=artifact_root)
    with Experiment("params", backend=[backend], store=store) as exp:
        assert exp.log_artifact(config)["mlflow"].ok
    client = MlflowClient(tracking_uri=tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("params").experiment_id])
    params = run.data.params
    assert (params["optimizer.lr"], params["optimizer.name"], params["k149"]) == ("0.1", "adam", "149")
    assert len(params) == 153 and params["long"] == "x" * 6000


def test_a_run_left_running_is_finished_by_sync(
        tracking_uri: str, artifact_root: str, store: ArtifactStore, make_file: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    backend = MlflowBackend(tracking_uri=tracking_uri, artifact_location=artifact_root)
    exp = Experiment("late", backend=[backend], store=store).start()
    exp.log_artifact(exp.create_artifact("late/a", "model").add_object({"w": 1}, "w"))
    with monkeypatch.context() as faults:  # the tracker is down when the experiment ends
        faults.setattr(MlflowClient, "set_terminated", lambda *a, **k: (_ for _ in ()).throw(OSError("down")))
        faults.setattr(LocalArtifactRepository, "log_artifacts",
                       lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down")))
        assert not exp.log_artifact(exp.create_artifact("late/b", "model").add_object({"w": 2}, "w"))["mlflow"].ok
        exp.stop()
    client = MlflowClient(tracking_uri=tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("late").experiment_id])
    assert run.info.status == "RUNNING"
    assert [r.ok for r in store.sync()] == [True]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert run.data.tags["tracelet.run_id"] == exp.run.run_id


def test_a_dataframe_dataset_is_a_run_input(tracking_uri: str, artifact_root: str, store: ArtifactStore) -> None:
    import pandas as pd

    frame = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]})
    logged = store.log(TraceletArtifact("demo/table", "dataset").add_object(frame, "rows", serializer="parquet"))
    assert MlflowBackend(tracking_uri=tracking_uri, artifact_location=artifact_root).log(logged).ok
    client = MlflowClient(tracking_uri=tracking_uri)
    [run] = runs_holding(client, logged)
    [held] = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert held.dataset.name == "demo/table:v1/rows"
    assert logged.objects[0].digest.removeprefix("blake3:") in held.dataset.source  # the store's blob
