"""Contenders shared by the bench modules: a tracelet store in a durability mode, an MLflow
run, a W&B offline run, ``cp``. Each is set up untimed; its methods are what gets timed."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ._runner import Skip, installed, scratch

DURABILITY_MODES = ("none", "full")


def open_tracelet(root: Path, durability: str) -> Any:
    """A fresh local store with ``TRACELET_DURABILITY=durability`` (older tracelet versions
    ignore the setting: both modes are then the same code)."""
    from tracelet_core import ArtifactStore, TraceletSettings

    return ArtifactStore.open(root, settings=TraceletSettings.load(durability=durability))


def tracelet_label(durability: str) -> str:
    return f"tracelet ({durability})"


def cp(src: Path, dest: Path, recursive: bool = False) -> None:
    subprocess.run(["cp", "-r", str(src), str(dest)] if recursive else ["cp", str(src), str(dest)],
                   check=True)


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class MlflowRun:
    """One MLflow run (SQLite tracking store unless ``tracking_uri`` names another, local
    ``file://`` artifact root); created untimed."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        if not installed("mlflow"):
            raise Skip("mlflow is not installed")
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.root = scratch("mlflow")
        self.uri = tracking_uri or f"sqlite:///{self.root / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=self.uri)
        self.artifacts = self.root / "mlartifacts"
        experiment = self.client.create_experiment("bench", artifact_location=self.artifacts.as_uri())
        self.run_id = self.client.create_run(experiment).info.run_id

    def artifact_dir(self, artifact_path: str) -> Path:
        return self.artifacts / self.run_id / "artifacts" / artifact_path

    def log_file(self, path: Path, artifact_path: str) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dir(self, path: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(path), artifact_path)

    def log_dict(self, value: dict[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self.run_id, value, artifact_file)

    def download(self, artifact_path: str, dest: Path) -> None:
        import mlflow.artifacts

        dest.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(run_id=self.run_id, artifact_path=artifact_path,
                                            dst_path=str(dest), tracking_uri=self.uri)

    def forget(self, artifact_path: str) -> None:
        """Delete what was logged under ``artifact_path`` (untimed cleanup between runs)."""
        remove(self.artifact_dir(artifact_path))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)
        shutil.rmtree(self.root, ignore_errors=True)


class WandbRun:
    """A W&B run in offline mode: ``add_file`` hashes (MD5) and stages a copy, ``log_artifact``
    queues the record for the background service; nothing is uploaded (a lower bound)."""

    def __init__(self) -> None:
        if not installed("wandb"):
            raise Skip("wandb is not installed")
        self.root = scratch("wandb")
        for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
            path = self.root / var.lower()
            path.mkdir()
            os.environ[var] = str(path)
        import wandb

        self.run = wandb.init(project="tracelet-bench", dir=os.environ["WANDB_DIR"])

    def log_file(self, path: Path, name: str) -> None:
        import wandb

        artifact = wandb.Artifact(name, type="dataset")
        artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def close(self) -> None:
        self.run.finish()
        shutil.rmtree(self.root, ignore_errors=True)
