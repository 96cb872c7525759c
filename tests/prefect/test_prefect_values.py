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
