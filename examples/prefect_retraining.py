"""Scheduled retraining with Prefect and tracelet: features -> train -> evaluate -> promote.

Two flows share one tracelet store:

- ``ingest`` logs the raw data set (``retrain/raw``, a new version only when the data changed);
- ``retrain`` loads a version of it, builds features, trains a scikit-learn model, evaluates it
  and moves the alias ``production`` onto the model (and its evaluation) only when it beats the
  current production model.

Every step is a ``tracelet_task``: its return value becomes a version whose producer is the
Prefect task run and whose inputs are the versions it received, so the lineage of any model
leads back to the exact data set version. Each new version also shows up as a markdown
artifact in the Prefect UI and emits ``tracelet.artifact.logged``.

    python examples/prefect_retraining.py              # ingest + retrain once (a temporary Prefect server
                                                      # unless PREFECT_API_URL points at one)
    python examples/prefect_retraining.py --seed 8     # new data: new versions, promoted only if better
    python examples/prefect_retraining.py --serve      # serve `retrain`: nightly cron + a run per new data set

Needs pandas, pyarrow and scikit-learn besides Prefect: ``pip install "tracelet-artifacts[examples]"``.
The store is ``TRACELET_STORE_URI`` (default ``~/.tracelet/store``).

``--serve`` registers one deployment with a cron schedule and a ``DeploymentEventTrigger`` on
``tracelet.artifact.logged`` for new versions of ``retrain/raw``: whoever logs new data (this
script's ``ingest``, another flow, ``tracelet log``... from a Prefect task) starts a retraining
run on exactly that version.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

# Without PREFECT_API_URL, Prefect starts a temporary server and waits 20 s for it, which a
# loaded machine can miss; its usage analytics print tracebacks when offline. Both are read
# when prefect is imported (docs/troubleshooting.md); a setting already in the environment wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.events import DeploymentEventTrigger  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from tracelet_core import ArtifactNotFoundError, ArtifactStore, LoggedArtifact  # noqa: E402
from tracelet_prefect import load_artifact, log_artifact, tracelet_task  # noqa: E402

DATASET = "retrain/raw"
NIGHTLY = "0 3 * * *"


# -- steps ----------------------------------------------------------------------------------
@tracelet_task(DATASET, "dataset")
def make_dataset(seed: int) -> pd.DataFrame:
    """Synthetic two-class data (stands in for an export from the warehouse)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, 3))
    y = (x @ np.array([1.5, -2.0, 0.5]) + 0.8 * rng.normal(size=400) > 0).astype(int)
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": y})


@tracelet_task("retrain/features", "dataset")
def features(raw: pd.DataFrame) -> pd.DataFrame:
    """Standardised features with a fixed train/test split."""
    columns = ["a", "b", "c"]
    scaled = (raw[columns] - raw[columns].mean()) / raw[columns].std()
    scaled["label"] = raw["label"]
    scaled["split"] = np.where(np.arange(len(raw)) % 4 == 0, "test", "train")
    return scaled


@tracelet_task("retrain/model", "model")
def train(feats: pd.DataFrame) -> LogisticRegression:
    """A logistic regression on the training split."""
    rows = feats[feats["split"] == "train"]
    return LogisticRegression().fit(rows[["a", "b", "c"]], rows["label"])


@tracelet_task("retrain/evaluation", "report")
def evaluate(model: LoggedArtifact, feats: pd.DataFrame) -> dict[str, Any]:
    """Accuracy on the test split."""
    # Models are stored in their framework's format; scikit-learn's is skops, which loads
    # without pickle (types outside skops' trusted list would need allow_pickle=True).
    estimator = model.load()
    rows = feats[feats["split"] == "test"]
    accuracy = float((estimator.predict(rows[["a", "b", "c"]]) == rows["label"]).mean())
    return {"model": model.ref, "accuracy": round(accuracy, 4)}


@task
def beats_production(evaluation: LoggedArtifact) -> bool:
    """Whether this evaluation is better than the one of the model now in production."""
    try:
        current = evaluation.store.get("retrain/evaluation:production")
    except ArtifactNotFoundError:
        return True
    return bool(evaluation.load()["accuracy"] > current.load()["accuracy"])


# -- flows ----------------------------------------------------------------------------------
@flow(name="ingest")
def ingest(seed: int = 7) -> LoggedArtifact:
    return make_dataset(seed)


@flow(name="retrain")
def retrain(dataset_ref: str = f"{DATASET}:latest") -> dict[str, Any]:
    raw = load_artifact(dataset_ref)  # the version read is recorded: features' input
    feats = features(raw)
    model = train(feats)
    evaluation = evaluate(model, feats)
    promoted = beats_production(evaluation)
    if promoted:
        log_artifact(model, aliases=["production"])
        log_artifact(evaluation, aliases=["production"])
    return {"model": model.ref, "evaluation": evaluation.ref, "accuracy": evaluation.load()["accuracy"],
            "promoted": promoted}


# -- deployment -----------------------------------------------------------------------------
def new_dataset_trigger() -> DeploymentEventTrigger:
    """Run ``retrain`` on every new version of the data set (not on alias moves), with the
    version that triggered it."""
    return DeploymentEventTrigger(
        name="retrain-on-new-dataset",
        expect={"tracelet.artifact.logged"},
        match={"prefect.resource.id": f"tracelet.artifact.{DATASET}", "tracelet.created": "true"},
        parameters={"dataset_ref": "{{ event.payload.ref }}"},
    )


def serve() -> None:
    """Serve ``retrain``: nightly, and whenever a new data set version is logged (blocks)."""
    retrain.serve(name="retraining", cron=NIGHTLY, triggers=[new_dataset_trigger()])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic data set")
    parser.add_argument("--serve", action="store_true", help="serve the retraining deployment (blocks)")
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return {}
    dataset = ingest(args.seed)
    outcome = retrain(dataset.ref)
    store = ArtifactStore.open()
    production = store.get("retrain/model:production")
    print(f"data set {dataset.ref}; trained {outcome['model']} (accuracy {outcome['accuracy']}); "
          f"{'promoted' if outcome['promoted'] else 'kept'} {production.ref} in production")
    print(json.dumps({v.ref: v.inputs for v in store.list(name="retrain")}, indent=2, sort_keys=True))
    print(store.lineage(outcome["evaluation"]).to_mermaid())
    return outcome


if __name__ == "__main__":
    main()
