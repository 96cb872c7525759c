"""The Aim backend: the shared suite on a local repo; the params, artifacts URI and files an
Aim user sees; a read back from a fresh process through ``Repo.get_run``; Aim's safe mode."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from backend_support import log_in_run
from suite import BackendSuite, TrackerView
from typer.testing import CliRunner

from tracelet_core import (
    ArtifactResult,
    ArtifactStore,
    Backend,
    BackendError,
    Experiment,
    LoggedArtifact,
    TraceletArtifact,
)
from tracelet_core.cli import app

with warnings.catch_warnings():
    # Aim's structured-DB models call SQLAlchemy 1.x's declarative_base() when imported.
    warnings.filterwarnings("ignore", message=r"The ``declarative_base\(\)`` function", category=DeprecationWarning)
    from aim import Repo, Run
    from aim.ext.exception_resistant import _SafeModeConfig
    from aim.sdk.index_manager import RepoIndexManager
    from aim.storage.artifacts.filesystem_storage import FilesystemArtifactStorage

    from tracelet_core.backends.aim import AimBackend, _run_hashes


@pytest.fixture(scope="session")
def empty_aim_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly initialized ``.aim`` (Aim migrates a new repo's database in a subprocess,
    about 2 s), copied into each test that needs one."""
    root = tmp_path_factory.mktemp("aim-template")
    Repo(str(root), init=True).close()
    return root / ".aim"


@pytest.fixture
def aim_root(tmp_path: Path, empty_aim_repo: Path) -> Path:
    """``tmp_path/aim`` holding an empty Aim repo."""
    shutil.copytree(empty_aim_repo, tmp_path / "aim" / ".aim")
    return tmp_path / "aim"


def read_runs(repo_path: str) -> dict[str, Any]:
    """Every run of the repo through Aim's public ``Repo`` API (indexed first, like
    ``aim storage reindex``, so runs still open elsewhere are seen too)."""
    repo = Repo(repo_path)
    try:
        for run_hash in _run_hashes(repo):  # Repo.list_all_runs with Aim's 0.5 s cache cleared
            RepoIndexManager(repo).index(run_hash)
        return {run.hash: run for run in repo.iter_runs()}
    finally:
        repo.close()


def run_attrs(backend: Backend, run_hash: str) -> dict[str, Any]:
    """A run's params as of now, from its own chunk (the repo index can lag behind a run
    reopened to move an alias)."""
    assert isinstance(backend, AimBackend)
    repo = Repo(backend.repo)
    try:
        chunk = repo.request_tree("meta", run_hash, read_only=True, skip_read_optimization=True)
        return dict(chunk.subtree(("meta", "chunks", run_hash, "attrs")).collect())
    finally:
        repo.close()


class TestAimBackend(BackendSuite):
    """The shared suite against a local Aim repo with a file:// artifacts URI."""

    @pytest.fixture
    def make_backend(self, tmp_path: Path, aim_root: Path) -> Callable[[], AimBackend]:
        self.scratch = tmp_path / "read-back"
        repo, artifacts = str(aim_root), (tmp_path / "aim-artifacts").as_uri()
        return lambda: AimBackend(repo=repo, artifacts_uri=artifacts)

    def read_back(self, backend: Backend, artifact: LoggedArtifact, result: ArtifactResult) -> TrackerView:
        assert isinstance(backend, AimBackend)
        holding = [run for run in read_runs(backend.repo).values() if artifact.ref in (run.get("tracelet") or {})]
        assert holding, f"no Aim run records {artifact.ref}"
        run = holding[0]
        record = run["tracelet", artifact.ref]
        files: dict[str, bytes] = {}
        prefix = f"{artifact.name}/{artifact.version}/files/"
        for name, stored in run.artifacts.items():
            if name.startswith(prefix):
                relative = name[len(prefix):]
                folder = self.scratch / run.hash / Path(relative).parent  # download() drops the folders
                files[relative] = Path(stored.download(str(folder))).read_bytes()
        tags = {"tracelet.ref": record["ref"], "tracelet.digest": record["digest"],
                "tracelet.inputs": ",".join(record["inputs"]), "tracelet.type": record["type"]}
        return TrackerView(files=files, tags=tags, references=dict(record["references"]), copies=len(holding))

    def break_tracker(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def refuse(storage: Any, file_path: str, artifact_path: str, block: bool = False) -> None:
            raise OSError("injected fault: the artifact storage refused the upload")

        monkeypatch.setattr(FilesystemArtifactStorage, "upload_artifact", refuse)

    def _run_holding(self, backend: Backend, artifact: LoggedArtifact) -> Any:
        assert isinstance(backend, AimBackend)
        [found] = [run for run in read_runs(backend.repo).values() if artifact.ref in (run.get("tracelet") or {})]
        return Run(found.hash, repo=backend.repo, read_only=True)  # from its own chunk, as of now

    def aliases_held(self, backend: Backend, artifact: LoggedArtifact) -> set[str]:
        run = self._run_holding(backend, artifact)
        versions = run_attrs(backend, run.hash)["tracelet"]
        prefix = f"{artifact.name}:"
        tagged = {t[len(prefix):] for t in run.tags if t.startswith(prefix)}
        # the run's tags: every alias its versions of the name hold
        assert tagged == {a for r in versions.values() if r["name"] == artifact.name for a in r["aliases"]}
        return set(versions[artifact.ref]["aliases"])

    def params_held(self, backend: Backend, artifact: LoggedArtifact, result: ArtifactResult) -> dict[str, str]:
        run = self._run_holding(backend, artifact)
        return {k: str(v) for k, v in (run_attrs(backend, run.hash).get("hparams") or {}).items()}

    def status_held(self, backend: Backend, artifact: LoggedArtifact) -> str | None:
        run = self._run_holding(backend, artifact)
        record = run_attrs(backend, run.hash)["tracelet"][artifact.ref]
        tags = [t for t in run.tags if t.startswith("tracelet.status=") and t.endswith(f":{artifact.ref}")]
        assert tags == ([f"tracelet.status={record['status']}:{artifact.ref}"] if "status" in record else [])
        return record.get("status")

    def media_held(self, backend: Backend, artifact: LoggedArtifact, result: ArtifactResult) -> list[str]:
        assert isinstance(backend, AimBackend)
        repo = Repo(backend.repo)
        try:
            RepoIndexManager(repo).index(self._run_holding(backend, artifact).hash)
            return [f"{i.name}{i.context.to_dict()}:{i.values.sparse_numpy()[0][0].size}"
                    for i in repo.query_images(f"images.name == '{artifact.name}'").iter()]
        finally:
            repo.close()

    def test_aliases_given_to_log_leave_the_previous_version(self, make_backend: Any, store: ArtifactStore,
                                                             version: LoggedArtifact) -> None:
        self.check_aliases_given_to_log_leave_the_previous_version(make_backend, store, version)

    # -- Aim specifics ----------------------------------------------------------------------
    def test_params_and_artifacts_uri_of_the_experiment_run(
            self, store: ArtifactStore, version: LoggedArtifact, tmp_path: Path, empty_aim_repo: Path,
            monkeypatch: pytest.MonkeyPatch) -> None:
        shutil.copytree(empty_aim_repo, tmp_path / ".aim")
        monkeypatch.chdir(tmp_path)  # by name, the backend uses the repo in the working directory
        with Experiment("aim-exp", backend=["aim"], store=store) as exp:
            result = exp.log_artifact(version.new_draft())["aim"]
            assert result.ok, result.error
            backend = exp.backends["aim"]
        assert isinstance(backend, AimBackend) and backend.repo == str(tmp_path)
        [run] = read_runs(str(tmp_path)).values()
        assert (run.hash, run.experiment, run.name) == (result.version, "aim-exp", "aim-exp")
        assert run["tracelet_run"] == {"run_id": exp.run.run_id, "name": "aim-exp"}
        record = run["tracelet", "suite/model:v1"]
        assert (record["digest"], record["inputs"], record["aliases"]) == (version.digest, ["suite/raw:v1"],
                                                                          ["candidate"])
        assert record["references"] == {"raw-data": "s3://bucket/raw/data.tar"}
        artifacts_root = (tmp_path / "aim-artifacts").as_uri()
        assert run.artifacts_uri == f"{artifacts_root}/{run.hash}"
        assert result.uri == record["uri"] == f"{artifacts_root}/{run.hash}/suite/model/v1"
        on_disk = tmp_path / "aim-artifacts" / run.hash / "suite/model/v1"
        assert (on_disk / "files/weights/model.bin").read_bytes() == version.path("weights/model.bin").read_bytes()
        assert json.loads((on_disk / "tracelet-manifest.json").read_text())["digest"] == version.digest

    def test_a_versions_images_are_one_list_and_its_files_point_at_the_store(
            self, make_backend: Callable[[], AimBackend], store: ArtifactStore, tmp_path: Path) -> None:
        from PIL import Image

        draft = TraceletArtifact("demo/samples", "image")
        for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
            Image.new("RGB", (8, 6), colour).save(tmp_path / f"s{i}.png")
            draft.add_file(tmp_path / f"s{i}.png", f"grid/s{i}.png")
        images = store.log(draft)
        backend = make_backend()
        result = log_in_run(backend, images)
        assert result.ok, result.error
        repo = Repo(backend.repo)
        try:
            RepoIndexManager(repo).index(result.version)
            [sequence] = repo.query_images("images.name == 'demo/samples'").iter()  # one list, not one per file
            steps, values = sequence.values.sparse_numpy()
            assert list(steps) == [1] and sequence.context.to_dict() == {"kind": "image"}
            assert sorted(image.caption for image in values[0]) == ["grid/s0.png", "grid/s1.png", "grid/s2.png"]
            run = repo.get_run(result.version)
            paths = {name: stored.path for name, stored in run.artifacts.items()}
        finally:
            repo.close()
        entries = {entry.path: entry.digest or "" for entry in images.files}
        assert paths == {**{f"demo/samples/v1/files/{p}": store.blobs.blob_uri(d) for p, d in entries.items()},
                         "demo/samples/v1/tracelet-manifest.json": "tracelet://demo/samples:v1"}

    def test_each_experiment_keeps_one_aim_run_for_what_it_logs_inside_and_after(
            self, make_backend: Callable[[], AimBackend], store: ArtifactStore) -> None:
        backend = make_backend()
        experiments = []
        for i in range(2):  # in quick succession: Aim's cached run listing must not hide a run
            exp = Experiment(f"e{i}", backend=[backend], store=store)
            with exp:
                assert exp.log_artifact(exp.create_artifact("inside", "config").add_object({"i": i}, "c"))["aim"].ok
            assert exp.log_artifact(exp.create_artifact("after", "config").add_object({"i": i}, "c"))["aim"].ok
            experiments.append(exp)
        runs = {run["tracelet_run"]["run_id"]: sorted(run["tracelet"]) for run in read_runs(backend.repo).values()}
        assert runs == {exp.run.run_id: [f"after:v{i + 1}", f"inside:v{i + 1}"] for i, exp in enumerate(experiments)}

    def test_a_fresh_process_reads_the_run_with_repo_get_run(
            self, make_backend: Callable[[], AimBackend], version: LoggedArtifact, tmp_path: Path) -> None:
        backend = make_backend()
        result = log_in_run(backend, version, "fresh", "run-7")  # its stop() closes the run and indexes it
        reader = textwrap.dedent(f"""
            import json, sys, warnings
            warnings.simplefilter("ignore", DeprecationWarning)
            from aim import Repo, Run
            run = Repo({backend.repo!r}).get_run({result.version!r})
            record = run["tracelet", "suite/model:v1"]
            name = "suite/model/v1/files/weights/model.bin"
            path = run.artifacts[name].download({str(tmp_path / "fresh")!r})
            json.dump({{"digest": record["digest"], "inputs": record["inputs"], "file": path,
                       "run_id": run["tracelet_run"]["run_id"]}}, sys.stdout)
        """)
        proc = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, check=False,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        seen = json.loads(proc.stdout)
        assert (seen["digest"], seen["inputs"], seen["run_id"]) == (version.digest, ["suite/raw:v1"], "run-7")
        assert Path(seen["file"]).read_bytes() == version.path("weights/model.bin").read_bytes()

    def test_uploads_swallowed_by_aims_safe_mode_still_fail_the_delivery(
            self, make_backend: Callable[[], AimBackend], version: LoggedArtifact,
            monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(_SafeModeConfig, "exception_callback", _SafeModeConfig.log_exception)
        self.break_tracker(monkeypatch)
        with pytest.raises(BackendError, match="did not keep suite/model/v1/files/"):
            make_backend().log(version)
        assert not any("suite/model:v1" in (run.get("tracelet") or {})
                       for run in read_runs(make_backend().repo).values())

    def test_sdk_errors_become_backend_errors_with_the_cause_chained(
            self, make_backend: Callable[[], AimBackend], version: LoggedArtifact,
            monkeypatch: pytest.MonkeyPatch) -> None:
        self.break_tracker(monkeypatch)
        with pytest.raises(BackendError, match="uploading suite/model:v1") as caught:
            make_backend().log(version)
        assert isinstance(caught.value.__cause__, OSError)
        with pytest.raises(BackendError, match="holds no copy of suite/model:v1"):
            make_backend().fetch("suite/model", "v1", Path("unused"))

    def test_a_writer_killed_mid_upload_is_delivered_once_by_tracelet_sync(
            self, make_backend: Callable[[], AimBackend], store_dir: Path, tmp_path: Path) -> None:
        backend = make_backend()
        child = textwrap.dedent(f"""
            import os, signal, warnings
            warnings.simplefilter("ignore", DeprecationWarning)
            from aim.storage.artifacts.filesystem_storage import FilesystemArtifactStorage
            from tracelet_core import ArtifactStore, Experiment
            from tracelet_core.backends.aim import AimBackend, _run_hashes

            upload = FilesystemArtifactStorage.upload_artifact
            def upload_then_die(self, *args, **kwargs):  # fault injection: killed after one file
                upload(self, *args, **kwargs)
                os.kill(os.getpid(), signal.SIGKILL)
            FilesystemArtifactStorage.upload_artifact = upload_then_die

            store = ArtifactStore.open({str(store_dir)!r})
            exp = Experiment("doomed", backend=[AimBackend(**{backend.config()!r})], store=store)
            exp.log_artifact(exp.create_artifact("clf", "model").add_object({{"w": 1}}, "w"))
        """)
        proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=False,
                              cwd=tmp_path, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        [half] = read_runs(backend.repo).values()
        assert half.get("tracelet") is None  # one file uploaded, the version not recorded

        synced = CliRunner().invoke(app, ["--store", str(store_dir), "sync", "--json"])
        assert synced.exit_code == 0, synced.output
        assert json.loads(synced.stdout)["delivered"] == 1  # the dead writer's run lock is stale
        [run] = read_runs(backend.repo).values()
        assert run.hash == half.hash and run["tracelet", "clf:v1", "files"] == ["w.json"]
        assert "retried 0 deliveries" in CliRunner().invoke(app, ["--store", str(store_dir), "sync"]).stdout
