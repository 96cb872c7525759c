"""A Dagster step that would load a quarantined version fails, naming the version and the
reason; released, the same job runs again."""

from typing import Any

import pytest
from dagster import Failure, asset, materialize

from tracelet_core import ArtifactStore, QuarantinedError

pytest_plugins = ["dagster_fixtures"]


@asset(io_manager_key="tracelet")
def labels() -> list[int]:
    return [1, 0, 1]


@asset(io_manager_key="tracelet")
def label_count(labels: list[int]) -> int:
    return sum(labels)


def test_a_step_reading_a_quarantined_version_fails_with_its_reason(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    assert materialize([labels, label_count], resources=dagster_resources).success
    store.quarantine("labels:v1", "labels flipped by a bad export")

    with pytest.raises(Failure, match=r"labels:v1 is quarantined: labels flipped by a bad export") as raised:
        materialize([labels, label_count], resources=dagster_resources, selection=[label_count])
    assert isinstance(raised.value.__cause__, QuarantinedError)
    assert [v.ref for v in store.versions("label_count")] == ["label_count:v1"]  # nothing new was logged

    again: Any = materialize([labels], resources=dagster_resources)  # the same content: labels:v1 again
    metadata = again.asset_materializations_for_node("labels")[0].metadata
    assert metadata["tracelet/ref"].value == "labels:v1"
    assert metadata["tracelet/quarantined"].value.endswith(": labels flipped by a bad export")  # the UI says so

    store.release("labels:v1")
    result: Any = materialize([labels, label_count], resources=dagster_resources, selection=[label_count])
    assert result.success and result.output_for_node("label_count") == 2
