"""Automagic capture for PyTorch Lightning, as the Tracelet guide describes it.

A tiny regression ``LightningModule`` trains for 3 epochs on CPU (a few seconds) inside an
experiment with ``automagic_artifacts=True``. Without any tracelet call in the training
code, the store then holds:

- ``lightning_example/checkpoint``: one version per checkpoint ``ModelCheckpoint`` wrote,
  with aliases ``best`` and ``last`` where the callback has them, and ``epoch``,
  ``global_step``, ``monitor`` and ``score`` in each version's metadata;
- ``lightning_example/validation_samples``: the first validation batch's predictions, per epoch;
- ``lightning_example/hparams``: what ``save_hyperparameters()`` saved;
- ``lightning_example/model``: the trained ``state_dict``, whose input is the best checkpoint.

Works with ``lightning`` (``lightning.pytorch``) or ``pytorch_lightning``, whichever is
installed. Working files go to a temporary folder.

    python examples/lightning_artifacts.py   # store at TRACELET_STORE_URI or ~/.tracelet/store
"""

from __future__ import annotations

import importlib
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from tracelet_core import Experiment


def lightning() -> Any:
    """``lightning.pytorch`` if installed, else ``pytorch_lightning``."""
    try:
        return importlib.import_module("lightning.pytorch")
    except ImportError:
        return importlib.import_module("pytorch_lightning")


pl = lightning()


class Regressor(pl.LightningModule):  # type: ignore[misc, name-defined]
    def __init__(self, lr: float = 0.05, hidden: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        prediction = self.net(x)
        self.log("val_loss", torch.nn.functional.mse_loss(prediction, y))
        return {"prediction": prediction, "target": y}  # the first batch becomes samples

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def loaders() -> tuple[DataLoader[Any], DataLoader[Any]]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=generator)
    y = x @ torch.tensor([[1.5], [-2.0], [0.5]])
    train, val = TensorDataset(x[:192], y[:192]), TensorDataset(x[192:], y[192:])
    return DataLoader(train, batch_size=32), DataLoader(val, batch_size=32)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="tracelet-lightning-example-"))
    warnings.filterwarnings("ignore", ".*does not have many workers.*")  # tiny data on purpose
    torch.manual_seed(0)
    with Experiment("lightning_example", automagic_artifacts=True) as exp:
        # normal Lightning code: tracelet's callback is attached to the Trainer automatically
        trainer = pl.Trainer(
            max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=work,
            callbacks=[pl.callbacks.ModelCheckpoint(dirpath=work / "checkpoints", monitor="val_loss",
                                                    save_top_k=1, save_last=True)])
        model = Regressor()
        trainer.fit(model, *loaders())
        stats = exp.artifact_stats()

    store = exp.store
    print(f"store: {store.uri}")
    for version in store.versions("lightning_example/checkpoint"):
        meta = version.metadata
        print(f"logged {version.ref} aliases={version.aliases} epoch={meta['epoch']} "
              f"step={meta['global_step']} {meta['monitor']}={meta['score']:.4f}")
    for name in ("lightning_example/validation_samples", "lightning_example/hparams", "lightning_example/model"):
        for version in store.versions(name):
            print(f"logged {version.ref} ({version.type.value}) inputs={version.inputs}")
    print(f"hyperparameters: {store.get('lightning_example/hparams').load()}")
    restored = Regressor()
    restored.load_state_dict(store.get("lightning_example/model").load())  # weights_only=True
    trained = model.state_dict()
    same = all(torch.equal(value, trained[key]) for key, value in restored.state_dict().items())
    print(f"model restored from the store: {'identical' if same else 'DIFFERENT'}")
    print(f"checkpoint files left by save_top_k: {sorted(p.name for p in (work / 'checkpoints').iterdir())}")
    print(f"stats: logged={stats['logged']} captured={stats['captured']} failed={stats['failed']}")


if __name__ == "__main__":
    main()
