"""TraceletResource: the core API in ops and assets, with the Dagster run filled in."""

from typing import Any

import pytest
from dagster import AssetExecutionContext, OpExecutionContext, StaticPartitionsDefinition, asset, job, materialize, op

from tracelet_core import ArtifactResult, ArtifactStore, Backend, LoggedArtifact, TraceletArtifact, register_backend
from tracelet_core._backends import unregister_backend
from tracelet_dagster import TraceletIOManager, TraceletResource

pytest_plugins = ["dagster_fixtures"]


@asset(io_manager_key="tracelet")
def corpus() -> list[str]:
    return ["a b", "c"]


def test_log_and_get_record_the_step_and_what_it_read(dagster_resources: dict[str, object],
                                                      store: ArtifactStore) -> None:
    store.log(TraceletArtifact("vocab").add_object(["a", "b", "c"], "value", "json"), aliases=["golden"])

    @asset(io_manager_key="tracelet")
    def tokens(context: AssetExecutionContext, corpus: list[str], tracelet_store: TraceletResource) -> int:
        vocab = tracelet_store.get("vocab:golden")
        logged = tracelet_store.log(TraceletArtifact("tokens/table", "dataset").add_object(
            [w for line in corpus for w in line.split()], "value", "json"))
        context.add_output_metadata({"table": logged.ref})
        return len(vocab.load())

    result = materialize([corpus, tokens], resources=dagster_resources)

    table = store.get("tokens/table:v1")
    assert table.producer is not None
    assert (table.producer.orchestrator, table.producer.run_id, table.producer.step) == (
        "dagster", result.run_id, "tokens")
    assert table.inputs == ["corpus:v1", "vocab:v1"]  # read by the IO manager, then by the resource
    assert store.get("tokens:v1").inputs == ["corpus:v1", "vocab:v1"]
    assert table.load("value") == ["a", "b", "c"]


def test_an_asset_returning_the_version_it_logged_is_that_version(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    @asset(io_manager_key="tracelet")
    def report(tracelet_store: TraceletResource) -> LoggedArtifact:
        return tracelet_store.log(TraceletArtifact("report", "report").add_object({"ok": True}, "value", "json"))

    @asset(io_manager_key="tracelet")
    def checked(report: dict[str, bool]) -> bool:
        return report["ok"]

    @asset(io_manager_key="tracelet")
    def misnamed(tracelet_store: TraceletResource) -> LoggedArtifact:
        return tracelet_store.log(TraceletArtifact("elsewhere").add_object(1, "value", "json"))

    result = materialize([report, checked], resources=dagster_resources)

    assert [v.ref for v in store.versions("report")] == ["report:v1"]
    [materialization] = result.asset_materializations_for_node("report")
    assert materialization.metadata["tracelet/ref"].value == "report:v1"
    assert store.get("checked:v1").inputs == ["report:v1"]
    failed = materialize([misnamed], resources=dagster_resources, raise_on_error=False)
    assert not failed.success


def test_the_run_and_partition_come_from_the_current_context(store_dir: Any, store: ArtifactStore) -> None:
    seen: list[Any] = []

    @asset(partitions_def=StaticPartitionsDefinition(["eu", "us"]))
    def regional(tracelet_store: TraceletResource) -> None:
        seen.append(tracelet_store.run_info())
        tracelet_store.log(TraceletArtifact("regional/summary").add_object({"rows": 1}, "value", "json"),
                           aliases=["latest-eu"])

    result = materialize([regional], partition_key="eu",
                         resources={"tracelet_store": TraceletResource(store_uri=str(store_dir))})

    [run] = seen
    assert (run.orchestrator, run.run_id, run.step, run.partition) == ("dagster", result.run_id, "regional", "eu")
    assert store.get("regional/summary:latest-eu").producer == run


def test_load_uses_the_resources_pickle_setting(store_dir: Any, store: ArtifactStore) -> None:
    store.log(TraceletArtifact("blob").add_object({1, 2}, "value", "pickle"))

    @op
    def read(tracelet_store: TraceletResource) -> Any:
        return tracelet_store.load("blob:latest")

    @job
    def reader() -> None:
        read()

    refused = reader.execute_in_process(raise_on_error=False,
                                        resources={"tracelet_store": TraceletResource(store_uri=str(store_dir))})
    assert not refused.success
    allowed = reader.execute_in_process(
        resources={"tracelet_store": TraceletResource(store_uri=str(store_dir), allow_pickle=True)})
    assert allowed.output_for_node("read") == {1, 2}


def test_experiment_runs_as_the_current_step(store_dir: Any, store: ArtifactStore) -> None:
    @op
    def train(context: OpExecutionContext, tracelet_store: TraceletResource) -> None:
        with tracelet_store.experiment() as experiment:
            model = experiment.create_artifact("exp/model", "model")
            model.add_object({"w": [0.5]}, "weights", "json")
            experiment.log_artifact(model, aliases=["candidate"])

    @job
    def experiment_job() -> None:
        train()

    result = experiment_job.execute_in_process(resources={"tracelet_store": TraceletResource(store_uri=str(store_dir))})

    producer = store.get("exp/model:candidate").producer
    assert producer is not None
    assert (producer.orchestrator, producer.run_id, producer.step) == ("dagster", result.run_id, "train")


class RecordingBackend(Backend):
    """An in-memory tracker: what it received, by ref."""

    name = "recording"
    received: list[str] = []

    def log(self, artifact: LoggedArtifact) -> ArtifactResult:
        self.received.append(artifact.ref)
        return ArtifactResult(backend=self.name, ok=True, version="7", uri=f"memory://{artifact.ref}")


@pytest.fixture
def recording_backend() -> Any:
    RecordingBackend.received = []
    register_backend("recording", RecordingBackend)
    yield RecordingBackend
    unregister_backend("recording")


def test_configured_backends_receive_each_version(recording_backend: Any, store_dir: Any,
                                                 store: ArtifactStore) -> None:
    io_manager = TraceletIOManager(store_uri=str(store_dir), backends=["recording"])
    result = materialize([corpus], resources={"tracelet": io_manager})

    assert recording_backend.received == ["corpus:v1"]
    [materialization] = result.asset_materializations_for_node("corpus")
    assert materialization.metadata["tracelet/backends"].value == {
        "local": {"ok": True, "version": "v1", "uri": "tracelet://corpus:v1", "error": None},
        "recording": {"ok": True, "version": "7", "uri": "memory://corpus:v1", "error": None}}
    producer = store.get("corpus:v1").producer
    assert producer is not None and (producer.run_id, producer.step) == (result.run_id, "corpus")
