"""The multiprocess executor: every step is its own process, opens the store named in the IO
manager's run config, and still records exactly what it read."""

from pathlib import Path
from typing import Any

import pandas as pd
from dagster import (
    DagsterInstance,
    Definitions,
    JobDefinition,
    asset,
    build_reconstructable_job,
    define_asset_job,
    execute_job,
    multiprocess_executor,
)

from tracelet_core import ArtifactStore
from tracelet_dagster import TraceletIOManager

pytest_plugins = ["dagster_fixtures"]

HERE = Path(__file__).resolve().parent


@asset(io_manager_key="tracelet")
def samples() -> pd.DataFrame:
    return pd.DataFrame({"x": [1, 2, 3, 4]})


@asset(io_manager_key="tracelet")
def evens(samples: pd.DataFrame) -> list[int]:
    return [int(x) for x in samples["x"] if x % 2 == 0]


@asset(io_manager_key="tracelet")
def odds(samples: pd.DataFrame) -> list[int]:
    return [int(x) for x in samples["x"] if x % 2]


@asset(io_manager_key="tracelet")
def merged(evens: list[int], odds: list[int]) -> list[int]:
    return sorted(evens + odds)


def define_numbers_job() -> JobDefinition:
    """Rebuilt in every step process; the store comes from the run config, not from here."""
    defs = Definitions(assets=[samples, evens, odds, merged],
                       jobs=[define_asset_job("numbers", executor_def=multiprocess_executor)],
                       resources={"tracelet": TraceletIOManager.configure_at_launch()})
    return defs.resolve_job_def("numbers")


def _run_config(store_uri: str) -> dict[str, Any]:
    return {"resources": {"tracelet": {"config": {"store_uri": store_uri}}},
            "execution": {"config": {"max_concurrent": 2}}}


def test_steps_in_separate_processes_share_the_store_and_record_exact_inputs(
        dagster_instance: DagsterInstance, store: ArtifactStore) -> None:
    # Step processes import this module by name from its folder, as pytest did.
    numbers_job = build_reconstructable_job(Path(__file__).stem, "define_numbers_job",
                                            reconstructor_working_directory=str(HERE))
    with execute_job(numbers_job, instance=dagster_instance, run_config=_run_config(store.uri)) as result:
        assert result.success
        run_id = result.run_id
        step_pids = {e.step_key: e.pid for e in result.all_events if e.event_type_value == "STEP_START"}

    assert len(set(step_pids.values())) == 4  # one process per step
    assert store.get("merged:v1").load("value") == [1, 2, 3, 4]
    assert store.get("merged:v1").inputs == ["evens:v1", "odds:v1"]
    assert store.get("evens:v1").inputs == ["samples:v1"]
    producers = {v.name: v.producer for v in store.list()}
    assert {name: (p.run_id, p.step) for name, p in producers.items() if p} == {
        name: (run_id, name) for name in ["samples", "evens", "odds", "merged"]}
