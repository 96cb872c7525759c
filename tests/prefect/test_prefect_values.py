"""Values through Prefect: a missing ref with a default, safe containers, pickle refused in the
producing task unless allowed."""

from __future__ import annotations

from typing import Any

import pytest
from prefect import flow

from tracelet_core import ArtifactNotFoundError, ArtifactStore, TraceletArtifact
from tracelet_prefect import load_artifact


# -- load_artifact(default=...) ---------------------------------------------------------------------
def test_load_artifact_returns_the_default_when_the_ref_does_not_exist(store: ArtifactStore) -> None:
    store.log(TraceletArtifact("v1/model", "model").add_object({"w": 1}, "value", "json"))

    @flow
    def champion(ref: str) -> Any:
        return load_artifact(ref, default=None)

    assert champion("v1/model:production") is None  # no such alias (yet)
    assert champion("v1/model:v7") is None
    assert champion("v1/nothing:latest") is None
    assert champion("v1/model:latest") == {"w": 1}
    assert not store.exists("v1/model:production") and store.exists("v1/model")


def test_load_artifact_without_a_default_still_fails_the_task(store: ArtifactStore) -> None:
    @flow
    def champion() -> Any:
        return load_artifact("v1/nothing:production")

    with pytest.raises(ArtifactNotFoundError, match="v1/nothing"):
        champion()


# -- values plain JSON cannot hold, without pickle ----------------------------------------------------
def test_sets_dates_and_odd_keys_pass_between_tasks_without_pickle(store: ArtifactStore) -> None:
    import datetime
    import decimal
    import uuid

    from tracelet_prefect import tracelet_task

    value = {"when": datetime.datetime(2024, 5, 1, 9, 30), "day": datetime.date(2024, 5, 1),
             "seen": {1, 2, 3}, "frozen": frozenset({"a"}), 7: b"\x00raw", (1, 2): decimal.Decimal("1.10"),
             "id": uuid.UUID(int=42)}

    @tracelet_task("v2/odd")
    def produce() -> dict[Any, Any]:
        return value

    @tracelet_task("v2/echo")
    def echo(received: dict[Any, Any]) -> bool:
        return received == value and all(type(received[k]) is type(v) for k, v in value.items())

    @flow
    def pipeline() -> Any:
        return echo(produce())

    assert pipeline().load() is True
    logged = store.get("v2/odd")
    assert logged.objects[0].serializer == "json-tagged"
    assert logged.load(allow_pickle=False) == value


# -- pickle: refused in the producing task, unless the task allows it -------------------------------
def test_a_value_only_pickle_holds_fails_its_task_unless_the_task_allows_pickle(store: ArtifactStore) -> None:
    from tracelet_core import InvalidArtifactError, UnsafeDeserializationError
    from tracelet_prefect import tracelet_task

    @tracelet_task("v3/complex")
    def refused() -> complex:
        return 1 + 2j

    @flow
    def strict() -> Any:
        return refused()

    with pytest.raises(InvalidArtifactError, match="TRACELET_ALLOW_PICKLE.*allow_pickle"):
        strict()
    assert not store.exists("v3/complex")  # nothing committed

    @tracelet_task("v3/complex", allow_pickle=True)
    def allowed() -> complex:
        return 1 + 2j

    @tracelet_task("v3/doubled", allow_pickle=True)
    def doubled(value: complex) -> str:
        return str(value * 2)

    @tracelet_task("v3/blind")
    def blind(value: complex) -> str:
        return str(value)

    @flow
    def trusting() -> Any:
        made = allowed()
        return doubled(made), made

    result, made = trusting()
    assert result.load() == "(2+4j)"
    assert made.objects[0].serializer == "pickle" and result.inputs == [made.ref]

    @flow
    def not_trusting() -> Any:
        return blind(store.get("v3/complex"))

    with pytest.raises(UnsafeDeserializationError):  # the input is not loaded without the switch
        not_trusting()
    assert not store.exists("v3/blind")


# -- containers of safe values: one entry per leaf, no pickle -----------------------------------------
def test_containers_of_safe_values_pass_between_tasks_without_pickle(store: ArtifactStore) -> None:
    import container_values as values

    from tracelet_prefect import tracelet_task

    producers = [tracelet_task(f"v4/{fn.__name__}")(fn) for fn in (
        values.splits, values.frames, values.stamped, values.layers, values.seen, values.mixed)]
    received = tracelet_task("v4/received")(values.summary)

    @flow
    def pipeline() -> Any:
        return received(*(produce() for produce in producers))

    result = pipeline()
    assert result.load() == values.SUMMARY
    values.assert_stored_without_pickle(store, "v4/")
    assert len(result.inputs) == 6


def test_a_container_only_pickle_holds_fails_its_task_with_the_dagster_message(store: ArtifactStore) -> None:
    import pandas as pd

    from tracelet_core import InvalidArtifactError
    from tracelet_prefect import tracelet_task

    @tracelet_task("v5/bundle")
    def bundle() -> dict[str, Any]:
        return {"train": pd.DataFrame({"x": [1]}), "extras": [1 + 2j]}

    @flow
    def strict() -> Any:
        return bundle()

    with pytest.raises(InvalidArtifactError) as refused:
        strict()
    message = str(refused.value)
    assert "value['extras'][0] (a builtins.complex) can only be stored with pickle" in message
    assert "TRACELET_ALLOW_PICKLE" in message and "allow_pickle" in message
    assert not store.exists("v5/bundle")

    @flow
    def trusting() -> Any:
        return bundle.with_options(allow_pickle=True)()

    assert trusting().objects[0].serializer == "pickle"


def test_sklearn_models_pass_between_tasks_with_skops_without_pickle(store: ArtifactStore) -> None:
    from sklearn.linear_model import LogisticRegression

    from tracelet_prefect import load_artifact, tracelet_task

    @tracelet_task("v6/model", "model")
    def fit() -> LogisticRegression:
        return LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])

    @tracelet_task("v6/prediction")
    def predict(model: LogisticRegression) -> int:
        return int(model.predict([[3.0]])[0])

    @flow
    def pipeline() -> Any:
        return predict(fit())

    assert pipeline().load() == 1
    assert store.get("v6/model").objects[0].serializer == "skops"

    @flow
    def reload() -> Any:
        return load_artifact("v6/model:latest", allow_pickle=False)

    assert isinstance(reload(), LogisticRegression)


def test_a_container_read_with_load_artifact_is_recorded_as_the_input(store: ArtifactStore) -> None:
    import container_values as values

    from tracelet_prefect import tracelet_task

    logged = store.log(TraceletArtifact("v7/splits", "dataset").add_object(values.splits(), "value", "auto"))

    @tracelet_task("v7/sizes")
    def sizes(splits: dict[str, Any]) -> dict[str, int]:
        return {name: len(frame) for name, frame in splits.items()}

    @flow
    def pipeline() -> Any:
        return sizes(load_artifact("v7/splits:latest"))

    result = pipeline()
    assert result.load() == {"train": 3, "test": 2}
    assert result.inputs == [logged.ref]
