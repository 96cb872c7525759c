"""Production Dagster features on a real instance, with lineage compared as exact edges.

In process: asset checks, subsettable multi-assets, ``RetryPolicy``, ``input_manager_key``,
partitioned observable source assets, re-execution from failure (``execute_job``); in step
processes: dynamic outputs with ``.map()``/``.collect()`` on the multiprocess executor. Through one
``dagster-daemon`` per module (``production_defs``): a sensor run per new dataset version retried
by the daemon's run retries, a backfill of partitioned assets, and ``AutomationCondition.eager()``
downstream of a ``tracelet_source_asset`` logged from outside.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetOut,
    AssetsDefinition,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    In,
    Out,
    Output,
    ReexecutionOptions,
    RetryPolicy,
    RunsFilter,
    StaticPartitionsDefinition,
    asset,
    asset_check,
    build_reconstructable_job,
    define_asset_job,
    execute_job,
    job,
    materialize,
    multi_asset,
    op,
)
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.utils import make_new_backfill_id
from production_defs import clicks, region_rows, region_summary

from tracelet_core import ArtifactStore, LoggedArtifact, TraceletArtifact
from tracelet_dagster import TraceletIOManager, tracelet_source_asset

pytest_plugins = ["dagster_fixtures"]

HERE = Path(__file__).resolve().parent
DEFS = HERE / "production_defs.py"
DEADLINE_S = 300.0  # a run the daemon launches is a new process: slow on a busy machine


def edges(store: ArtifactStore, *names: str) -> set[tuple[str, str]]:
    """Every (input ref, version ref) edge of every version of ``names``."""
    return {(i, v.ref) for name in names for v in store.versions(name) for i in v.inputs}


def log_value(store: ArtifactStore, name: str, value: Any, partition: str | None = None) -> LoggedArtifact:
    """Log ``value`` from outside Dagster (as the artifact's existing type, if it has versions)."""
    type_ = store.get(name).type.value if store.exists(name) else "dataset"
    return store.log(TraceletArtifact(name, type_).add_object(value, "value", "json"), partition=partition)


def wait_for(what: str, found: Callable[[], Any], timeout: float = DEADLINE_S) -> Any:
    """Poll ``found`` until it returns something truthy, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")


# -- asset checks ---------------------------------------------------------------------------------
@asset(io_manager_key="tracelet")
def scores() -> list[int]:
    return [3, 5, 8]


@asset(deps=[scores])
def interloper() -> None:
    """Logs a newer ``scores`` from outside between the asset and its check."""
    log_value(ArtifactStore.shared(), "scores", [-1])


@asset_check(asset=scores, additional_deps=[interloper])
def scores_positive(scores: LoggedArtifact) -> AssetCheckResult:
    values = scores.load("value")
    return AssetCheckResult(passed=all(v > 0 for v in values), metadata={"checked": scores.ref})


def test_an_asset_check_reads_the_version_its_run_logged(tracelet_io: TraceletIOManager, store: ArtifactStore,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACELET_STORE_URI", store.uri)
    result = materialize([scores, interloper, scores_positive], resources={"tracelet": tracelet_io})
    [evaluation] = result.get_asset_check_evaluations()
    assert [v.ref for v in store.versions("scores")] == ["scores:v1", "scores:v2"]
    assert evaluation.passed and evaluation.metadata["checked"].value == "scores:v1"
    check_step = next(e.step_key for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")
    reader = store.consumed(_reader(result.run_id, check_step))
    assert [v.ref for v in reader] == ["scores:v1"]


def _reader(run_id: str, step: str) -> Any:
    from tracelet_dagster._io_manager import step_reader

    return step_reader(run_id, step, "__ephemeral_asset_job__", None)


# -- subsettable multi-assets -----------------------------------------------------------------------
@asset(io_manager_key="tracelet")
def catalog() -> dict[str, int]:
    return {"left": 1, "right": 2}


@multi_asset(outs={"left": AssetOut(io_manager_key="tracelet", is_required=False),
                   "right": AssetOut(io_manager_key="tracelet", is_required=False)}, can_subset=True)
def halves(context: AssetExecutionContext, catalog: dict[str, int]) -> Iterator[Output[int]]:
    for name in sorted(context.op_execution_context.selected_output_names):
        yield Output(catalog[name] * 10, output_name=name)


@asset(io_manager_key="tracelet")
def left_report(left: int) -> str:
    return f"left={left}"


def test_a_subset_of_a_multi_asset_logs_only_the_selected_outputs(tracelet_io: TraceletIOManager,
                                                                  store: ArtifactStore) -> None:
    resources = {"tracelet": tracelet_io}
    materialize([catalog], resources=resources)
    materialize([catalog, halves, left_report], selection=["left", "left_report"], resources=resources)
    assert store.exists("left:v1") and not store.exists("right")
    log_value(store, "catalog", {"left": 4, "right": 5})
    materialize([catalog, halves, left_report], selection=["right"], resources=resources)
    assert edges(store, "catalog", "left", "right", "left_report") == {
        ("catalog:v1", "left:v1"), ("left:v1", "left_report:v1"), ("catalog:v2", "right:v1")}
    assert store.get("right:v1").load("value") == 50


# -- dynamic outputs on the multiprocess executor -----------------------------------------------------
def test_dynamic_outputs_map_and_collect_across_processes(dagster_instance: DagsterInstance, store: ArtifactStore,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACELET_STORE_URI", store.uri)
    fanout = build_reconstructable_job("production_defs", "fanout_job", reconstructor_working_directory=str(HERE))
    with execute_job(fanout, instance=dagster_instance,
                     run_config={"execution": {"config": {"max_concurrent": 2}}}) as result:
        assert result.success
        pids = {e.pid for e in result.all_events if e.event_type_value == "STEP_START"}
    assert len(pids) == 4  # split, two squares, total
    split = {v.load("value"): v.ref for v in store.versions("fanout/split/result")}
    squares = {v.load("value"): v.ref for v in store.versions("fanout/square/result")}
    [total] = store.versions("fanout/total/result")
    assert total.load("value") == 13 and set(split) == {2, 3} and set(squares) == {4, 9}
    assert edges(store, "fanout/square/result", "fanout/total/result") == {
        *((split[n], squares[n * n]) for n in (2, 3)), *((squares[s], total.ref) for s in (4, 9))}
    assert {v.producer.step for v in store.versions("fanout/square/result") if v.producer} == {
        "square[n2]", "square[n3]"}


# -- RetryPolicy ----------------------------------------------------------------------------------
@multi_asset(outs={"weights": AssetOut(io_manager_key="tracelet"), "report": AssetOut(io_manager_key="tracelet")},
             retry_policy=RetryPolicy(max_retries=1))
def trained(context: AssetExecutionContext, catalog: dict[str, int]) -> Iterator[Output[Any]]:
    yield Output(sorted(catalog.values()), output_name="weights")
    if context.retry_number == 0:
        raise RuntimeError("the first attempt dies after logging weights")
    yield Output({"attempt": context.retry_number}, output_name="report")


def test_a_retried_step_keeps_the_version_its_first_attempt_logged(tracelet_io: TraceletIOManager,
                                                                   store: ArtifactStore) -> None:
    result = materialize([catalog, trained], resources={"tracelet": tracelet_io})
    assert result.success
    assert [e.event_type_value for e in result.all_events].count("STEP_RESTARTED") == 1
    assert [v.ref for v in store.versions("weights")] == ["weights:v1"]
    assert store.get("report:v1").load("value") == {"attempt": 1}
    assert edges(store, "weights", "report") == {("catalog:v1", "weights:v1"), ("catalog:v1", "report:v1")}


# -- input_manager_key ----------------------------------------------------------------------------
@asset(io_manager_key="tracelet")
def prepared() -> list[int]:
    return [1, 2]


@asset(io_manager_key="tracelet", ins={"prepared": AssetIn(input_manager_key="tracelet_in"),
                                       "events": AssetIn(key=["lake", "events"], input_manager_key="tracelet_in")})
def combined(prepared: list[int], events: list[int]) -> list[int]:
    return prepared + events


def test_tracelet_as_the_input_manager(store: ArtifactStore, store_dir: Path) -> None:
    log_value(store, "lake/events", [7])
    resources = {"tracelet": TraceletIOManager(store_uri=str(store_dir)),
                 "tracelet_in": TraceletIOManager(store_uri=str(store_dir))}
    materialize([tracelet_source_asset("lake/events"), prepared, combined], selection=["prepared", "combined"],
                resources=resources)
    assert store.get("combined:v1").load("value") == [1, 2, 7]
    assert edges(store, "combined") == {("prepared:v1", "combined:v1"), ("lake/events:v1", "combined:v1")}


@op(ins={"events": In(input_manager_key="tracelet_in", metadata={"tracelet/name": "lake/events"})},
    out=Out(io_manager_key="tracelet"))
def count_events(events: list[int]) -> int:
    return len(events)


@job
def counting() -> None:
    count_events()


def test_an_op_input_with_no_upstream_loads_the_artifact_it_names(store: ArtifactStore, store_dir: Path) -> None:
    log_value(store, "lake/events", [7, 8])
    manager = TraceletIOManager(store_uri=str(store_dir))
    defs = Definitions(jobs=[counting], resources={"tracelet": manager, "tracelet_in": manager})
    assert defs.resolve_job_def("counting").execute_in_process().success
    assert edges(store, "counting/count_events/result") == {("lake/events:v1", "counting/count_events/result:v1")}


# -- partitioned observable source assets ----------------------------------------------------------
shards = StaticPartitionsDefinition(["a", "b"])
shard_source = tracelet_source_asset("lake/shards", partitions_def=shards)


@asset(io_manager_key="tracelet", partitions_def=shards, ins={"rows": AssetIn(key=["lake", "shards"])})
def shard_sum(rows: list[int]) -> int:
    return sum(rows)


def test_a_partitioned_source_asset_reports_each_partition_and_feeds_it(
        dagster_instance: DagsterInstance, tracelet_io: TraceletIOManager, store: ArtifactStore) -> None:
    a1, b1 = log_value(store, "lake/shards", [1], "a"), log_value(store, "lake/shards", [2, 3], "b")
    a2 = log_value(store, "lake/shards", [4], "a")
    resources = {"tracelet": tracelet_io}
    observing = Definitions(assets=[shard_source], jobs=[define_asset_job("observe_shards", [shard_source])],
                            resources=resources).resolve_job_def("observe_shards")
    assert observing.execute_in_process(instance=dagster_instance).success
    versions = {p: dagster_instance.get_latest_data_version_record(AssetKey(["lake", "shards"]), partition_key=p)
                for p in ("a", "b")}
    assert {p: r.asset_observation.data_version if r and r.asset_observation else None
            for p, r in versions.items()} == {"a": a2.digest, "b": b1.digest}
    for key in ("a", "b"):
        materialize([shard_source, shard_sum], selection=["shard_sum"], partition_key=key,
                    instance=dagster_instance, resources=resources)
    assert a1.ref != a2.ref
    assert {v.partition: v.load("value") for v in store.versions("shard_sum")} == {"a": 4, "b": 5}
    assert edges(store, "shard_sum") == {(a2.ref, "shard_sum:v1"), (b1.ref, "shard_sum:v2")}


# -- re-execution from failure --------------------------------------------------------------------
def test_reexecution_from_failure_reads_what_the_failed_run_logged(
        dagster_instance: DagsterInstance, store: ArtifactStore, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACELET_STORE_URI", store.uri)
    monkeypatch.setenv("TRACELET_TEST_FAIL_ONCE", str(tmp_path))
    job = build_reconstructable_job("production_defs", "reexecuted_job", reconstructor_working_directory=str(HERE))
    with execute_job(job, instance=dagster_instance) as failed:
        assert not failed.success
    assert [v.ref for v in store.versions("reexec_base")] == ["reexec_base:v1", "reexec_base:v2"]  # v2: meanwhile
    options = ReexecutionOptions.from_failure(failed.run_id, dagster_instance)
    with execute_job(job, instance=dagster_instance, reexecution_options=options) as rerun:
        assert rerun.success
        rerun_id = rerun.run_id
    model = store.get("reexec_model:v1")
    assert model.load("value") == {"trained_on": {"rows": 3}}
    assert model.producer is not None and model.producer.run_id == rerun_id
    assert edges(store, "reexec_base", "reexec_model") == {("reexec_base:v1", "reexec_model:v1")}


# -- through the daemon ---------------------------------------------------------------------------
DAEMON_INSTANCE = """\
run_retries:
  enabled: true
telemetry:
  enabled: false
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DagsterInstance, ArtifactStore]]:
    """One ``dagster-daemon run`` for the module, on its own instance and store."""
    root = tmp_path_factory.mktemp("daemon")
    home, markers = root / "dagster_home", root / "markers"
    home.mkdir()
    markers.mkdir()
    (home / "dagster.yaml").write_text(DAEMON_INSTANCE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACELET_")}
    env.update(DAGSTER_HOME=str(home), TRACELET_STORE_URI=str(root / "store"), TRACELET_TEST_FAIL_ONCE=str(markers))
    with (root / "daemon.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "dagster._daemon", "run", "-f", str(DEFS),
                                    "--working-directory", str(HERE)],
                                   env=env, cwd=root, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    try:
        with DagsterInstance.from_config(str(home)) as instance, ArtifactStore.open(root / "store") as store:
            # Each daemon beats once it has started (the run-retry one after setting its cursor).
            wait_for("the daemon", lambda: set(instance.get_required_daemon_types())
                     <= set(instance.get_daemon_heartbeats()))
            yield instance, store
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def finished_runs(instance: DagsterInstance, job_name: str, count: int) -> list[Any]:
    runs = instance.get_runs(RunsFilter(job_name=job_name, statuses=[
        DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]))
    return runs if len(runs) >= count else []


def test_a_new_dataset_version_retrains_and_the_daemon_retry_reads_the_first_run(
        daemon: tuple[DagsterInstance, ArtifactStore]) -> None:
    instance, store = daemon
    log_value(store, "prod/dataset", [1, 2])
    retry, first = wait_for("the retried retrain run", lambda: finished_runs(instance, "retrain", 2))
    assert (first.status, retry.status) == (DagsterRunStatus.FAILURE, DagsterRunStatus.SUCCESS)
    assert retry.parent_run_id == first.run_id and first.tags["tracelet/pins"] == "prod/dataset:v1"
    assert store.get("model:v1").load("value") == {"trained_on": [10, 20]}
    assert edges(store, "features", "model") == {("prod/dataset:v1", "features:v1"), ("features:v1", "model:v1")}
    assert [v.producer.run_id for v in (store.get("features:v1"), store.get("model:v1")) if v.producer] == [
        first.run_id, retry.run_id]


# Dagster's own backfill code calls its deprecated AssetSelection.sources.
@pytest.mark.filterwarnings("ignore:Function `AssetSelection.sources` is deprecated:DeprecationWarning")
def test_a_daemon_backfill_of_partitioned_assets(daemon: tuple[DagsterInstance, ArtifactStore]) -> None:
    instance, store = daemon
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(), asset_graph=AssetGraph.from_assets([region_rows, region_summary]),
        partition_names=["eu", "us"], asset_selection=[region_rows.key, region_summary.key],
        backfill_timestamp=time.time(), tags={}, dynamic_partitions_store=instance, all_partitions=False,
        title=None, description=None, run_config=None)
    instance.add_backfill(backfill)
    runs = wait_for("the backfill's runs", lambda: _finished_backfill_runs(instance, backfill.backfill_id, 2))
    assert sorted(r.tags["dagster/partition"] for r in runs) == ["eu", "us"]
    assert {r.status for r in runs} == {DagsterRunStatus.SUCCESS}
    rows = {v.partition: v.ref for v in store.versions("region_rows")}
    summaries = {v.partition: v for v in store.versions("region_summary")}
    assert set(rows) == set(summaries) == {"eu", "us"}
    assert summaries["us"].load("value") == "us-0,us-1,us-2"
    assert edges(store, "region_rows", "region_summary") == {(rows[p], summaries[p].ref) for p in ("eu", "us")}


def _finished_backfill_runs(instance: DagsterInstance, backfill_id: str, count: int) -> list[Any]:
    runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
    return runs if len(runs) >= count and all(r.is_finished for r in runs) else []


def _observe(instance: DagsterInstance, store: ArtifactStore, source: AssetsDefinition) -> None:
    """Observe ``source`` in this process, on the daemon's instance."""
    job = Definitions(assets=[source], jobs=[define_asset_job("observe", [source])],
                      resources={"tracelet": TraceletIOManager(store_uri=store.uri)}).resolve_job_def("observe")
    assert job.execute_in_process(instance=instance).success


def test_eager_automation_downstream_of_a_source_asset_logged_from_outside(
        daemon: tuple[DagsterInstance, ArtifactStore]) -> None:
    instance, store = daemon
    # The sensor's first tick only takes note of what exists; what is logged after it is an update.
    wait_for("the first automation tick", lambda: _ticked_since(instance, 0.0))
    for number, rows in enumerate(([1, 2], [1, 2, 3]), start=1):
        log_value(store, "prod/clicks", rows)
        _observe(instance, store, clicks)
        made = wait_for(f"click_total:v{number}", lambda n=number: store.exists(f"click_total:v{n}")
                        and store.get(f"click_total:v{n}"))
        run = wait_for("its run to end", lambda r=made.producer.run_id: _ended(instance, r))
        # A tick seeing the next observation together with this materialization would count the
        # materialization as handling it: observe again once a whole tick has run after the run.
        wait_for("a tick after the run", lambda end=run.end_time: _ticked_since(instance, end))
    assert store.get("click_total:v2").load("value") == 6
    assert edges(store, "click_total") == {("prod/clicks:v1", "click_total:v1"), ("prod/clicks:v2", "click_total:v2")}


def _ended(instance: DagsterInstance, run_id: str) -> Any:
    record = instance.get_run_record_by_id(run_id)
    return record if record is not None and record.end_time is not None else None


def _ticked_since(instance: DagsterInstance, timestamp: float) -> bool:
    """Whether a tick of the automation sensor started after ``timestamp`` and finished."""
    [state] = [s for s in instance.all_instigator_state() if s.instigator_name == "click_automation"] or [None]
    if state is None:
        return False
    ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=3)
    return any(t.timestamp > timestamp and t.tick_data.end_timestamp is not None for t in ticks)
