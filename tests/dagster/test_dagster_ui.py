"""What the Dagster UI shows: input versions as links to their assets, the version's lineage page,
and which step read a version (on the observation a read records)."""

from pathlib import Path
from typing import Any

from dagster import AssetIn, AssetKey, Definitions, Out, asset, job, materialize, op

from tracelet_core import ArtifactStore, TraceletArtifact
from tracelet_dagster import TraceletIOManager, tracelet_source_asset

pytest_plugins = ["dagster_fixtures"]

events = tracelet_source_asset("lake/events")


@asset(io_manager_key="tracelet", key_prefix=["team"])
def spaced() -> list[int]:
    return [1]


@asset(io_manager_key="tracelet", ins={"events": AssetIn(key=["lake", "events"]),
                                       "spaced": AssetIn(key=["team", "spaced"])})
def joined(events: list[int], spaced: list[int]) -> list[int]:
    return events + spaced


def _materialization_metadata(result: Any, node: str) -> dict[str, Any]:
    [materialization] = result.asset_materializations_for_node(node)
    return {key: value.value for key, value in materialization.metadata.items()}


def _materialize(store: ArtifactStore, io_manager: TraceletIOManager) -> Any:
    store.log(TraceletArtifact("lake/events", "dataset").add_object([7], "value", "json"))
    return materialize([events, spaced, joined], selection=["team/spaced", "joined"],
                       resources={"tracelet": io_manager})


def test_inputs_link_their_assets_and_reads_say_which_step_read_them(store: ArtifactStore, store_dir: Path) -> None:
    result = _materialize(store, TraceletIOManager(store_uri=str(store_dir)))
    shown = _materialization_metadata(result, "joined")
    assert shown["tracelet/inputs"] == ["lake/events:v1", "team/spaced:v1"]
    links = {k: v for k, v in shown.items() if k.startswith("tracelet/inputs/")}
    assert links == {"tracelet/inputs/lake/events:v1": AssetKey(["lake", "events"]),
                     "tracelet/inputs/team/spaced:v1": AssetKey(["team", "spaced"])}
    assert shown["tracelet/lineage"] == (
        f"tracelet lineage joined:v1 --store {store.uri} --format html -o lineage.html")
    reads = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION" and e.step_key == "joined"]
    observed = {e.asset_key.to_user_string(): e.event_specific_data.asset_observation.metadata for e in reads}
    assert set(observed) == {"lake/events", "team/spaced"}
    assert observed["lake/events"]["tracelet/read_by"].value == f"joined (run {result.run_id})"
    assert observed["lake/events"]["tracelet/ref"].value == "lake/events:v1"


def test_the_materialization_links_the_version_s_lineage_page(store: ArtifactStore, store_dir: Path,
                                                              tmp_path: Path) -> None:
    pages = tmp_path / "pages"
    result = _materialize(store, TraceletIOManager(store_uri=str(store_dir), lineage_pages=str(pages)))
    page = Path(_materialization_metadata(result, "joined")["tracelet/lineage"])
    assert page == pages / "joined" / "v1.html"
    drawn = page.read_text()
    assert drawn.startswith("<!DOCTYPE html>") and "joined:v1" in drawn and "lake/events:v1" in drawn

    served = TraceletIOManager(store_uri=str(store_dir), lineage_pages=str(pages), lineage_url="https://ml.example/l/")
    store.log(TraceletArtifact("lake/events", "dataset").add_object([8], "value", "json"))
    again = materialize([events, spaced, joined], selection=["joined"], resources={"tracelet": served})
    assert _materialization_metadata(again, "joined")["tracelet/lineage"] == "https://ml.example/l/joined/v2.html"
    assert (pages / "joined" / "v2.html").is_file()


@op(out={"result": Out(io_manager_key="tracelet")})
def make() -> int:
    return 1


@op(out={"result": Out(io_manager_key="tracelet")})
def use(value: int) -> int:
    return value + 1


@job
def ops_only() -> None:
    use(make())


def test_op_outputs_are_not_linked_as_assets(store: ArtifactStore, store_dir: Path) -> None:
    defs = Definitions(jobs=[ops_only], resources={"tracelet": TraceletIOManager(store_uri=str(store_dir))})
    result = defs.resolve_job_def("ops_only").execute_in_process()
    [handled] = [e for e in result.all_events if e.event_type_value == "HANDLED_OUTPUT" and e.step_key == "use"]
    metadata = handled.event_specific_data.metadata
    assert metadata["tracelet/inputs"].value == ["ops_only/make/result:v1"]
    assert not [k for k in metadata if k.startswith("tracelet/inputs/")]
