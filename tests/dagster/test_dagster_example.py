"""examples/dagster_retraining.py: run twice, retrain on new data (by sensor and by run), promote
only a better model, and load the way `dagster dev` does."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from dagster import DagsterInstance, Definitions, build_sensor_context, materialize

from tracelet_core import ArtifactStore

pytest_plugins = ["dagster_fixtures"]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "dagster_retraining.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dagster_retraining", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _refs(store: ArtifactStore, name: str) -> list[str]:
    return [v.ref for v in store.versions(name)]


def test_retraining_keeps_production_until_a_model_beats_it(
        example: ModuleType, store: ArtifactStore, dagster_instance: DagsterInstance) -> None:
    resources = example.resources(store.uri)
    example.log_raw_data(store, seed=0, label_noise=0.05)
    materialize(example.ASSETS, resources=resources)
    materialize(example.ASSETS, resources=resources)  # same data: nothing new

    for name in ["features", "model", "evaluation", "promotion"]:
        assert _refs(store, name) == [f"{name}:v1"]
    assert store.get("model:production").ref == "model:v1"

    # New, noisier data logged outside Dagster: the sensor asks for a run pinned to it.
    example.log_raw_data(store, seed=1, label_noise=0.4)
    with build_sensor_context(instance=dagster_instance, resources=resources,
                              cursor='{"moves": 0, "version": 1}') as context:
        [request] = example.defs.resolve_sensor_def("retrain_on_new_raw_data").evaluate_tick(context).run_requests
    assert request.tags["tracelet/pins"] == "raw_data:v2"
    retrain = Definitions(assets=example.ASSETS, jobs=[example.retrain], resources=resources).resolve_job_def("retrain")
    retrain.execute_in_process(instance=dagster_instance, tags=request.tags)

    assert store.get("evaluation:v2").inputs == ["features:v2", "model:v2"]
    assert store.get("model:production").ref == "model:v1"  # worse model: not promoted

    # Clean data on the daily run: a better model takes over production.
    example.log_raw_data(store, seed=2, label_noise=0.0)
    materialize(example.ASSETS, resources=resources)

    assert store.get("model:production").ref == "model:v3"
    state = store.get("promotion:v3").load("value")
    assert state["candidate_accuracy"] > store.get("evaluation:v1").load("value")["accuracy"]
    assert store.get("promotion:v3").inputs == ["evaluation:v3", "model:v1"]
    assert set(store.lineage("evaluation:v3").artifact_refs) == {
        "evaluation:v3", "model:v3", "features:v3", "raw_data:v3"}
    assert {"raw_data:v1", "raw_data:v3"} <= set(store.lineage("promotion:v3").artifact_refs)  # old production too
    assert _refs(store, "raw_data") == ["raw_data:v1", "raw_data:v2", "raw_data:v3"]


def test_the_example_runs_as_a_script(tmp_path: Path) -> None:
    command = [sys.executable, str(EXAMPLE), "--store", str(tmp_path / "retrain")]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True)

    assert "raw data: raw_data:v1" in done.stdout
    assert "production: model:v1" in done.stdout and "graph LR" in done.stdout


def test_dagster_loads_the_example_definitions(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    command = [sys.executable, "-m", "dagster", "definitions", "validate", "-f", str(EXAMPLE)]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful" in done.stdout + done.stderr
