"""The demo pipeline (``bash scripts/demo.sh``): retraining through Dagster on the default store.

Five assets, materialized in-process with ``dagster.materialize`` (no server to start), every
output stored by ``TraceletIOManager`` as a version whose producer is the Dagster step and whose
inputs are the exact versions that step loaded:

    demo/raw_data -> demo/features -> demo/model -> demo/evaluation -> demo/promotion

``demo/promotion`` moves the alias ``production`` to the new model only when its error beats
the one measured for the model ``production`` points at now. Run it again with the same seed
and nothing new is created (content-addressed dedup); ``--seed`` gives new data, so a new
version of everything, promoted only if better. Needs only numpy, torch and dagster
(``pip install "tracelet-artifacts[demo]"``).

    python examples/dagster_demo.py                  # store: TRACELET_STORE_URI or ~/.tracelet/store
    python examples/dagster_demo.py --store /tmp/demo --seed 8
"""

import argparse
from typing import Any

import numpy as np
import torch
from dagster import AssetExecutionContext, Config, Output, asset, materialize

from tracelet_core import ArtifactNotFoundError, ArtifactStore, LoggedArtifact
from tracelet_dagster import TraceletIOManager, TraceletResource

PREFIX = ["demo"]
TRUE_WEIGHTS = np.array([1.5, -2.0, 0.5], dtype=np.float32)


class RawDataConfig(Config):
    seed: int = 7
    rows: int = 256


@asset(key_prefix=PREFIX, io_manager_key="tracelet", metadata={"tracelet/type": "dataset"})
def raw_data(config: RawDataConfig) -> np.ndarray:
    """Synthetic regression data: three features and a noisy linear target (last column)."""
    rng = np.random.default_rng(config.seed)
    x = rng.normal(size=(config.rows, 3)).astype(np.float32)
    y = x @ TRUE_WEIGHTS + 0.1 * rng.normal(size=config.rows).astype(np.float32)
    return np.column_stack([x, y]).astype(np.float32)


@asset(key_prefix=PREFIX, io_manager_key="tracelet", metadata={"tracelet/type": "dataset"})
def features(raw_data: np.ndarray) -> np.ndarray:
    """Standardized features (the target column is kept as it is)."""
    x = raw_data[:, :3]
    return np.column_stack([(x - x.mean(axis=0)) / x.std(axis=0), raw_data[:, 3]]).astype(np.float32)


def _tensors(table: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(table[:, :3])), torch.from_numpy(np.ascontiguousarray(table[:, 3]))


@asset(key_prefix=PREFIX, io_manager_key="tracelet")
def model(features: np.ndarray) -> torch.nn.Module:
    """A linear regressor (stored as its ``state_dict``, loaded back with ``weights_only``)."""
    x, y = _tensors(features)
    torch.manual_seed(0)
    regressor = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(regressor.parameters(), lr=0.1)
    for _ in range(200):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(regressor(x).squeeze(1), y).backward()
        optimizer.step()
    return regressor


@asset(key_prefix=PREFIX, io_manager_key="tracelet", metadata={"tracelet/type": "report"})
def evaluation(model: LoggedArtifact, features: np.ndarray) -> dict[str, Any]:
    """Mean squared error of the model version it received (named in the report)."""
    regressor = torch.nn.Linear(3, 1)
    regressor.load_state_dict(model.load())
    x, y = _tensors(features)
    with torch.no_grad():
        mse = float(torch.nn.functional.mse_loss(regressor(x).squeeze(1), y))
    return {"model": model.ref, "mse": round(mse, 6)}


@asset(key_prefix=PREFIX, io_manager_key="tracelet", metadata={"tracelet/type": "report"})
def promotion(context: AssetExecutionContext, evaluation: dict[str, Any],
              tracelet_store: TraceletResource) -> Output[dict[str, Any]]:
    """Point ``demo/model:production`` at the evaluated model if it beats the current one."""
    store = tracelet_store.store
    candidate, candidate_mse = evaluation["model"], evaluation["mse"]
    try:
        production: str | None = store.get("demo/model:production").ref
    except ArtifactNotFoundError:
        production = None
    production_mse = _mse_of(store, production) if production else None
    promoted = production is None or (production != candidate and (
        production_mse is None or candidate_mse < production_mse))
    if promoted:
        store.set_alias(candidate, "production")
        production, production_mse = candidate, candidate_mse
    context.log.info(f"{'promoted' if promoted else 'kept'} {production} in production")
    # Whether this run promoted is run metadata, not content: an unchanged rerun keeps the version.
    return Output({"production": production, "production_mse": production_mse, "candidate": candidate,
                   "candidate_mse": candidate_mse}, metadata={"promoted": promoted})


def _mse_of(store: ArtifactStore, model_ref: str) -> float | None:
    """The error recorded for ``model_ref`` by the newest evaluation of it."""
    for version in reversed(store.versions("demo/evaluation")):
        report = version.load()
        if report["model"] == model_ref:
            return float(report["mse"])
    return None


ASSETS = [raw_data, features, model, evaluation, promotion]
NAMES = ["/".join(a.key.path) for a in ASSETS]  # the artifact names: asset key paths


def run(store: ArtifactStore, seed: int = 7) -> dict[str, Any]:
    """Materialize every asset once on ``store``; the promotion state it ended with."""
    resources = {"tracelet": TraceletIOManager(store_uri=store.uri),
                 "tracelet_store": TraceletResource(store_uri=store.uri)}
    result = materialize(ASSETS, resources=resources, run_config={
        "ops": {"demo__raw_data": {"config": {"seed": seed}}},
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    })
    state: dict[str, Any] = store.get("demo/promotion:latest").load()
    state["run_id"] = result.run_id
    return state


def print_versions(store: ArtifactStore, run_id: str) -> None:
    """Every version of the demo's names, marking those this run created."""
    print("versions:")
    created = 0
    for name in NAMES:
        for version in store.versions(name):
            made_now = version.producer is not None and version.producer.run_id == run_id
            created += made_now
            aliases = f"[{', '.join(version.aliases)}]" if version.aliases else ""
            print(f"  {version.ref:<22} {version.type.value:<8} {version.size_bytes:>6} B  "
                  f"{'new ' if made_now else '    '} {aliases}".rstrip())
    print(f"this run created {created} new version(s)" if created else
          "this run created no new versions: the content is unchanged, so every step returned its existing version")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--store", help="store folder or fsspec URL (default: TRACELET_STORE_URI)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic raw data")
    args = parser.parse_args()
    with ArtifactStore.open(args.store) as store:
        print(f"store: {store.uri}")
        state = run(store, args.seed)
        print(f"dagster run {state['run_id'][:8]}: materialized {', '.join(NAMES)}")
        print_versions(store, state["run_id"])
        print(f"production: {state['production']} (mse {state['production_mse']}); "
              f"candidate {state['candidate']} (mse {state['candidate_mse']})")


if __name__ == "__main__":
    main()
