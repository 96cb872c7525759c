"""Failures: the step fails with the tracelet error chained, no partial version is left, and a
retried step never logs the same output twice."""

from pathlib import Path
from typing import Any

import pytest
from dagster import Failure, Out, Output, RetryPolicy, asset, job, materialize, op

from tracelet_core import ArtifactNotFoundError, ArtifactStore, InvalidArtifactError
from tracelet_dagster import TraceletIOManager

pytest_plugins = ["dagster_fixtures"]


def _step_failure(result: Any, step_key: str) -> Any:
    [event] = [e for e in result.all_events if e.is_step_failure and e.step_key == step_key]
    return event.step_failure_data


def test_a_value_that_cannot_be_stored_fails_the_step_with_the_tracelet_error_chained(
        dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    @asset(io_manager_key="tracelet", metadata={"tracelet/serializer": "json"})
    def not_json() -> Any:
        return {"when": object()}

    with pytest.raises(Failure, match="tracelet could not log not_json: .*not JSON-serializable") as raised:
        materialize([not_json], resources=dagster_resources)

    assert isinstance(raised.value.__cause__, InvalidArtifactError)
    assert raised.value.metadata["tracelet/error"].value == "InvalidArtifactError"
    with pytest.raises(ArtifactNotFoundError):
        store.versions("not_json")


def test_a_tracelet_error_is_not_retried(dagster_resources: dict[str, object], store: ArtifactStore) -> None:
    attempts: list[int] = []

    @asset(io_manager_key="tracelet", retry_policy=RetryPolicy(max_retries=2))
    def unpicklable() -> Any:
        attempts.append(1)
        return lambda: None

    result = materialize([unpicklable], resources=dagster_resources, raise_on_error=False)

    assert not result.success and len(attempts) == 1
    assert _step_failure(result, "unpicklable").error.cause.cls_name == "InvalidArtifactError"


def test_a_crash_while_committing_leaves_no_version(dagster_resources: dict[str, object], store: ArtifactStore,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    @asset(io_manager_key="tracelet")
    def table() -> list[int]:
        return list(range(100))

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ArtifactStore, "_commit", disk_full)  # fault injected after the blobs are written
    result = materialize([table], resources=dagster_resources, raise_on_error=False)

    assert not result.success
    assert "No space left on device" in _step_failure(result, "table").error.cause.message
    assert store.list() == []
    store.verify()


def test_a_retried_step_gets_the_version_it_already_logged(dagster_resources: dict[str, object],
                                                          store: ArtifactStore) -> None:
    attempts: list[int] = []

    @op(out={"model": Out(io_manager_key="tracelet"), "report": Out(io_manager_key="tracelet")},
        retry_policy=RetryPolicy(max_retries=2))
    def train() -> Any:
        attempts.append(1)
        yield Output({"weights": [1, 2]}, "model")  # logged before the failure below
        if len(attempts) == 1:
            raise ConnectionError("tracker went away")
        yield Output({"accuracy": 0.9}, "report")

    @job
    def training() -> None:
        train()

    result = training.execute_in_process(resources=dagster_resources)

    assert result.success and len(attempts) == 2
    assert [v.ref for v in store.versions("training/train/model")] == ["training/train/model:v1"]
    [first, second] = [e for e in result.all_events if e.event_type_value == "HANDLED_OUTPUT"
                       and e.event_specific_data.output_name == "model"]
    assert second.event_specific_data.metadata["tracelet/ref"].value == "training/train/model:v1"


def test_a_transient_store_error_is_retried_by_the_policy(store_dir: Path, store: ArtifactStore,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real_log = ArtifactStore.log
    calls: list[int] = []

    def flaky_log(self: ArtifactStore, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("catalog unreachable")
        return real_log(self, *args, **kwargs)

    @asset(io_manager_key="tracelet", retry_policy=RetryPolicy(max_retries=1))
    def rows() -> list[int]:
        return [1, 2, 3]

    monkeypatch.setattr(ArtifactStore, "log", flaky_log)
    result = materialize([rows], resources={"tracelet": TraceletIOManager(store_uri=str(store_dir))})

    assert result.success and len(calls) == 2
    assert [v.ref for v in store.versions("rows")] == ["rows:v1"]
