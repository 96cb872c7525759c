"""A Prefect tracelet task that would load a quarantined version fails, naming the version and
the reason; the flow run fails with it."""

from __future__ import annotations

import pytest
from prefect import flow

from tracelet_core import ArtifactStore, LoggedArtifact, QuarantinedError, TraceletArtifact
from tracelet_prefect import tracelet_task
from tracelet_prefect._commit import Outcome
from tracelet_prefect._runs import TaskRun
from tracelet_prefect._ui import render_markdown


@tracelet_task("q/readings", "dataset")
def readings() -> list[float]:
    return [0.5, 1.5]


@tracelet_task("q/mean", "dataset")
def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@flow
def averaged() -> LoggedArtifact:
    return mean(readings())


def test_a_task_loading_a_quarantined_version_fails_the_flow(store: ArtifactStore) -> None:
    first = averaged()
    assert first.load() == 1.0
    store.quarantine("q/readings:v1", "sensor drift")

    with pytest.raises(QuarantinedError, match=r"q/readings:v1 is quarantined: sensor drift"):
        averaged()  # readings returns the same (quarantined) version; mean refuses to load it
    assert [v.ref for v in store.versions("q/mean")] == ["q/mean:v1"]

    store.release("q/readings:v1")
    assert averaged() == first


def test_the_ui_artifact_of_a_quarantined_version_says_so(store: ArtifactStore) -> None:
    logged = store.log(TraceletArtifact("q/scores", "dataset").add_object([0.9], "value", "json"))
    store.quarantine(logged.ref, "scored with the wrong model")
    page = render_markdown(Outcome(logged=store.get(logged.ref), created=True), TaskRun(task_name="score"))
    assert "| **QUARANTINED** | since " in page and ": scored with the wrong model |" in page
