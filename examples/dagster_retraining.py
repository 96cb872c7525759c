"""Retraining with Dagster and tracelet: raw data -> features -> model -> evaluation -> promotion.

``raw_data`` is logged outside Dagster (by an ingestion script, here ``log_raw_data``) and seen in
Dagster as an observable source asset. Every other asset is stored by the tracelet IO manager,
so each materialization is a version with the exact versions it was made from. ``promotion``
moves the alias ``production`` to the new model only when its test accuracy beats the
accuracy measured for the model ``production`` points at now; it finds both through lineage.

Two ways to retrain: the daily schedule, or the sensor that requests a run (pinned to that
exact version) whenever ``raw_data`` gets a new version.

    dagster dev -f examples/dagster_retraining.py       # the store is TRACELET_STORE_URI
    python examples/dagster_retraining.py               # materialize once on TRACELET_STORE_URI
    python examples/dagster_retraining.py --store /tmp/retrain [--seed 3 --label-noise 0.0]

Needs pandas, pyarrow and scikit-learn besides Dagster: ``pip install "tracelet-artifacts[examples]"``.
"""

import argparse
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    Definitions,
    Output,
    ScheduleDefinition,
    asset,
    define_asset_job,
    materialize,
)

from tracelet_core import ArtifactNotFoundError, ArtifactStore, LoggedArtifact, TraceletArtifact
from tracelet_dagster import TraceletIOManager, TraceletResource, tracelet_sensor, tracelet_source_asset

FEATURES = ["x0", "x1", "x2", "x3"]
TRUE_WEIGHTS = np.array([1.5, -2.0, 0.7, 0.0])


# -- outside Dagster: the ingestion that produces raw data ------------------------------------------
def make_raw_data(seed: int, label_noise: float, rows: int = 400) -> pd.DataFrame:
    """Synthetic tabular data: four features, a linear label, a share of flipped labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURES)))
    label = (x @ TRUE_WEIGHTS > 0).astype(int)
    flipped = rng.random(rows) < label_noise
    label[flipped] = 1 - label[flipped]
    return pd.DataFrame(x, columns=FEATURES).assign(label=label)


def log_raw_data(store: ArtifactStore, seed: int = 0, label_noise: float = 0.05) -> LoggedArtifact:
    """What the ingestion job does: log a new version of ``raw_data`` (none if unchanged)."""
    artifact = TraceletArtifact("raw_data", "dataset", description=f"seed {seed}, label noise {label_noise}")
    return store.log(artifact.add_object(make_raw_data(seed, label_noise), "table", "parquet"))


# -- in Dagster ------------------------------------------------------------------------------------
raw_data = tracelet_source_asset("raw_data", group_name="retraining")


@asset(io_manager_key="tracelet", group_name="retraining")
def features(raw_data: pd.DataFrame) -> pd.DataFrame:
    """Standardized features; every fifth row is held out for testing."""
    scaled = (raw_data[FEATURES] - raw_data[FEATURES].mean()) / raw_data[FEATURES].std()
    split = np.where(np.arange(len(raw_data)) % 5 == 0, "test", "train")
    return scaled.assign(label=raw_data["label"].to_numpy(), split=split)


@asset(io_manager_key="tracelet", group_name="retraining")
def model(features: pd.DataFrame) -> Any:
    """A logistic regression (stored with add_model: sklearn models go to skops, no pickle)."""
    from sklearn.linear_model import LogisticRegression  # Deferred: loading the definitions stays fast

    train = features[features["split"] == "train"]
    return LogisticRegression().fit(train[FEATURES], train["label"])


@asset(io_manager_key="tracelet", group_name="retraining")
def evaluation(model: Any, features: pd.DataFrame) -> dict[str, Any]:
    test = features[features["split"] == "test"]
    accuracy = float((model.predict(test[FEATURES]) == test["label"]).mean())
    return {"accuracy": round(accuracy, 4), "test_rows": len(test)}


def _measured_model(evaluation_version: LoggedArtifact) -> str:
    """The exact model version an evaluation version measured (from its lineage)."""
    return next(ref for ref in evaluation_version.inputs if ref.startswith("model:"))


def _accuracy_of(store: ArtifactStore, model_ref: str) -> float | None:
    """The accuracy recorded for ``model_ref`` by the newest evaluation that read it."""
    for version in reversed(store.versions("evaluation")):
        if model_ref in version.inputs:
            return float(version.load("value")["accuracy"])
    return None


@asset(io_manager_key="tracelet", group_name="retraining")
def promotion(context: AssetExecutionContext, evaluation: LoggedArtifact,
              tracelet_store: TraceletResource) -> Output[dict[str, Any]]:
    """Move ``model:production`` to the evaluated model if it beats the current production."""
    store = tracelet_store.store
    candidate = _measured_model(evaluation)
    candidate_accuracy = float(evaluation.load("value")["accuracy"])
    try:
        production: str | None = tracelet_store.get("model:production").ref
    except ArtifactNotFoundError:
        production = None
    production_accuracy = _accuracy_of(store, production) if production else None
    promoted = production is None or (production != candidate and (
        production_accuracy is None or candidate_accuracy > production_accuracy))
    if promoted:
        store.set_alias(candidate, "production")
        production, production_accuracy = candidate, candidate_accuracy
    context.log.info(f"{'promoted' if promoted else 'kept'} {production} in production")
    state = {"production": production, "production_accuracy": production_accuracy,
             "candidate": candidate, "candidate_accuracy": candidate_accuracy}
    return Output(state, metadata={"promoted": promoted})


ASSETS = [raw_data, features, model, evaluation, promotion]
retrain = define_asset_job("retrain", selection=[features, model, evaluation, promotion])


def resources(store_uri: str | None = None) -> dict[str, Any]:
    """The tracelet IO manager and resource on one store (default: TRACELET_STORE_URI). Nothing
    here needs pickle: the model is stored with skops, the rest as parquet and JSON."""
    return {"tracelet": TraceletIOManager(store_uri=store_uri),
            "tracelet_store": TraceletResource(store_uri=store_uri)}


defs = Definitions(
    assets=ASSETS,
    jobs=[retrain],
    schedules=[ScheduleDefinition(name="retrain_daily", job=retrain, cron_schedule="0 4 * * *")],
    sensors=[tracelet_sensor("raw_data", job=retrain, sensor_name="retrain_on_new_raw_data")],
    resources=resources(),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="store folder or fsspec URL (default: TRACELET_STORE_URI)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the raw data to log first")
    parser.add_argument("--label-noise", type=float, default=0.05, help="share of flipped labels")
    args = parser.parse_args()
    with ArtifactStore.open(args.store) as store:
        print(f"store: {store.uri}")
        print(f"raw data: {log_raw_data(store, args.seed, args.label_noise).ref}")
        materialize(ASSETS, resources=resources(store.uri))
        state = store.get("promotion:latest").load("value")
        print(f"production: {state['production']} (accuracy {state['production_accuracy']}); "
              f"candidate {state['candidate']} (accuracy {state['candidate_accuracy']})")
        print(store.lineage("promotion:latest").to_mermaid())


if __name__ == "__main__":
    main()
