"""Lightning capture: ``TraceletCallback`` in real ``fit`` runs (tiny models, CPU, a few
batches), under both import names, attached by hand or by automagic.

The only stand-in is a ``log_artifact`` that raises, to inject a failing capture.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tracelet_core import ArtifactStore, Experiment
from tracelet_core.lightning import TraceletCallback, experiment_prefix

LIGHTNING_NAMES = ["lightning.pytorch", "pytorch_lightning"]
ORIGINAL_SAVE = torch.save

pytestmark = [
    pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"),
    # Lightning's advice for real runs (more dataloader workers, logging intervals)
    pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning"),
    pytest.mark.filterwarnings("ignore:The number of training batches .* is smaller than the logging interval"),
]


@pytest.fixture(params=LIGHTNING_NAMES)
def pl(request: pytest.FixtureRequest) -> ModuleType:
    """``lightning.pytorch`` or ``pytorch_lightning``: each test runs under both."""
    return importlib.import_module(request.param)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ArtifactStore]:
    with ArtifactStore.open(tmp_path / "store") as opened:
        yield opened


@pytest.fixture(autouse=True)
def nothing_stays_patched() -> Iterator[None]:
    import lightning.pytorch
    import pytorch_lightning

    before = [dict(vars(m.Trainer)) for m in (lightning.pytorch, pytorch_lightning)]
    yield
    assert torch.save is ORIGINAL_SAVE
    assert [dict(vars(m.Trainer)) for m in (lightning.pytorch, pytorch_lightning)] == before


def tiny_module(pl: ModuleType, val_losses: list[float] | None = None) -> Any:
    """A linear regression whose ``val_loss`` per epoch is ``val_losses`` (deterministic
    checkpoints); its ``validation_step`` returns predictions and targets."""

    class Tiny(pl.LightningModule):  # type: ignore[misc, name-defined]
        def __init__(self, lr: float = 0.1, val_losses: list[float] | None = None) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
            x, y = batch
            pred = self.layer(x)
            losses = self.hparams.val_losses
            loss = torch.tensor(losses[self.current_epoch]) if losses else torch.nn.functional.mse_loss(pred, y)
            self.log("val_loss", loss)
            return {"pred": pred, "target": y}

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    return Tiny(val_losses=val_losses)


def loaders() -> tuple[DataLoader[Any], DataLoader[Any]]:
    generator = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(16, 4, generator=generator), torch.randn(16, 1, generator=generator))
    return DataLoader(data, batch_size=4), DataLoader(data, batch_size=8)


def trainer_for(pl: ModuleType, root: Path, callbacks: list[Any], max_epochs: int = 3,
                **options: Any) -> Any:
    settings: dict[str, Any] = {"num_sanity_val_steps": 0, **options}
    return pl.Trainer(max_epochs=max_epochs, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=root, accelerator="cpu",
                      callbacks=callbacks, **settings)


def model_checkpoint(pl: ModuleType, folder: Path, **options: Any) -> Any:
    """The issue's ``ModelCheckpoint(monitor="val_loss", save_top_k=1, save_last=True)``."""
    settings: dict[str, Any] = {"monitor": "val_loss", "save_top_k": 1, "save_last": True, **options}
    return pl.callbacks.ModelCheckpoint(dirpath=folder, **settings)


def alias_recorder(pl: ModuleType, store: ArtifactStore, name: str) -> Any:
    """A callback that runs after ``ModelCheckpoint`` (Lightning orders ``Checkpoint``s last)
    and records, at each epoch's end, the store's aliases and the checkpoint callback's paths."""

    class Recorder(pl.callbacks.Checkpoint):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self.epochs: list[dict[str, Any]] = []

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            checkpoint = trainer.checkpoint_callback
            aliases = {a: v.version for v in store.versions(name) for a in v.aliases}
            self.epochs.append({"aliases": aliases, "best": checkpoint.best_model_path,
                                "last": checkpoint.last_model_path})

    return Recorder()


# -- the full promise -----------------------------------------------------------------------
def test_fit_logs_checkpoints_as_versions_with_best_and_last(
        pl: ModuleType, store: ArtifactStore, tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    recorder = alias_recorder(pl, store, "train/checkpoint")
    with Experiment("train", automagic_artifacts=True, store=store) as exp:
        trainer = trainer_for(pl, tmp_path, [model_checkpoint(pl, folder), recorder])
        module = tiny_module(pl, val_losses=[3.0, 1.0, 2.0])  # better, then worse
        trainer.fit(module, *loaders())
        assert exp.automagic_errors == []

    versions = store.versions("train/checkpoint")
    assert all(v.type.value == "checkpoint" for v in versions)
    described = [(v.version, Path(v.metadata["source_path"]).name, v.metadata["epoch"],
                  v.metadata["global_step"], v.metadata["score"]) for v in versions]
    assert described == [
        ("v1", "epoch=0-step=4.ckpt", 0, 4, 3.0), ("v2", "last.ckpt", 0, 4, 3.0),
        ("v3", "epoch=1-step=8.ckpt", 1, 8, 1.0), ("v4", "last.ckpt", 1, 8, 1.0),
    ]  # epoch 2 is worse: Lightning saves nothing, not even last.ckpt
    assert {v.metadata["monitor"] for v in versions} == {"val_loss"}
    assert versions[-1].metadata["metrics"]["val_loss"] == 1.0
    assert [e["aliases"] for e in recorder.epochs] == [
        {"best": "v1", "last": "v2"}, {"best": "v3", "last": "v4"}, {"best": "v3", "last": "v4"}]
    for epoch in recorder.epochs:  # the aliases are the callback's own best and last
        assert store.get("train/checkpoint", epoch["aliases"]["best"]).metadata["source_path"] == epoch["best"]
        assert store.get("train/checkpoint", epoch["aliases"]["last"]).metadata["source_path"] == epoch["last"]

    # save_top_k removed epoch 0's file; its version stays whole
    assert sorted(p.name for p in folder.iterdir()) == ["epoch=1-step=8.ckpt", "last.ckpt"]
    first = store.get("train/checkpoint:v1")
    first.verify()
    saved = torch.load(first.download(tmp_path / "v1") / "epoch=0-step=4.ckpt", weights_only=False)
    assert saved["epoch"] == 0 and saved["global_step"] == 4
    assert (store.get("train/checkpoint:best").download(tmp_path / "best") / "epoch=1-step=8.ckpt"
            ).read_bytes() == (folder / "epoch=1-step=8.ckpt").read_bytes()


def test_fit_end_logs_the_model_and_hparams(pl: ModuleType, store: ArtifactStore, tmp_path: Path) -> None:
    with Experiment("train", automagic_artifacts=True, store=store) as exp:
        module = tiny_module(pl, val_losses=[3.0, 1.0, 2.0])
        trainer_for(pl, tmp_path, [model_checkpoint(pl, tmp_path / "ckpt")]).fit(module, *loaders())

    model = store.get("train/model")
    assert model.type.value == "model"
    assert model.inputs == ["train/checkpoint:v3"]  # the best checkpoint
    assert model.metadata["checkpoint"] == "train/checkpoint:v3"
    assert model.producer is not None and model.producer.run_id == exp.run.run_id
    loaded = model.load()  # torch.load(weights_only=True) under the hood
    expected = module.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    fresh = tiny_module(pl)
    fresh.load_state_dict(loaded)
    assert torch.equal(fresh.layer.weight, module.layer.weight)

    hparams = store.get("train/hparams")
    assert hparams.type.value == "config"
    assert hparams.load() == {"lr": 0.1, "val_losses": [3.0, 1.0, 2.0]}


def test_first_validation_batch_of_each_epoch_becomes_samples(
        pl: ModuleType, store: ArtifactStore, tmp_path: Path) -> None:
    exp = Experiment("samples", store=store)  # no automagic: the explicit callback does it
    # sanity checking runs validation too, but is no epoch: never sampled
    trainer = trainer_for(pl, tmp_path, [TraceletCallback(exp, sample_rows=2)], num_sanity_val_steps=2)
    module = tiny_module(pl)
    trainer.fit(module, *loaders())
    versions = store.versions("samples/validation_samples")
    assert [(v.type.value, v.metadata["epoch"]) for v in versions] == [("sample", 0), ("sample", 1), ("sample", 2)]
    last = versions[-1].load()
    assert set(last) == {"pred", "target"}
    assert last["pred"].shape == (2, 1) and last["target"].shape == (2, 1)
    _, val_loader = loaders()
    x, y = next(iter(val_loader))
    assert torch.equal(last["target"], y[:2])
    assert torch.allclose(last["pred"], module.layer(x[:2]).detach())


def test_explicit_callback_without_automagic(pl: ModuleType, store: ArtifactStore, tmp_path: Path) -> None:
    exp = Experiment("manual", store=store)
    trainer = trainer_for(pl, tmp_path, [TraceletCallback(exp), model_checkpoint(pl, tmp_path / "c")],
                          max_epochs=1)
    assert torch.save is ORIGINAL_SAVE  # nothing patched process-wide
    trainer.fit(tiny_module(pl), *loaders())
    assert [a.name for a in store.list()] == ["manual/checkpoint", "manual/hparams", "manual/model",
                                              "manual/validation_samples"]
    assert store.get("manual/checkpoint:v2").aliases == ["last"]
    assert store.get("manual/checkpoint:best").version == "v1"
    assert "save_checkpoint" not in vars(trainer)  # the per-trainer wrapper is gone after fit
    assert exp.artifact_stats()["captured"] == {"lightning": 5}


# -- attaching ------------------------------------------------------------------------------
def _tracelet_callbacks(trainer: Any) -> list[Any]:
    return [cb for cb in trainer.callbacks if isinstance(cb, TraceletCallback)]


def test_automagic_attaches_one_callback_and_never_two(pl: ModuleType, store: ArtifactStore,
                                                       tmp_path: Path) -> None:
    before = trainer_for(pl, tmp_path, [])
    with Experiment("auto", automagic_artifacts=True, store=store) as exp:
        inside = trainer_for(pl, tmp_path, [])
        explicit = TraceletCallback(exp)
        with_own = trainer_for(pl, tmp_path, [explicit])
    after = trainer_for(pl, tmp_path, [])
    assert _tracelet_callbacks(before) == [] and _tracelet_callbacks(after) == []
    (attached,) = _tracelet_callbacks(inside)
    assert attached.experiment is exp
    assert _tracelet_callbacks(with_own) == [explicit]


def test_explicit_and_automatic_together_log_each_checkpoint_once(
        pl: ModuleType, store: ArtifactStore, tmp_path: Path) -> None:
    with Experiment("both", automagic_artifacts=True, store=store) as exp:
        trainer = trainer_for(pl, tmp_path, [TraceletCallback(exp), model_checkpoint(pl, tmp_path / "c")],
                              max_epochs=2)
        trainer.fit(tiny_module(pl, val_losses=[2.0, 1.0]), *loaders())
    assert [v.metadata["source_path"].rsplit("/", 1)[1] for v in store.versions("both/checkpoint")] == [
        "epoch=0-step=4.ckpt", "last.ckpt", "epoch=1-step=8.ckpt", "last.ckpt"]
    names = [a.name for a in store.list()]
    assert not [n for n in names if not n.startswith("both/")]  # no per-file duplicates


def test_second_model_checkpoint_is_its_own_artifact(pl: ModuleType, store: ArtifactStore,
                                                     tmp_path: Path) -> None:
    every_epoch = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "all", save_top_k=-1,
                                               filename="{epoch}")
    with Experiment("two", automagic_artifacts=True, store=store):
        trainer = trainer_for(pl, tmp_path, [model_checkpoint(pl, tmp_path / "best"), every_epoch],
                              max_epochs=2)
        trainer.fit(tiny_module(pl, val_losses=[2.0, 3.0]), *loaders())
    second = store.versions("two/checkpoint-2")
    assert [Path(v.metadata["source_path"]).name for v in second] == ["epoch=0.ckpt", "epoch=1.ckpt"]
    assert second[-1].metadata["monitor"] is None
    assert store.get("two/checkpoint-2:last").version == "v2"  # no save_last: the newest
    assert store.get("two/checkpoint:best").metadata["epoch"] == 0


def test_trainer_made_before_start_gets_per_file_capture(pl: ModuleType, store: ArtifactStore,
                                                         tmp_path: Path) -> None:
    trainer = trainer_for(pl, tmp_path, [pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "c")],
                          max_epochs=1)
    with Experiment("early", automagic_artifacts=True, store=store) as exp:
        trainer.fit(tiny_module(pl), *loaders())
        trainer.save_checkpoint(tmp_path / "final model.ckpt", weights_only=True)
        assert exp.automagic_errors == []
    logged = store.get("epoch_0-step_4")  # named after the file, one version each
    assert logged.type.value == "checkpoint" and logged.metadata["captured_by"] == "lightning"
    assert logged.metadata["global_step"] == 4 and "train_loss" in logged.metadata["metrics"]
    assert store.get("final_model").metadata["weights_only"] is True
    assert [a.name for a in store.list()] == ["epoch_0-step_4", "final_model"]


def test_trainer_class_is_patched_only_while_started(pl: ModuleType, store: ArtifactStore) -> None:
    original = dict(vars(pl.Trainer))
    with Experiment("patch", automagic_artifacts=True, store=store):
        assert vars(pl.Trainer)["__init__"] is not original["__init__"]
        assert vars(pl.Trainer)["save_checkpoint"] is not original["save_checkpoint"]
    assert dict(vars(pl.Trainer)) == original


# -- failures and stats ---------------------------------------------------------------------
def test_a_failing_capture_never_breaks_fit(pl: ModuleType, store: ArtifactStore, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    exp = Experiment("broken", store=store)

    def broken_log(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(exp, "log_artifact", broken_log)  # fault injection
    trainer = trainer_for(pl, tmp_path, [TraceletCallback(exp), model_checkpoint(pl, tmp_path / "c")],
                          max_epochs=1)
    trainer.fit(tiny_module(pl), *loaders())
    assert trainer.state.finished
    errors = exp.automagic_errors
    assert len(errors) == 5 and all("disk full" in e for e in errors)  # 2 checkpoints, samples, hparams, model
    assert exp.artifact_stats()["failed"] == 5
    assert store.list() == []


def test_artifact_stats_count_what_was_captured(pl: ModuleType, store: ArtifactStore, tmp_path: Path) -> None:
    with Experiment("stats", automagic_artifacts=True, store=store) as exp:
        torch.save({"w": torch.ones(1)}, tmp_path / "extra.pt")
        trainer_for(pl, tmp_path, [model_checkpoint(pl, tmp_path / "c")], max_epochs=1).fit(
            tiny_module(pl), *loaders())
        stats = exp.artifact_stats()
    assert stats["captured"] == {"torch.save": 1, "lightning": 5}
    assert stats["logged"] == 6 and stats["failed"] == 0 and stats["pending_deliveries"] == 0
    assert stats["automagic"] is True and stats["started"] is True


@pytest.mark.parametrize(("name", "prefix"), [("run", "run"), ("my run", "my_run"),
                                              ("team/exp 1", "team/exp_1"), ("???", "experiment")])
def test_experiment_prefix_is_a_valid_name(name: str, prefix: str) -> None:
    assert experiment_prefix(name) == prefix


def test_a_fit_that_raises_leaves_its_checkpoints_and_no_wrapper(
        pl: ModuleType, store: ArtifactStore, tmp_path: Path) -> None:
    class Failing(type(tiny_module(pl))):  # type: ignore[misc]
        def on_train_epoch_start(self) -> None:
            if self.current_epoch == 1:
                raise RuntimeError("diverged")

    exp = Experiment("failing", store=store)
    trainer = trainer_for(pl, tmp_path, [TraceletCallback(exp), model_checkpoint(pl, tmp_path / "c")])
    with pytest.raises(RuntimeError, match="diverged"):
        trainer.fit(Failing(), *loaders())
    assert "save_checkpoint" not in vars(trainer)
    assert [v.version for v in store.versions("failing/checkpoint")] == ["v1", "v2"]
    assert [a.name for a in store.list()] == ["failing/checkpoint", "failing/validation_samples"]  # no model


def test_save_last_link_points_last_at_the_linked_version(
        pl: ModuleType, store: ArtifactStore, tmp_path: Path) -> None:
    folder = tmp_path / "linked"
    recorder = alias_recorder(pl, store, "link/checkpoint")
    exp = Experiment("link", store=store)
    trainer = trainer_for(pl, tmp_path, [TraceletCallback(exp), model_checkpoint(pl, folder, save_last="link"),
                                         recorder], max_epochs=2)
    trainer.fit(tiny_module(pl, val_losses=[2.0, 1.0]), *loaders())
    assert [Path(v.metadata["source_path"]).name for v in store.versions("link/checkpoint")] == [
        "epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt"]  # last.ckpt is a link: no save of its own
    assert [e["aliases"] for e in recorder.epochs] == [{"best": "v1", "last": "v1"}, {"best": "v2", "last": "v2"}]
    linked = Path(recorder.epochs[-1]["last"]).resolve()
    assert store.get("link/checkpoint:last").metadata["source_path"] == str(linked)


def test_a_pickled_callback_is_inert(pl: ModuleType, store: ArtifactStore, tmp_path: Path) -> None:
    import pickle

    exp = Experiment("spawned", store=store)
    copy = pickle.loads(pickle.dumps(TraceletCallback(exp)))  # what ddp_spawn does to callbacks
    assert copy.experiment is None and copy.prefix == "spawned"
    trainer_for(pl, tmp_path, [copy, model_checkpoint(pl, tmp_path / "c")], max_epochs=1).fit(
        tiny_module(pl), *loaders())
    assert store.list() == []


def test_a_manual_save_during_fit_is_named_after_its_file(pl: ModuleType, store: ArtifactStore,
                                                          tmp_path: Path) -> None:
    target = tmp_path / "manual" / "mid-training.ckpt"

    class SavesItself(type(tiny_module(pl))):  # type: ignore[misc]
        def on_train_epoch_end(self) -> None:
            self.trainer.save_checkpoint(target)

    with Experiment("hand", automagic_artifacts=True, store=store) as exp:
        trainer_for(pl, tmp_path, [model_checkpoint(pl, tmp_path / "c")], max_epochs=1).fit(
            SavesItself(), *loaders())
        assert exp.automagic_errors == []
    (logged,) = store.versions("mid-training")  # once: not also by the Trainer patch
    assert logged.type.value == "checkpoint" and logged.metadata["source_path"] == str(target)
    assert [v.version for v in store.versions("hand/checkpoint")] == ["v1", "v2"]
