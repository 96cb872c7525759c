"""What an MLflow user sees of a tracelet model, read back with ``MlflowClient`` on a SQLite
store: the logged model as the run's output (``model_id`` on the registry version and in the
``MLmodel``), the example and environment files MLflow writes, context tags and params, the
``tracelet.aliases`` tags in step with alias moves, dataset inputs, and the experiment named
after the Dagster job that produced a version."""

from __future__ import annotations

import os

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # decided at import: tests never send telemetry

import json  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.models import Model  # noqa: E402
from test_mlflow import TinyNet, mlflow_env, record_of, runs_holding  # noqa: E402,F401 - mlflow_env: autouse

from tracelet_core import ArtifactStore, Experiment, RunInfo, TraceletArtifact  # noqa: E402
from tracelet_core._backends import delivery_target  # noqa: E402
from tracelet_core.backends.mlflow import MlflowBackend  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings(r"ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"),
]

MLFLOW_FILES = {"MLmodel", "input_example.json", "serving_input_example.json", "conda.yaml", "python_env.yaml",
                "requirements.txt"}


def model_files(client: MlflowClient, model_id: str) -> set[str]:
    return {Path(f.path).name for f in client.list_logged_model_artifacts(model_id)}


@pytest.fixture
def native_models(tracking_uri: str, artifact_root: str, store: ArtifactStore,
                  monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A torch and an sklearn model (with input examples, trained on a dataset version)
    delivered inside one tracelet experiment."""
    from sklearn.linear_model import LogisticRegression

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)  # models:/ URIs resolve through it
    torch.manual_seed(0)
    features = np.array([[0.0, 1.0], [1.0, 0.0], [0.9, 0.2], [0.1, 0.8]])
    clf = LogisticRegression().fit(features, [0, 1, 1, 0])
    backend = MlflowBackend(tracking_uri=tracking_uri, artifact_location=artifact_root)
    with Experiment("native", backend=[backend], store=store) as exp:
        table = store.log(TraceletArtifact("demo/train", "dataset").add_object({"rows": 4}, "summary"))
        config = TraceletArtifact("demo/params", "config").add_object({"C": 1.0}, "hparams")
        assert exp.log_artifact(config)["mlflow"].ok
        params = store.get("demo/params:v1")  # its keys are the run's params now
        exp.log_artifact(TraceletArtifact("demo/net", "model", metadata={"epochs": 3, "opt": {"lr": 0.1}})
                         .add_model(TinyNet(), input_example=torch.randn(3, 4)), inputs=[table, params],
                         aliases=["candidate"])
        exp.log_artifact(TraceletArtifact("demo/clf", "model").add_model(clf, input_example=features),
                         inputs=[table])
    client = MlflowClient(tracking_uri=tracking_uri)
    return {"client": client, "store": store, "net": store.get("demo/net:v1"), "clf": store.get("demo/clf:v1")}


def test_the_logged_model_is_the_runs_output_with_mlflows_own_files(native_models: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    client: MlflowClient = native_models["client"]
    for key, flavor in (("net", "pytorch"), ("clf", "sklearn")):
        logged = native_models[key]
        [run] = runs_holding(client, logged)
        record = record_of(run, logged)
        model_id = record["model_id"]
        assert record["flavor"] == flavor
        outputs = client.get_run(run.info.run_id).outputs
        assert model_id in [m.model_id for m in outputs.model_outputs]  # the run page's "Logged models"
        model = client.get_logged_model(model_id)
        assert model.source_run_id == run.info.run_id
        assert model.tags["tracelet.ref"] == logged.ref
        assert model.tags["mlflow.user"] and model.tags["mlflow.source.name"]  # as log_model tags them
        version = client.get_model_version(logged.name.replace("/", "."), "1")
        assert version.source == f"models:/{model_id}"  # the version's "Source model" link
        assert json.loads(model.tags["mlflow.modelVersions"]) == [{"name": version.name, "version": "1"}]
        assert model_files(client, model_id) >= MLFLOW_FILES, model_files(client, model_id)
        mlmodel = Model.load(f"models:/{model_id}")
        assert (mlmodel.model_id, mlmodel.run_id) == (model_id, run.info.run_id)
        assert mlmodel.saved_input_example_info is not None
        serving = json.loads(Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"{model.artifact_location}/serving_input_example.json",
            dst_path=str(tmp_path / key))).read_text())
        assert np.asarray(serving["inputs"]).shape == np.asarray(logged.load("model_input_example")).shape
    net = client.get_logged_model(record_of(runs_holding(client, native_models["net"])[0],
                                            native_models["net"])["model_id"])
    assert {k: net.params.get(k) for k in ("epochs", "opt.lr", "framework", "C")} == {
        "epochs": "3", "opt.lr": "0.1", "framework": "pytorch", "C": "1.0"}  # metadata + run params


def test_dataset_inputs_and_aliases_tags_follow(native_models: dict[str, Any]) -> None:
    client: MlflowClient = native_models["client"]
    store: ArtifactStore = native_models["store"]
    net = native_models["net"]
    [run] = runs_holding(client, net)
    inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
    named = {i.dataset.name: {t.key: t.value for t in i.tags} for i in inputs}
    assert named["demo/train:v1"] == {"mlflow.data.context": "input", "tracelet.ref": "demo/train:v1"}
    assert "demo/params:v1" not in named  # a config input is no dataset
    assert json.loads(next(i.dataset.source for i in inputs if i.dataset.name == "demo/train:v1")) == {
        "uri": "tracelet://demo/train:v1"}

    model_id = record_of(run, net)["model_id"]
    store.set_alias(net.ref, "production")
    store.remove_alias("demo/net", "candidate")
    assert not store.alias_events(status="failed"), store.alias_events(status="failed")
    assert client.get_model_version("demo.net", "1").tags["tracelet.aliases"] == "production"
    assert client.get_logged_model(model_id).tags["tracelet.aliases"] == "production"
    assert record_of(client.get_run(run.info.run_id), net)["aliases"] == ["production"]
    assert set(client.get_model_version("demo.net", "1").aliases) == {"production"}


# -- which experiment -------------------------------------------------------------------------
def test_the_experiment_is_the_job_or_flow_never_dagsters_ephemeral_job(store: ArtifactStore) -> None:
    made: list[str] = []

    def target(producer: RunInfo | None, started: tuple[str, str] | None = None,
               configured: str | None = None) -> tuple[str, str, str]:
        made.append("v")
        logged = store.log(TraceletArtifact("t", "config").add_object({"v": len(made)}, "c"), producer=producer)
        return delivery_target(logged, started, configured)

    job = RunInfo(orchestrator="dagster", run_id="r1", step="train_model", name="nightly_job")
    ephemeral = RunInfo(orchestrator="dagster", run_id="r2", step="train_model", name="__ephemeral_asset_job__")
    flow = RunInfo(orchestrator="prefect", run_id="f1", step="t1", name="retrain")
    assert target(job) == ("nightly_job", "r1", "nightly_job")
    assert target(ephemeral)[0] == "train_model"
    assert target(ephemeral, ("__ephemeral_asset_job__", "r2"))[0] == "train_model"  # as the adapter starts it
    assert target(flow, ("some-task", "f1"))[0] == "retrain"
    assert target(ephemeral, configured="mine")[0] == "mine"
    experiment = RunInfo(orchestrator="tracelet", run_id="e1", name="exp")
    assert target(experiment, ("exp", "e1")) == ("exp", "e1", "exp")


def test_a_dagster_asset_lands_in_its_assets_experiment_and_the_override_wins(
        tracking_uri: str, store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster import asset, materialize

    from tracelet_dagster import TraceletIOManager

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)

    runs: list[int] = []

    @asset
    def churn_model() -> dict[str, float]:
        runs.append(1)
        return {"threshold": 0.5, "run": float(len(runs))}  # a new version each time

    io_manager = TraceletIOManager(store_uri=str(store_dir), backends=["mlflow"])
    assert materialize([churn_model], resources={"io_manager": io_manager}).success
    client = MlflowClient(tracking_uri=tracking_uri)
    names = {e.name for e in client.search_experiments()}
    assert "churn_model" in names and "__ephemeral_asset_job__" not in names
    [run] = client.search_runs([client.get_experiment_by_name("churn_model").experiment_id])
    assert run.data.tags["mlflow.user"] and run.info.status == "FINISHED"

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "churn")  # MLflow's own variable, read by the backend
    assert materialize([churn_model], resources={"io_manager": io_manager}).success
    assert MlflowBackend().config()["experiment"] == "churn"
    [run] = client.search_runs([client.get_experiment_by_name("churn").experiment_id])
    assert MlflowBackend(experiment="explicit").experiment == "explicit"


def test_a_sequential_whose_layers_tracelet_does_not_keep_stays_run_files_and_says_why(
        tracking_uri: str, artifact_root: str, store: ArtifactStore) -> None:
    logged = store.log(TraceletArtifact("demo/seq", "model").add_model(
        torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.ReLU())))
    result = MlflowBackend(tracking_uri=tracking_uri, artifact_location=artifact_root).log(logged)
    assert result.ok, result.error
    [run] = runs_holding(MlflowClient(tracking_uri=tracking_uri), logged)
    assert "Sequential() made without arguments" in record_of(run, logged)["flavor_error"]
