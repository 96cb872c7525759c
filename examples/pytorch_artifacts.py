"""Automagic capture for plain PyTorch: ``torch.save`` calls and a watched folder are logged
without a single ``log_artifact`` call; the dataset is referenced, not copied, and tagged.

A small regression model trains for a few epochs on CPU (about a second). Each epoch's
``torch.save`` of a training checkpoint becomes the next version of
``pytorch_example_checkpoint``; the final ``state_dict`` becomes ``pytorch_example_model``
(type ``weights``); ``metrics.json`` written into the watched ``outputs/`` folder becomes
``pytorch_example/metrics``. Working files go to a temporary folder.

    python examples/pytorch_artifacts.py   # store at TRACELET_STORE_URI or ~/.tracelet/store
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from tracelet_core import ArtifactType, Experiment, ExperimentConfig


def write_dataset(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A small synthetic dataset, as files in a folder (what a data lake would hold)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 3)).astype(np.float32)
    y = (x @ np.array([1.5, -2.0, 0.5], dtype=np.float32))[:, None]
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    return torch.from_numpy(x), torch.from_numpy(y)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="tracelet-pytorch-example-"))
    outputs = work / "outputs" / "pytorch_example"
    outputs.mkdir(parents=True)
    x, y = write_dataset(work / "data")
    config = ExperimentConfig(automagic_artifacts=True, watch_filesystem=True,
                              artifact_watch_dirs=[str(work / "outputs")])
    with Experiment("pytorch_example", config=config) as exp:
        # the dataset: every file under the folder, referenced (size, checksum), and tagged
        data = exp.create_artifact("pytorch_example/data", ArtifactType.DATASET, "synthetic regression data")
        data.add_reference(str(work / "data"))
        data.tags = ["synthetic", "example"]
        exp.log_artifact(data)
        exp.get_artifact("pytorch_example/data")  # an input of everything logged from now on

        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for epoch in range(3):
            for start in range(0, len(x), 32):
                optimizer.zero_grad()
                loss = torch.nn.functional.mse_loss(model(x[start:start + 32]), y[start:start + 32])
                loss.backward()
                optimizer.step()
            torch.save({"epoch": epoch, "model_state_dict": model.state_dict(),
                        "optimizer_state_dict": optimizer.state_dict(), "loss": loss.item()},
                       work / "pytorch_example_checkpoint.pth")  # captured: a checkpoint version
        torch.save(model.state_dict(), work / "pytorch_example_model.pth")  # captured: weights
        (outputs / "metrics.json").write_text(json.dumps({"final_loss": loss.item()}))
        # stop() (leaving the block) runs the watcher's final scan: metrics.json is logged
    stats = exp.artifact_stats()

    store = exp.store
    print(f"store: {store.uri}")
    for name in ("pytorch_example/data", "pytorch_example_checkpoint", "pytorch_example_model",
                 "pytorch_example/metrics"):
        for version in store.versions(name):
            tags = f" tags={version.tags}" if version.tags else ""
            print(f"logged {version.ref} ({version.type.value}){tags} inputs={version.inputs}")
    data_version = store.get("pytorch_example/data")
    print(f"referenced {[(r.name, r.size) for r in data_version.references]}")
    folder = store.get("pytorch_example_model").download(work / "download")
    restored = torch.load(folder / "pytorch_example_model.pth", weights_only=True)
    same = all(torch.equal(restored[k], v) for k, v in model.state_dict().items())
    print(f"model weights restored from the store: {'identical' if same else 'DIFFERENT'}")
    print(f"stats: logged={stats['logged']} captured={stats['captured']} failed={stats['failed']}")


if __name__ == "__main__":
    main()
