"""Values come back as they went in: tuples stay tuples, Series and arrow tables go to parquet,
containers of such values are one entry per leaf, and a value only pickle could hold fails in the
step that produces it (not in the one reading it) unless the IO manager allows pickle."""

import logging
from pathlib import Path
from typing import Any

import container_values as values
import pandas as pd
import pyarrow as pa
from dagster import AssetIn, DagsterInstance, asset, materialize

from tracelet_core import ArtifactStore, TraceletArtifact
from tracelet_dagster import TraceletIOManager, tracelet_source_asset

pytest_plugins = ["dagster_fixtures"]


@asset(io_manager_key="tracelet")
def pair() -> tuple[int, tuple[str, float]]:
    return 1, ("a", 2.5)


@asset(io_manager_key="tracelet")
def uses_pair(pair: tuple[int, tuple[str, float]]) -> list[Any]:  # Dagster type-checks the tuple
    assert isinstance(pair, tuple) and isinstance(pair[1], tuple)
    return [pair[0], list(pair[1])]


def test_tuples_load_back_as_tuples_without_pickle(dagster_resources: dict[str, object],
                                                   store: ArtifactStore) -> None:
    result = materialize([pair, uses_pair], resources=dagster_resources)

    assert result.success
    assert store.get("pair:v1").load("value") == (1, ("a", 2.5))
    assert store.get("pair:v1").objects[0].serializer == "json-tagged"
    assert store.get("uses_pair:v1").load("value") == [1, ["a", 2.5]]


@asset(io_manager_key="tracelet")
def prices() -> pd.Series:
    return pd.Series([1.5, 2.5], index=["apple", "pear"], name="price")


@asset(io_manager_key="tracelet")
def table() -> pa.Table:
    return pa.table({"id": [1, 2], "tag": ["x", "y"]})


@asset(io_manager_key="tracelet")
def summary(prices: pd.Series, table: pa.Table) -> dict[str, Any]:
    return {"name": prices.name, "pear": float(prices["pear"]), "rows": table.num_rows}


def test_series_and_arrow_tables_are_stored_as_parquet(dagster_resources: dict[str, object],
                                                       store: ArtifactStore) -> None:
    materialize([prices, table, summary], resources=dagster_resources)

    assert {v.name: v.objects[0].serializer for v in store.list() if v.name in {"prices", "table"}} == {
        "prices": "parquet", "table": "parquet"}
    assert store.get("summary:v1").load("value") == {"name": "price", "pear": 2.5, "rows": 2}
    pd.testing.assert_series_equal(store.get("prices:v1").load("value"), prices())


class Opaque:
    """Only pickle can hold this."""

    def __init__(self, value: int) -> None:
        self.value = value


@asset(io_manager_key="tracelet")
def opaque() -> Opaque:
    return Opaque(3)


@asset(io_manager_key="tracelet")
def reads_opaque(opaque: Opaque) -> int:
    return opaque.value


def test_a_value_only_pickle_can_hold_fails_in_the_producing_step(dagster_resources: dict[str, object],
                                                                  store: ArtifactStore) -> None:
    result = materialize([opaque, reads_opaque], resources=dagster_resources, raise_on_error=False)

    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "opaque"
    message = failure.step_failure_data.error.message
    assert "TRACELET_ALLOW_PICKLE" in message and "tracelet/serializer" in message
    assert store.list() == []


def test_with_pickle_allowed_it_is_pickled_and_loads(store_dir: Path, store: ArtifactStore) -> None:
    resources = {"tracelet": TraceletIOManager(store_uri=str(store_dir), allow_pickle=True)}
    materialize([opaque, reads_opaque], resources=resources)

    assert store.get("opaque:v1").objects[0].serializer == "pickle"
    assert store.get("reads_opaque:v1").load("value") == 3


def test_a_preview_that_cannot_be_drawn_is_reported_and_the_value_is_stored(
        dagster_resources: dict[str, object], store: ArtifactStore, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")

    @asset(io_manager_key="tracelet")
    def picture() -> Path:
        return broken

    with DagsterInstance.ephemeral() as instance:
        result = materialize([picture], resources=dagster_resources, instance=instance)
        messages = [r.user_message for r in instance.all_logs(result.run_id) if r.level == logging.WARNING]

    assert store.get("picture:v1").files[0].path == "value.png"
    assert any(m.startswith("tracelet: no preview for PosixPath") for m in messages)
    [materialization] = result.asset_materializations_for_node("picture")
    assert "tracelet/preview" not in materialization.metadata


# -- containers of safe values: one entry per leaf, no pickle -----------------------------------------
container_assets = [asset(io_manager_key="tracelet", name=fn.__name__)(fn) for fn in (
    values.splits, values.frames, values.stamped, values.layers, values.seen, values.mixed)]
received = asset(io_manager_key="tracelet", name="received")(values.summary)


def test_containers_of_safe_values_pass_between_assets_without_pickle(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    result = materialize([*container_assets, received], resources=dagster_resources)

    assert result.success
    values.assert_stored_without_pickle(store)
    assert store.get("received:v1").load() == values.SUMMARY
    [materialization] = result.asset_materializations_for_node("splits")
    assert materialization.metadata["tracelet/serializer"].value == "container"


@asset(io_manager_key="tracelet")
def bundle() -> dict[str, Any]:
    return {"train": values.FRAME, "extras": [Opaque(1)]}


@asset(io_manager_key="trusting")
def trusted_bundle() -> dict[str, Any]:
    return {"train": values.FRAME, "extras": [Opaque(2)]}


@asset(io_manager_key="trusting")
def reads_bundle(trusted_bundle: dict[str, Any]) -> int:
    return trusted_bundle["extras"][0].value


def test_a_container_only_pickle_holds_is_refused_unless_its_io_manager_allows_pickle(
        store_dir: Path, store: ArtifactStore) -> None:
    resources = {"tracelet": TraceletIOManager(store_uri=str(store_dir)),
                 "trusting": TraceletIOManager(store_uri=str(store_dir), allow_pickle=True)}
    result = materialize([bundle, trusted_bundle, reads_bundle], resources=resources, raise_on_error=False)

    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "bundle"
    message = failure.step_failure_data.error.message
    assert "value['extras'][0]" in message and "Opaque" in message
    assert "TRACELET_ALLOW_PICKLE" in message and "allow_pickle" in message
    assert not store.exists("bundle")
    assert {o.serializer for o in store.get("trusted_bundle:v1").objects} == {"pickle"}  # that manager allows it
    assert store.get("reads_bundle:v1").load() == 2


def test_a_container_logged_outside_dagster_loads_whole(dagster_resources: dict[str, object],
                                                        store: ArtifactStore) -> None:
    store.log(TraceletArtifact("external/splits", "dataset").add_object(values.splits(), "value", "auto"))
    seen: dict[str, Any] = {}

    @asset(io_manager_key="tracelet", ins={"splits": AssetIn(key=["external", "splits"])})
    def sizes(splits: dict[str, pd.DataFrame]) -> None:
        seen.update({name: len(frame) for name, frame in splits.items()})

    materialize([tracelet_source_asset("external/splits"), sizes], resources=dagster_resources)
    assert seen == {"train": 3, "test": 2}
