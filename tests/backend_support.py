"""A small but real tracker for testing the backend machinery: it keeps each delivered
version in a folder, with the same tags and manifest the real trackers get."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from tracelet_core import ArtifactResult, Backend, LoggedArtifact
from tracelet_core._backends import BackendCopy, plan_upload, tracelet_tags


class FolderBackend(Backend):
    """Copies each version to ``root/<name>/<version>/``; idempotent per ref.

    ``fail`` raises like an unreachable tracker; ``block`` makes ``log`` wait on an event
    (to exercise the delivery time limit); a file ``root/DOWN`` makes alias moves fail (so
    an instance rebuilt from ``config()`` by ``sync`` fails too). All only inject faults.
    Alias moves are kept in ``<name>/<version>/aliases.json`` and logged, in order, to
    ``root/alias-moves.jsonl``.
    """

    name = "folder"

    def __init__(self, root: str, fail: bool = False, block: threading.Event | None = None) -> None:
        self.root = Path(root)
        self.fail = fail
        self.block = block
        self.uploads = 0
        self.started: list[tuple[str, str]] = []

    def config(self) -> dict[str, Any]:
        return {"root": str(self.root)}

    def start(self, experiment_name: str, run_id: str) -> None:
        self.started.append((experiment_name, run_id))

    def log(self, artifact: LoggedArtifact) -> ArtifactResult:
        if self.block is not None:
            self.block.wait(30)
        if self.fail:
            raise ConnectionError("tracker unreachable")
        dest = self.root / artifact.name / artifact.version
        if not (dest / "tags.json").exists():  # idempotent: a retry finds the earlier copy
            with tempfile.TemporaryDirectory() as tmp:
                plan = plan_upload(artifact, Path(tmp))
                staged = dest.with_name(dest.name + ".partial")
                shutil.copytree(plan.root, staged / "files")
                shutil.copy(plan.manifest, staged / "manifest.json")
                (staged / "tags.json").write_text(json.dumps(tracelet_tags(artifact)))
                staged.rename(dest)
            self.uploads += 1
        return ArtifactResult(backend=self.name, ok=True, version=artifact.version, uri=dest.as_uri(),
                              size_bytes=artifact.size_bytes)

    def fetch(self, name: str, version: str, dest: Path) -> BackendCopy:
        source = self.root / name / version
        tags = json.loads((source / "tags.json").read_text())
        manifest = json.loads((source / "manifest.json").read_text())
        shutil.copytree(source / "files", dest / "files")
        return BackendCopy(backend=self.name, ref=tags["tracelet.ref"], digest=tags["tracelet.digest"],
                           local_path=dest / "files", version=version, uri=source.as_uri(),
                           referenced=manifest["referenced"])

    # -- alias moves ------------------------------------------------------------------------
    def set_alias(self, artifact: LoggedArtifact, alias: str) -> None:
        self._move(artifact, alias, "set")

    def remove_alias(self, artifact: LoggedArtifact, alias: str) -> None:
        self._move(artifact, alias, "remove")

    def _move(self, artifact: LoggedArtifact, alias: str, action: str) -> None:
        if (self.root / "DOWN").exists():
            raise ConnectionError("tracker unreachable")
        held_file = self.root / artifact.name / artifact.version / "aliases.json"
        held = set(json.loads(held_file.read_text())) if held_file.is_file() else set()
        held = held | {alias} if action == "set" else held - {alias}
        held_file.write_text(json.dumps(sorted(held)))
        with (self.root / "alias-moves.jsonl").open("a") as log:
            log.write(json.dumps([action, artifact.ref, alias]) + "\n")

    def alias_moves(self) -> list[list[str]]:
        """Every alias move this tracker received, in order."""
        moves = self.root / "alias-moves.jsonl"
        return [json.loads(line) for line in moves.read_text().splitlines()] if moves.is_file() else []


def log_in_run(backend: Backend, version: LoggedArtifact, experiment: str = "suite-experiment",
               run_id: str = "suite-run") -> ArtifactResult:
    """``backend.log(version)`` inside a tracker run opened with ``start`` and closed after."""
    backend.start(experiment, run_id)
    try:
        return backend.log(version)
    finally:
        backend.stop()
