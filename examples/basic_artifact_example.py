"""The Tracelet guide's basic artifact logging, end to end on the default store.

An experiment logs a trained model (its weights file, its config and the model itself through
``add_model``), a report built with the chained builder calls, a custom artifact with its own
metadata and five cross-validation folds; a second experiment reads the model back (recorded
as its input), lists what is there and fetches a version by alias. Everything is seeded, so a
second run finds identical content and creates no new versions.

    python examples/basic_artifact_example.py      # store: TRACELET_STORE_URI or ~/.tracelet/store
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from tracelet_core import ArtifactType, Experiment


def train_classifier() -> torch.nn.Module:
    """A tiny classifier with fixed weights (stands in for a real training loop)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def log_training_outputs(exp: Experiment, workdir: Path) -> None:
    model = train_classifier()
    torch.save(model.state_dict(), workdir / "model.pth")
    (workdir / "config.yaml").write_text("learning_rate: 0.001\nbatch_size: 32\nepochs: 10\n")

    # Create and log a model artifact: files at chosen paths, plus the model object itself.
    model_artifact = exp.create_artifact("trained_classifier", ArtifactType.MODEL,
                                         description="Trained image classifier model")
    model_artifact.add_file(workdir / "model.pth", "model/classifier.pth")
    model_artifact.add_file(workdir / "config.yaml", "model/config.yaml")
    model_artifact.add_model(model, framework="pytorch", input_example=torch.zeros(1, 4))
    results = exp.log_artifact(model_artifact, aliases=["candidate"])
    print(f"Logged to {len(results)} backend(s): {list(results)} -> {results['local'].version}")

    # The builder pattern: chained calls.
    (workdir / "report.html").write_text("<h1>Results</h1><p>accuracy 0.93</p>")
    (workdir / "metrics.json").write_text(json.dumps({"accuracy": 0.93, "f1": 0.91}))
    report = exp.create_artifact("experiment_results", ArtifactType.REPORT,
                                 description="Complete experiment results and analysis")
    report.add_file(workdir / "report.html", "reports/experiment.html") \
        .add_file(workdir / "metrics.json", "data/metrics.json") \
        .add_object({"best_epoch": 7, "accuracy": 0.93}, "summary", "json")
    exp.log_artifact(report)

    # A custom type with custom metadata.
    trace = exp.create_artifact("optimization_trace", ArtifactType.CUSTOM,
                                description="Custom optimization algorithm trace")
    trace.metadata.update({"algorithm": "custom_optimizer", "convergence_criteria": "gradient_norm < 1e-6"})
    trace.add_object({"steps": [1.0, 0.5, 0.25, 0.125]}, "trace", "yaml")
    exp.log_artifact(trace)

    # Batch operations: one artifact per cross-validation fold.
    for fold in range(5):
        torch.manual_seed(fold)
        fold_model = torch.nn.Linear(4, 3)
        torch.save(fold_model.state_dict(), workdir / f"fold_{fold}_model.pth")
        artifact = exp.create_artifact(f"cv_fold_{fold}", ArtifactType.MODEL)
        exp.log_artifact(artifact.add_file(workdir / f"fold_{fold}_model.pth"))


def read_back(exp: Experiment) -> None:
    model = exp.get_artifact("trained_classifier")               # latest; recorded as an input
    candidate = exp.get_artifact("trained_classifier", version="candidate")
    assert model == candidate
    weights = model.load()                                      # the state_dict, loaded with weights_only
    print(f"read {model.ref}: files {[f.path for f in model.files]}, {len(weights)} tensors")
    print("models:", [a.ref for a in exp.list_artifacts(type_filter=ArtifactType.MODEL)])
    print("all:   ", [a.ref for a in exp.list_artifacts()])
    evaluation = exp.create_artifact("classifier_evaluation", ArtifactType.REPORT)
    logged = exp.log_artifact(evaluation.add_object({"model": model.ref, "accuracy": 0.93}, "metrics"))
    print(f"{logged['local'].version} of classifier_evaluation, made from {exp.inputs}")


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch, Experiment("my_experiment", artifacts=True) as exp:
        print(f"store: {exp.store.uri}")
        log_training_outputs(exp, Path(scratch))
    with Experiment("evaluate") as exp:
        read_back(exp)


if __name__ == "__main__":
    main()
