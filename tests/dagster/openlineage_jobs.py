"""A Dagster job on the multiprocess executor for the OpenLineage tests: step processes import
this module by name from its folder (it imports nothing from the tests' own helpers)."""

from dagster import Definitions, JobDefinition, asset, define_asset_job, multiprocess_executor

from tracelet_dagster import TraceletIOManager


@asset(io_manager_key="tracelet")
def mp_source() -> list[int]:
    return [1, 2, 3, 4]


@asset(io_manager_key="tracelet")
def mp_odds(mp_source: list[int]) -> list[int]:
    raise ValueError(f"no odds today ({len(mp_source)} numbers)")


@asset(io_manager_key="tracelet")
def mp_merged(mp_source: list[int], mp_odds: list[int]) -> list[int]:
    return sorted(mp_source + mp_odds)


def define_lineage_job() -> JobDefinition:
    """Rebuilt in every step process; the store comes from the run config."""
    defs = Definitions(assets=[mp_source, mp_odds, mp_merged],
                       jobs=[define_asset_job("lineage_mp", executor_def=multiprocess_executor)],
                       resources={"tracelet": TraceletIOManager.configure_at_launch()})
    return defs.resolve_job_def("lineage_mp")
