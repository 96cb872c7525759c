"""TraceletIOManager on real runs: one version per output, exact lineage, metadata, formats."""


import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from dagster import (
    AssetExecutionContext,
    AssetIn,
    DynamicOut,
    DynamicOutput,
    Failure,
    In,
    MaterializeResult,
    Out,
    Output,
    asset,
    graph,
    job,
    materialize,
    op,
)

from tracelet_core import (
    ArtifactNotFoundError,
    ArtifactStore,
    LoggedArtifact,
    TraceletArtifact,
)
from tracelet_dagster import TraceletIOManager, TraceletResource, tracelet_source_asset

pytest_plugins = ["dagster_fixtures"]

OUTPUT_KEYS = {"tracelet/ref", "tracelet/version", "tracelet/digest", "tracelet/uri", "tracelet/store",
               "tracelet/size_bytes", "tracelet/type", "tracelet/serializer", "tracelet/aliases",
               "tracelet/inputs", "tracelet/new_version", "tracelet/preview"}


@asset(io_manager_key="tracelet")
def raw() -> pd.DataFrame:
    return pd.DataFrame({"x": [1.0, 2.0, 3.0], "label": [0, 1, 0]})


@asset(io_manager_key="tracelet")
def features(raw: pd.DataFrame) -> dict[str, float]:
    return {"mean": float(raw["x"].mean())}


@asset(io_manager_key="tracelet")
def report(features: dict[str, float], raw: pd.DataFrame) -> list[Any]:
    return [features["mean"], len(raw)]


def _metadata(result: Any, asset_name: str) -> dict[str, Any]:
    [materialization] = result.asset_materializations_for_node(asset_name)
    return {key: value.value for key, value in materialization.metadata.items()}


def test_each_output_is_one_version_produced_by_its_step_from_exactly_what_it_read(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    result = materialize([raw, features, report], resources=dagster_resources)

    report_v1 = store.get("report:latest")
    assert (report_v1.ref, report_v1.inputs) == ("report:v1", ["features:v1", "raw:v1"])
    assert report_v1.load("value") == [2.0, 3]
    assert store.get("features:v1").inputs == ["raw:v1"]
    producer = report_v1.producer
    assert producer is not None
    assert (producer.orchestrator, producer.run_id, producer.step) == ("dagster", result.run_id, "report")
    assert set(store.lineage("report:v1").artifact_refs) >= {"raw:v1", "features:v1"}


def test_materializations_carry_tracelet_metadata(dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    result = materialize([raw, features], resources=dagster_resources)

    shown = _metadata(result, "raw")
    assert set(shown) >= OUTPUT_KEYS
    logged = store.get("raw:v1")
    assert (shown["tracelet/ref"], shown["tracelet/version"], shown["tracelet/digest"]) == (
        "raw:v1", "v1", logged.digest)
    assert shown["tracelet/uri"] == "tracelet://raw:v1"
    assert (shown["tracelet/serializer"], shown["tracelet/type"], shown["tracelet/new_version"]) == (
        "parquet", "dataset", True)
    assert shown["tracelet/size_bytes"] == logged.size_bytes
    assert "| x | label |" in shown["tracelet/preview"]
    assert shown["dagster/row_count"] == 3
    assert [c.name for c in shown["dagster/column_schema"].columns] == ["x", "label"]
    assert _metadata(result, "features")["tracelet/inputs"] == ["raw:v1"]


def test_unchanged_content_on_a_second_run_returns_the_existing_versions(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    materialize([raw, features, report], resources=dagster_resources)
    second = materialize([raw, features, report], resources=dagster_resources)

    assert [v.ref for v in store.versions("report")] == ["report:v1"]
    assert _metadata(second, "report")["tracelet/new_version"] is False
    assert _metadata(second, "report")["tracelet/ref"] == "report:v1"


def test_type_aliases_serializer_and_description_come_from_metadata(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    @asset(io_manager_key="tracelet", metadata={"tracelet/type": "config", "tracelet/aliases": ["golden"],
                                                "tracelet/serializer": "yaml"})
    def settings() -> Output[dict[str, int]]:
        """Training settings."""
        return Output({"epochs": 3}, metadata={"tracelet/aliases": "golden, nightly"})

    materialize([settings], resources=dagster_resources)

    logged = store.get("settings:golden")
    assert (logged.ref, logged.type.value, logged.description) == ("settings:v1", "config", "Training settings.")
    assert logged.aliases == ["golden", "nightly"]
    assert logged.objects[0].serializer == "yaml"
    assert logged.load("value") == {"epochs": 3}


def test_asset_key_path_is_the_artifact_name(dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    @asset(io_manager_key="tracelet", key_prefix=["team", "ml"])
    def scores() -> list[int]:
        return [1, 2]

    @asset(io_manager_key="tracelet", ins={"scores": AssetIn(key=["team", "ml", "scores"])})
    def total(scores: list[int]) -> int:
        return sum(scores)

    materialize([scores, total], resources=dagster_resources)

    assert store.get("team/ml/scores:v1").load("value") == [1, 2]
    assert store.get("total:v1").inputs == ["team/ml/scores:v1"]


class _Net:
    """Built lazily so torch is imported only by the test that needs it."""

    @staticmethod
    def make() -> Any:
        import torch

        torch.manual_seed(0)
        return torch.nn.Linear(3, 2)


def _torch_tensor() -> Any:
    import torch

    return torch.arange(6.0).reshape(2, 3)


@pytest.mark.parametrize(("make_value", "serializer", "artifact_type"), [
    (lambda: pd.DataFrame({"a": [1, 2]}), "parquet", "dataset"),
    (lambda: np.arange(6).reshape(2, 3), "numpy", "dataset"),
    (lambda: {"nested": [1, {"b": None}]}, "json", "custom"),
    (_torch_tensor, "torch", "custom"),
    (lambda: {1, 2, 3}, "json-tagged", "custom"),  # round 3: no pickle for sets
    (lambda: {"when": datetime.date(2024, 5, 1), 3: b"x"}, "json-tagged", "custom"),
    (lambda: complex(1, 2), "pickle", "custom"),
], ids=["dataframe", "ndarray", "json", "tensor", "set", "date-bytes-int-key", "complex-pickle"])
def test_values_round_trip_in_a_format_chosen_by_type(
        make_value: Any, serializer: str, artifact_type: str, store_dir: Path, store: ArtifactStore) -> None:
    value = make_value()
    seen: list[Any] = []

    @asset(io_manager_key="tracelet")
    def produced() -> Any:
        return value

    @asset(io_manager_key="tracelet")
    def consumed(produced: Any) -> None:
        seen.append(produced)

    io_manager = TraceletIOManager(store_uri=str(store_dir), allow_pickle=serializer == "pickle")
    materialize([produced, consumed], resources={"tracelet": io_manager})

    logged = store.get("produced:v1")
    assert (logged.objects[0].serializer, logged.type.value) == (serializer, artifact_type)
    [loaded] = seen
    if serializer == "parquet":
        pd.testing.assert_frame_equal(loaded, value)
    elif serializer in {"numpy", "torch"}:
        assert np.array_equal(np.asarray(loaded), np.asarray(value))
    else:
        assert loaded == value


def test_torch_modules_are_stored_as_state_dicts_and_load_without_pickle(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    import torch

    seen: list[Any] = []

    @asset(io_manager_key="tracelet")
    def net() -> Any:
        return _Net.make()

    @asset(io_manager_key="tracelet")
    def weights(net: dict[str, Any]) -> None:
        seen.append(net)

    result = materialize([net, weights], resources=dagster_resources)

    logged = store.get("net:v1")
    assert (logged.type.value, logged.objects[0].serializer, logged.metadata["framework"]) == (
        "model", "torch", "pytorch")
    assert torch.equal(seen[0]["weight"], _Net.make().state_dict()["weight"])
    assert "8 parameters" in _metadata(result, "net")["tracelet/preview"]


def test_sklearn_models_are_stored_with_skops_and_load_without_pickle(store_dir: Path, store: ArtifactStore) -> None:
    from sklearn.linear_model import LogisticRegression

    @asset(io_manager_key="tracelet")
    def classifier() -> Any:
        return LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])

    @asset(io_manager_key="tracelet")
    def prediction(classifier: Any) -> int:
        return int(classifier.predict([[3.0]])[0])

    materialize([classifier, prediction], resources={"tracelet": TraceletIOManager(store_uri=str(store_dir))})
    assert store.get("classifier:v1").objects[0].serializer == "skops"
    assert store.get("prediction:v1").load("value") == 1


def _failure_of(result: Any, step_key: str) -> Any:
    [event] = [e for e in result.all_events if e.is_step_failure and e.step_key == step_key]
    return event.step_failure_data.error


def test_path_outputs_are_stored_and_load_as_verified_local_paths(
        dagster_resources: dict[str, object], store: ArtifactStore, tmp_path: Path) -> None:
    produced = tmp_path / "produced"
    (produced / "shards").mkdir(parents=True)
    (produced / "summary.csv").write_text("a,b\n1,2\n")
    (produced / "shards" / "part-0.txt").write_text("zero")
    (produced / "shards" / "sub").mkdir()
    (produced / "shards" / "sub" / "part-1.txt").write_text("one")
    seen: list[Path] = []

    @asset(io_manager_key="tracelet")
    def summary() -> Path:
        return produced / "summary.csv"

    @asset(io_manager_key="tracelet")
    def shards() -> Path:
        return produced / "shards"

    @asset(io_manager_key="tracelet")
    def used(summary: Path, shards: Path) -> None:
        seen.extend([summary, shards])

    materialize([summary, shards, used], resources=dagster_resources)

    summary_path, shards_path = seen
    assert summary_path.read_text() == "a,b\n1,2\n" and summary_path != produced / "summary.csv"
    assert sorted(p.relative_to(shards_path).as_posix() for p in shards_path.rglob("*") if p.is_file()) == [
        "part-0.txt", "sub/part-1.txt"]
    assert [f.path for f in store.get("summary:v1").files] == ["value.csv"]


def test_images_and_figures_are_stored_as_png_with_an_embedded_preview(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from PIL import Image

    @asset(io_manager_key="tracelet")
    def thumbnail() -> Any:
        return Image.new("RGB", (64, 32), color=(200, 30, 30))

    @asset(io_manager_key="tracelet")
    def curve() -> Any:
        figure = Figure(figsize=(2, 2))
        figure.add_subplot().plot([0, 1, 2], [0, 1, 4])
        return figure

    result = materialize([thumbnail, curve], resources=dagster_resources)

    assert (store.get("thumbnail:v1").type.value, store.get("curve:v1").type.value) == ("image", "visualization")
    assert [f.path for f in store.get("curve:v1").files] == ["value.png"]
    for name in ("thumbnail", "curve"):
        assert _metadata(result, name)["tracelet/preview"].startswith("![value.png](data:image/png;base64,")
    with Image.open(store.get("thumbnail:v1").path("value.png")) as stored_image:
        assert stored_image.size == (64, 32)
    again = materialize([curve], resources=dagster_resources)
    assert _metadata(again, "curve")["tracelet/new_version"] is False  # same plot, same bytes


def test_an_input_annotated_loggedartifact_gets_the_version_itself(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    @asset(io_manager_key="tracelet")
    def handle(raw: LoggedArtifact) -> str:
        return f"{raw.ref} {raw.objects[0].serializer}"

    materialize([raw, handle], resources=dagster_resources)

    assert store.get("handle:v1").load("value") == "raw:v1 parquet"
    assert store.get("handle:v1").inputs == ["raw:v1"]


@asset(io_manager_key="tracelet", config_schema={"n": int})
def numbers(context: AssetExecutionContext) -> list[int]:
    return list(range(context.op_execution_context.op_config["n"]))


def _numbers_config(n: int) -> dict[str, Any]:
    return {"ops": {"numbers": {"config": {"n": n}}}}


def test_asset_in_metadata_pins_a_version_or_an_alias(dagster_resources: dict[str, object],
                                                      store: ArtifactStore) -> None:
    @asset(io_manager_key="tracelet", ins={"numbers": AssetIn(metadata={"tracelet/version": "v1"})})
    def first(numbers: list[int]) -> int:
        return len(numbers)

    @asset(io_manager_key="tracelet", ins={"numbers": AssetIn(metadata={"tracelet/version": "golden"})})
    def golden(numbers: list[int]) -> int:
        return len(numbers)

    materialize([numbers], resources=dagster_resources, run_config=_numbers_config(2))
    materialize([numbers], resources=dagster_resources, run_config=_numbers_config(5))
    store.set_alias("numbers:v2", "golden")
    materialize([numbers, first, golden], resources=dagster_resources, run_config=_numbers_config(9))

    assert [v.version for v in store.versions("numbers")] == ["v1", "v2", "v3"]
    assert (store.get("first:v1").load("value"), store.get("first:v1").inputs) == (2, ["numbers:v1"])
    assert (store.get("golden:v1").load("value"), store.get("golden:v1").inputs) == (5, ["numbers:v2"])


def test_a_run_tag_pins_what_the_run_loads(dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    @asset(io_manager_key="tracelet")
    def size(numbers: list[int]) -> int:
        return len(numbers)

    materialize([numbers], resources=dagster_resources, run_config=_numbers_config(2))
    materialize([numbers], resources=dagster_resources, run_config=_numbers_config(4))
    materialize([numbers, size], selection=["size"], resources=dagster_resources, tags={"tracelet/pins": "numbers:v1"})

    assert store.get("size:v1").load("value") == 2
    assert store.get("size:v1").inputs == ["numbers:v1"]


def test_inputs_are_the_versions_logged_in_this_run_even_when_a_newer_one_appears(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    @asset(io_manager_key="tracelet")
    def base() -> str:
        return "from this run"

    @asset(deps=[base])
    def concurrent_writer(tracelet_store: TraceletResource) -> None:
        artifact = TraceletArtifact("base").add_object("from another run", "value", "json")
        tracelet_store.store.log(artifact)

    @asset(io_manager_key="tracelet", deps=[concurrent_writer])
    def derived(base: str) -> str:
        return base.upper()

    materialize([base, concurrent_writer, derived], resources=dagster_resources)

    assert store.get("base:latest").ref == "base:v2"
    assert store.get("derived:v1").inputs == ["base:v1"]
    assert store.get("derived:v1").load("value") == "FROM THIS RUN"


def test_a_version_logged_outside_dagster_loads_its_single_entry_or_the_one_named(
        dagster_resources: dict[str, object], store: ArtifactStore, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    store.log(TraceletArtifact("external/single").add_object({"k": 1}, "table", "json"))
    store.log(TraceletArtifact("external/many").add_object([1, 2], "left", "json")
              .add_object([3], "right", "json").add_file(notes))
    seen: dict[str, Any] = {}

    @asset(io_manager_key="tracelet", ins={"many": AssetIn(key=["external", "many"],
                                                           metadata={"tracelet/entry": "notes.txt"}),
                                           "single": AssetIn(key=["external", "single"])})
    def combined(many: Path, single: dict[str, int]) -> None:
        seen.update(many=many.read_text(), single=single)

    @asset(io_manager_key="tracelet", ins={"many": AssetIn(key=["external", "many"])})
    def ambiguous(many: Any) -> None:
        raise AssertionError("never runs")

    sources = [tracelet_source_asset("external/single"), tracelet_source_asset("external/many")]
    materialize([*sources, combined], resources=dagster_resources)
    assert seen == {"many": "hello", "single": {"k": 1}}

    failed = materialize([*sources, ambiguous], resources=dagster_resources, raise_on_error=False)
    assert "holds several entries (left, right, notes.txt)" in _failure_of(failed, "ambiguous").message


def test_a_missing_upstream_fails_the_step_with_the_tracelet_error_chained(
        dagster_resources: dict[str, object]) -> None:
    @asset(io_manager_key="tracelet")
    def needs(numbers: list[int]) -> int:
        return len(numbers)

    with pytest.raises(Failure, match="tracelet could not load numbers") as raised:
        materialize([numbers, needs], selection=["needs"], resources=dagster_resources)
    assert isinstance(raised.value.__cause__, ArtifactNotFoundError)


def test_materialize_result_assets_bypass_the_io_manager(dagster_resources: dict[str, object],
                                                        store: ArtifactStore) -> None:
    @asset(io_manager_key="tracelet")
    def side_effect() -> MaterializeResult:
        return MaterializeResult(metadata={"rows": 1})

    materialize([side_effect], resources=dagster_resources)
    assert store.list() == []


# -- op outputs in plain jobs ----------------------------------------------------------------------
@op(out=Out(io_manager_key="tracelet"))
def load_rows() -> list[int]:
    return [3, 1, 2]


@op(ins={"rows": In()}, out=Out(io_manager_key="tracelet"))
def sort_rows(rows: list[int]) -> list[int]:
    return sorted(rows)


@graph
def cleaning(rows: list[int]) -> list[int]:
    return sort_rows(rows)


@op(out=DynamicOut(io_manager_key="tracelet"))
def fan_out(rows: list[int]) -> Any:
    for row in rows:
        yield DynamicOutput(row * 10, mapping_key=f"row_{row}")


@op(out=Out(io_manager_key="tracelet"))
def square(value: int) -> int:
    return value * value


@op(out=Out(io_manager_key="tracelet"))
def total(values: list[int]) -> int:
    return sum(values)


@job
def rows_job() -> None:
    rows = load_rows()
    cleaning(rows)
    total(fan_out(rows).map(square).collect())


def test_op_outputs_are_named_job_op_output_and_load_exactly(tracelet_io: TraceletIOManager,
                                                            store: ArtifactStore) -> None:
    result = rows_job.execute_in_process(resources={"tracelet": tracelet_io})

    assert store.get("rows_job/load_rows/result:v1").load("value") == [3, 1, 2]
    sorted_rows = store.get("rows_job/cleaning.sort_rows/result:v1")
    assert (sorted_rows.load("value"), sorted_rows.inputs) == ([1, 2, 3], ["rows_job/load_rows/result:v1"])
    assert sorted_rows.producer is not None and sorted_rows.producer.run_id == result.run_id
    fanned = {v.load("value") for v in store.versions("rows_job/fan_out/result")}
    assert fanned == {10, 20, 30}
    squares = store.versions("rows_job/square/result")
    assert {v.load("value"): v.inputs[0] for v in squares} == {
        100 * row * row: store.get(f"rows_job/fan_out/result:v{i}").ref for i, row in enumerate([3, 1, 2], 1)}
    assert store.get("rows_job/total/result:v1").load("value") == 1400
    assert len(store.get("rows_job/total/result:v1").inputs) == 3
