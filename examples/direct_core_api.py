"""The core API alone, no orchestrator: a small training pipeline logged to the default local store.

raw data -> features -> model -> evaluation report, each step an ``Experiment`` run that reads
its inputs with ``get_artifact`` (so lineage is recorded) and logs its output. The model is
promoted to ``production`` only when it beats the current production model. Running it again
with the same data creates no new versions (content-addressed dedup).

    python examples/direct_core_api.py                  # store at TRACELET_STORE_URI or ~/.tracelet/store
    python examples/direct_core_api.py --store ./demo   # any folder or fsspec URL
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from tracelet_core import ArtifactNotFoundError, ArtifactStore, ArtifactType, Experiment


def make_raw_data(exp: Experiment, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(256, 3)).astype(np.float32)
    y = (x @ np.array([1.5, -2.0, 0.5], dtype=np.float32) + 0.1 * rng.normal(size=256)).astype(np.float32)
    raw = exp.create_artifact("demo/raw", ArtifactType.DATASET, "synthetic regression data")
    raw.add_object(x, "x", "numpy").add_object(y, "y", "numpy")
    raw.metadata.update({"rows": 256, "seed": seed})
    exp.log_artifact(raw)


def build_features(exp: Experiment) -> None:
    raw = exp.get_artifact("demo/raw")
    x = raw.load("x")
    mean, std = x.mean(axis=0), x.std(axis=0)
    features = exp.create_artifact("demo/features", ArtifactType.DATASET, "standardised features")
    features.add_object((x - mean) / std, "x", "numpy").add_object(raw.load("y"), "y", "numpy")
    features.add_object({"mean": mean.tolist(), "std": std.tolist()}, "scaler", "json")
    exp.log_artifact(features)


def train_model(exp: Experiment) -> None:
    features = exp.get_artifact("demo/features")
    x, y = torch.from_numpy(features.load("x")), torch.from_numpy(features.load("y"))
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(200):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x).squeeze(1), y)
        loss.backward()
        optimizer.step()
    artifact = exp.create_artifact("demo/model", ArtifactType.MODEL, "linear regressor")
    artifact.add_model(model, input_example=x[:2])
    artifact.metadata["train_mse"] = round(loss.item(), 6)
    exp.log_artifact(artifact)


def evaluate_and_promote(exp: Experiment, store: ArtifactStore) -> str:
    candidate = exp.get_artifact("demo/model")
    features = exp.get_artifact("demo/features")
    model = torch.nn.Linear(3, 1)
    model.load_state_dict(candidate.load())
    with torch.no_grad():
        mse = float(torch.nn.functional.mse_loss(
            model(torch.from_numpy(features.load("x"))).squeeze(1), torch.from_numpy(features.load("y"))))
    report = exp.create_artifact("demo/evaluation", ArtifactType.REPORT, "held-in evaluation")
    report.add_object({"model": candidate.ref, "mse": round(mse, 6)}, "metrics", "json")
    exp.log_artifact(report)
    try:
        production = store.get("demo/model:production")
        best = production.metadata.get("train_mse", float("inf"))
    except ArtifactNotFoundError:
        production, best = None, float("inf")
    if production is None or candidate.metadata["train_mse"] < best:
        store.set_alias(candidate.ref, "production")
        return f"promoted {candidate.ref} to production (mse {mse:.4f})"
    return f"kept {production.ref} in production (candidate mse {mse:.4f} is not better)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="store folder or fsspec URL (default: TRACELET_STORE_URI)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic raw data")
    args = parser.parse_args()
    store = ArtifactStore.open(args.store)
    print(f"store: {store.uri}")
    for step in (make_raw_data, build_features, train_model):
        with Experiment(step.__name__, store=store) as exp:
            step(exp, args.seed) if step is make_raw_data else step(exp)
    with Experiment("evaluate_and_promote", store=store) as exp:
        print(evaluate_and_promote(exp, store))

    print("\nversions:")
    for latest in store.list(name="demo"):
        for version in store.versions(latest.name):
            aliases = f" [{', '.join(version.aliases)}]" if version.aliases else ""
            print(f"  {version.ref:<26} {version.type.value:<8} {version.size_bytes:>7} B  "
                  f"{version.digest[:19]}{aliases}")
    lineage = store.lineage("demo/evaluation:latest")
    print("\nlineage of demo/evaluation:latest (mermaid):")
    print(lineage.to_mermaid())
    print("inputs:", json.dumps({ref: store.get(ref).inputs for ref in lineage.artifact_refs}, indent=2))
    store.verify()
    print("verify: every blob and manifest matches its digest")


if __name__ == "__main__":
    main()
