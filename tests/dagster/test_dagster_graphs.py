"""Graph-backed assets, op graphs, every asset key Dagster accepts, and upstream versions found
without scanning the run's event log (re-execution included)."""

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetOut,
    AssetsDefinition,
    AssetSpec,
    DagsterInstance,
    Definitions,
    In,
    JobDefinition,
    OpExecutionContext,
    Out,
    ReexecutionOptions,
    StaticPartitionsDefinition,
    asset,
    build_reconstructable_job,
    define_asset_job,
    execute_job,
    graph,
    graph_asset,
    graph_multi_asset,
    in_process_executor,
    job,
    materialize,
    multi_asset,
    op,
)

from tracelet_core import ArtifactStore, TraceletArtifact
from tracelet_dagster import TraceletIOManager

pytest_plugins = ["dagster_fixtures"]

HERE = Path(__file__).resolve().parent


@asset(io_manager_key="tracelet")
def numbers() -> list[int]:
    return [1, 2, 3]


@op
def add_1(numbers: list[int]) -> list[int]:
    return [n + 1 for n in numbers]


@op(out=Out(io_manager_key="tracelet"))
def add_1_final(values: list[int]) -> list[int]:
    return [v + 1 for v in values]


@graph_asset
def scored(numbers: list[int]) -> list[int]:
    return add_1_final(add_1(numbers))


def test_a_graph_backed_asset_records_the_inputs_loaded_by_any_of_its_ops(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    materialize([numbers, scored], resources=dagster_resources)

    logged = store.get("scored:v1")
    assert logged.load("value") == [3, 4, 5]
    assert logged.inputs == ["numbers:v1"]  # loaded by add_1, logged by add_1_final


@op
def double(values: list[int]) -> list[int]:
    return [v * 2 for v in values]


@graph_asset
def doubled(numbers: list[int]) -> list[int]:
    return double(add_1(numbers))


def test_a_graph_asset_on_tracelet_as_the_default_io_manager_names_its_ops_after_their_node(
        tracelet_io: TraceletIOManager, store: ArtifactStore) -> None:
    result = materialize([numbers, doubled], resources={"io_manager": tracelet_io, "tracelet": tracelet_io})

    assert result.success
    intermediate = store.get("doubled.add_1/result:v1")  # never "__ephemeral_asset_job__/..."
    assert (intermediate.load("value"), intermediate.inputs) == ([2, 3, 4], ["numbers:v1"])
    assert store.get("doubled:v1").inputs == ["doubled.add_1/result:v1", "numbers:v1"]
    assert not [name for name in store.catalog.names() if "ephemeral" in name]

    materialize([numbers, doubled], resources={"io_manager": tracelet_io, "tracelet": tracelet_io})
    assert [v.ref for v in store.versions("doubled.add_1/result")] == ["doubled.add_1/result:v1"]


@op
def odds_of(numbers: list[int]) -> list[int]:
    return [n for n in numbers if n % 2]


@op(out=Out(io_manager_key="tracelet"))
def count(values: list[int]) -> int:
    return len(values)


@op(out=Out(io_manager_key="tracelet"))
def constant() -> int:
    return 7


@graph_multi_asset(outs={"odd_count": AssetOut(io_manager_key="tracelet"),
                         "seven": AssetOut(io_manager_key="tracelet")})
def counts(numbers: list[int]) -> Any:
    return {"odd_count": count(odds_of(numbers)), "seven": constant()}


def test_each_asset_of_a_graph_multi_asset_records_only_what_its_own_ops_loaded(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    materialize([numbers, counts], resources=dagster_resources)

    assert store.get("odd_count:v1").inputs == ["numbers:v1"]
    assert store.get("seven:v1").inputs == []


@op(ins={"rows": In()}, out=Out(io_manager_key="tracelet"))
def load(rows: list[int]) -> list[int]:
    return rows


@op
def keep(rows: list[int]) -> list[int]:
    return rows


@graph
def prepare(rows: list[int]) -> list[int]:
    return count(keep(load(rows)))


@op(out=Out(io_manager_key="tracelet"))
def source_rows() -> list[int]:
    return [5, 6]


@job
def preparing() -> None:
    prepare(source_rows())


def test_an_op_inside_a_graph_records_what_the_graph_loaded_upstream_of_it(
        tracelet_io: TraceletIOManager, store: ArtifactStore) -> None:
    preparing.execute_in_process(resources={"tracelet": tracelet_io})

    loaded = "preparing/prepare.load/result:v1"
    assert store.get(loaded).inputs == ["preparing/source_rows/result:v1"]
    assert store.get("preparing/prepare.count/result:v1").inputs == [loaded, "preparing/source_rows/result:v1"]


# -- every asset key is a name ---------------------------------------------------------------------
@asset(key=["_internal", "_staging_table"], io_manager_key="tracelet")
def staging() -> list[int]:
    return [1]


@asset(key=["-dash", "dots.", ""], io_manager_key="tracelet")
def odd_key() -> int:
    return 2


def test_every_asset_key_dagster_accepts_is_an_artifact_name(dagster_resources: dict[str, object],
                                                             store: ArtifactStore) -> None:
    @asset(io_manager_key="tracelet", ins={"odd": AssetIn(key=odd_key.key)})
    def after_odd(odd: int) -> int:
        return odd + 1

    spaced = AssetSpec(AssetKey(["with space", "é"])).with_io_manager_key("tracelet")  # logged elsewhere

    @asset(io_manager_key="tracelet", ins={"spaced": AssetIn(key=spaced.key)})
    def after_spaced(spaced: int) -> int:
        return spaced + 1

    result = materialize([staging, odd_key, after_odd], resources=dagster_resources)

    assert result.success
    assert store.get("_internal/_staging_table:v1").load("value") == [1]
    escaped = "_-2d64617368/dots./_-"  # "-dash" and "" cannot be name segments as they are
    assert store.get(f"{escaped}:v1").load("value") == 2
    assert store.get("after_odd:v1").inputs == [f"{escaped}:v1"]
    store.log(TraceletArtifact("_-77697468207370616365/_-c3a9", "dataset").add_object(3, "value"))
    materialize([spaced, after_spaced], selection=[after_spaced.key], resources=dagster_resources)
    assert store.get("after_spaced:v1").inputs == ["_-77697468207370616365/_-c3a9:v1"]


# -- upstream versions: no event-log scan, exact across re-execution -------------------------------
def _no_event_log_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if tracelet reads a run's whole event log (Dagster itself may, to re-execute)."""
    all_logs = DagsterInstance.all_logs

    def refuse_for_tracelet(self: DagsterInstance, *args: Any, **kwargs: Any) -> Any:
        if sys._getframe(1).f_globals.get("__name__", "").startswith("tracelet_dagster"):
            raise AssertionError("tracelet scanned the run's event log")
        return all_logs(self, *args, **kwargs)

    monkeypatch.setattr(DagsterInstance, "all_logs", refuse_for_tracelet)


def test_inputs_are_found_without_scanning_the_event_log(dagster_resources: dict[str, object],
                                                         store: ArtifactStore,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _no_event_log_scan(monkeypatch)
    materialize([numbers, scored], resources=dagster_resources)

    assert store.get("scored:v1").inputs == ["numbers:v1"]


FAIL_FLAG = "TRACELET_TEST_FAIL_ONCE"


@asset(io_manager_key="tracelet")
def base(context: AssetExecutionContext) -> int:
    return int(context.run.tags.get("value", "1"))


@asset(io_manager_key="tracelet")
def flaky(base: int) -> int:
    flag = Path(os.environ[FAIL_FLAG])
    if not flag.exists():
        flag.write_text("failed once")
        raise RuntimeError("first attempt fails")
    return base * 10


def define_reexecution_job() -> JobDefinition:
    defs = Definitions(assets=[base, flaky],
                       jobs=[define_asset_job("base_then_flaky", executor_def=in_process_executor)],
                       resources={"tracelet": TraceletIOManager.configure_at_launch()})
    return defs.resolve_job_def("base_then_flaky")


def test_re_execution_loads_the_version_its_parent_run_logged(
        dagster_instance: DagsterInstance, store: ArtifactStore, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAIL_FLAG, str(tmp_path / "failed"))
    reconstructable = build_reconstructable_job(Path(__file__).stem, "define_reexecution_job",
                                                reconstructor_working_directory=str(HERE))
    config = {"resources": {"tracelet": {"config": {"store_uri": store.uri}}}}
    with execute_job(reconstructable, instance=dagster_instance, run_config=config) as first:
        assert not first.success
    with execute_job(reconstructable, instance=dagster_instance, run_config=config, tags={"value": "2"},
                     asset_selection=[base.key]) as newer:  # a newer run materializes base in between
        assert newer.success

    _no_event_log_scan(monkeypatch)
    options = ReexecutionOptions.from_failure(first.run_id, dagster_instance)
    with execute_job(reconstructable, instance=dagster_instance, run_config=config,
                     reexecution_options=options) as again:
        assert again.success

    assert [v.load("value") for v in store.versions("base")] == [1, 2]
    assert (store.get("flaky:v1").load("value"), store.get("flaky:v1").inputs) == (10, ["base:v1"])


# -- Dagster's own fs_io_manager scenarios -----------------------------------------------------------
letters = StaticPartitionsDefinition(["A", "B"])


@asset(key_prefix=["the", "cool", "prefix"], partitions_def=letters)
def one(context: AssetExecutionContext) -> int:
    return 1 if context.partition_key == "A" else 10


@op
def plus_1(value: int) -> int:
    return value + 1


@graph
def four(value: int) -> int:
    return plus_1(plus_1(plus_1(value)))


four_asset = AssetsDefinition.from_graph(four, keys_by_input_name={"value": one.key}, partitions_def=letters)


def test_a_partitioned_graph_backed_asset_on_tracelet_as_the_default_io_manager(
        tracelet_io: TraceletIOManager, store: ArtifactStore) -> None:
    for key in ["A", "B"]:
        assert materialize([one, four_asset], partition_key=key, resources={"io_manager": tracelet_io}).success

    assert [(v.partition, v.load("value")) for v in store.versions("four")] == [("A", 4), ("B", 13)]
    a_version, b_version = store.versions("four")
    assert b_version.inputs[-1] == "the/cool/prefix/one:v2"  # B's own upstream partition
    assert "the/cool/prefix/one:v1" in a_version.inputs and "the/cool/prefix/one:v2" not in a_version.inputs
    assert {v.load("value") for v in store.versions("four.plus_1/result")} == {2, 11}


@multi_asset(partitions_def=letters, outs={"first": AssetOut(io_manager_key="tracelet"),
                                           "second": AssetOut(io_manager_key="tracelet")})
def both(context: AssetExecutionContext) -> tuple[int, int]:
    return (1, 2) if context.partition_key == "A" else (3, 4)


@asset(io_manager_key="tracelet", partitions_def=letters)
def after_first(first: int) -> int:
    return first * 100


@asset(io_manager_key="tracelet")
def nothing_returned() -> None:
    return None


@asset(io_manager_key="tracelet", deps=[nothing_returned])
def also_nothing() -> None:
    return None


def test_a_partitioned_multi_asset_and_assets_that_return_nothing(dagster_resources: dict[str, object],
                                                                  store: ArtifactStore) -> None:
    result = materialize([both, after_first], partition_key="B", resources=dagster_resources)
    assert len([e for e in result.all_node_events if e.is_handled_output]) == 3
    assert [(v.ref, v.partition) for v in store.versions("second")] == [("second:v1", "B")]
    assert (store.get("after_first:v1").load("value"), store.get("after_first:v1").inputs) == (300, ["first:v1"])

    materialize([nothing_returned, also_nothing], resources=dagster_resources)
    assert {v.name for v in store.list()} == {"first", "second", "after_first"}  # Dagster skips None outputs


@op(out=Out(io_manager_key="tracelet"))
def produce(context: OpExecutionContext) -> int:
    return int(context.run.tags.get("value", "1"))


@op(out=Out(io_manager_key="tracelet"))
def flaky_op(value: int) -> int:
    flag = Path(os.environ[FAIL_FLAG])
    if not flag.exists():
        flag.write_text("failed once")
        raise RuntimeError("first attempt fails")
    return value * 10


@job(executor_def=in_process_executor)
def produce_then_flaky() -> None:
    flaky_op(produce())


def define_op_reexecution_job() -> JobDefinition:
    return Definitions(jobs=[produce_then_flaky],
                       resources={"tracelet": TraceletIOManager.configure_at_launch()}).resolve_job_def(
        "produce_then_flaky")


def test_re_executing_an_op_job_loads_the_op_output_its_parent_run_logged(
        dagster_instance: DagsterInstance, store: ArtifactStore, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAIL_FLAG, str(tmp_path / "failed"))
    reconstructable = build_reconstructable_job(Path(__file__).stem, "define_op_reexecution_job",
                                                reconstructor_working_directory=str(HERE))
    config = {"resources": {"tracelet": {"config": {"store_uri": store.uri}}}}
    with execute_job(reconstructable, instance=dagster_instance, run_config=config) as first:
        assert not first.success
    store.log(TraceletArtifact("produce_then_flaky/produce/result", "custom").add_object(2, "value"))  # newer

    options = ReexecutionOptions.from_failure(first.run_id, dagster_instance)
    with execute_job(reconstructable, instance=dagster_instance, run_config=config,
                     reexecution_options=options) as again:
        assert again.success

    logged = store.get("produce_then_flaky/flaky_op/result:v1")
    assert (logged.load("value"), logged.inputs) == (10, ["produce_then_flaky/produce/result:v1"])
