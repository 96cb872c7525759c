"""``examples/prefect_retraining.py``: run as a script against the test server, twice, then
with new data; and its deployment trigger, registered on the server, fired by a new data set."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import Artifact
from prefect.events import Event
from prefect.settings import PREFECT_API_URL

from tracelet_core import ArtifactStore

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "prefect_retraining.py"


def run_example(*args: str) -> str:
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    done = subprocess.run([sys.executable, str(EXAMPLE), *args], env=env, capture_output=True, text=True,
                          timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def test_example_runs_twice_then_promotes_only_a_better_model(
        store: ArtifactStore, prefect_artifacts: Callable[[str], list[Artifact]]) -> None:
    first = run_example()
    assert "promoted retrain/model:v1 in production" in first and "graph LR" in first
    second = run_example()
    assert "kept retrain/model:v1 in production" in second

    for name in ("retrain/raw", "retrain/features", "retrain/model", "retrain/evaluation"):
        assert [v.version for v in store.versions(name)] == ["v1"], name
    assert store.get("retrain/model:production").ref == "retrain/model:v1"
    assert store.get("retrain/evaluation:production").ref == "retrain/evaluation:v1"
    assert store.get("retrain/features:v1").inputs == ["retrain/raw:v1"]  # from load_artifact, via the task graph
    assert store.get("retrain/model:v1").inputs == ["retrain/features:v1"]
    assert sorted(store.get("retrain/evaluation:v1").inputs) == ["retrain/features:v1", "retrain/model:v1"]
    lineage = store.lineage("retrain/evaluation:v1")
    assert {"retrain/raw:v1", "retrain/features:v1", "retrain/model:v1"} <= set(lineage.artifact_refs)
    producer = store.get("retrain/model:v1").producer
    assert producer is not None and (producer.orchestrator, producer.name) == ("prefect", "retrain")  # the flow
    assert producer.extra["task_name"] == "train"
    assert producer.extra["parameters"] == {"dataset_ref": "retrain/raw:v1"}  # the flow run's, as called

    # The Prefect UI shows each name's history: one artifact per new version or alias move.
    model_history = [a for a in prefect_artifacts("retrain-model") if str(a.flow_run_id) == producer.run_id]
    assert [a.description for a in model_history] == ["tracelet retrain/model:v1", "tracelet retrain/model:v1"]
    assert "alias production set" in str(model_history[1].data)
    assert any(a.description == "tracelet retrain/raw:v1" for a in prefect_artifacts("retrain-raw"))

    third = run_example("--seed", "8")
    assert "trained retrain/model:v2" in third
    best = max(store.versions("retrain/evaluation"), key=lambda v: v.load()["accuracy"])
    assert store.get("retrain/evaluation:production") == best
    assert store.get("retrain/model:production").ref == best.load()["model"]


def test_a_new_data_set_version_triggers_the_retraining_deployment(
        store: ArtifactStore, event_log: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))  # a deployment needs an importable entry point
    example = importlib.import_module("prefect_retraining")
    deployment = example.retrain.to_deployment(name="retrain-on-new-data", triggers=[example.new_dataset_trigger()])
    deployment_id = str(deployment.apply())

    dataset = example.ingest(seed=11)  # a new version of retrain/raw: emits tracelet.artifact.logged

    def scheduled_by_trigger(event: Event) -> bool:
        return (event.event == "prefect.flow-run.Scheduled"
                and any(r.id == f"prefect.deployment.{deployment_id}" for r in event.related))

    # The run waits for a worker to pick it up; its parameters name the version that triggered it.
    [scheduled] = event_log.wait(scheduled_by_trigger, timeout=90)

    async def read_parameters() -> dict[str, Any]:
        async with get_client() as client:
            run = await client.read_flow_run(UUID(scheduled.resource.id.rsplit(".", 1)[-1]))
            return dict(run.parameters)

    assert asyncio.run(read_parameters()) == {"dataset_ref": dataset.ref}
