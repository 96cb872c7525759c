"""The ClearML backend in offline mode, read back with ClearML's own client.

Offline, ClearML keeps each task as a session folder (``task.json`` plus the uploaded
artifacts) under its cache dir; ``Task.get_task(task_id="offline-...")`` opens it again, in
this process or a fresh one, and ``Artifact.get_local_copy()`` extracts the version's archive.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import FolderBackend
from clearml import Task
from clearml.config import get_offline_dir
from suite import BackendSuite, TrackerView

from tracelet_core import (
    ArtifactResult,
    ArtifactStore,
    Backend,
    BackendError,
    Experiment,
    LoggedArtifact,
    TraceletArtifact,
)
from tracelet_core._backends import MANIFEST_NAME
from tracelet_core.backends.clearml import NO_FRAMEWORKS, ClearMLBackend, alias_tag

pytestmark = [
    # ClearML 2.1 vendors pyhocon, which parses its config with pyparsing 2 names that
    # pyparsing 3 deprecates (ClearML catches the error and loads a partial config).
    pytest.mark.filterwarnings("ignore::pyparsing.warnings.PyparsingDeprecationWarning"),
]

MASTER_TASK_VARS = ("CLEARML_PROC_MASTER_ID", "TRAINS_PROC_MASTER_ID")
CLEARML_CONF = """
# Offline, in-process reporting (a reporting subprocess makes close() take ~12 s), and every
# server on a closed loopback port so nothing can reach ClearML's hosted service.
api {
    api_server: "http://127.0.0.1:9"
    web_server: "http://127.0.0.1:9"
    files_server: "http://127.0.0.1:9"
}
sdk {
    development {
        report_use_subprocess: false
    }
}
"""


@pytest.fixture
def clearml_conf(tmp_path: Path) -> Path:
    """The ClearML configuration file every test runs with."""
    path = tmp_path / "clearml.conf"
    path.write_text(CLEARML_CONF)
    return path


@pytest.fixture(autouse=True)
def clearml_offline(tmp_path: Path, clearml_conf: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """ClearML offline with its config, cache (and offline sessions) and HOME under
    ``tmp_path``; no task is left open. (ClearML stays offline afterwards: switching back
    online makes its sessions log in, which needs a configured server.)"""
    for key in list(os.environ):
        if key.startswith(("CLEARML_", "TRAINS_", "AWS_")) and key not in MASTER_TASK_VARS:
            monkeypatch.delenv(key)
    # The suite's version references s3://bucket/...; tracelet probes it through s3fs, which
    # must find no credentials and no EC2 metadata service rather than ask AWS.
    env = {
        "HOME": str(tmp_path / "home"),
        "CLEARML_OFFLINE_MODE": "1",
        "CLEARML_CONFIG_FILE": str(clearml_conf),
        "CLEARML_CACHE_DIR": str(tmp_path / "clearml-cache"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env
    current = Task.current_task()
    if current is not None:
        current.close()
    for key in MASTER_TASK_VARS:  # Task.init leaves "<pid>:" for subprocesses; keep it from later tests
        os.environ.pop(key, None)
    written = {p.relative_to(tmp_path / "home").as_posix() for p in (tmp_path / "home").rglob("*") if p.is_file()}
    assert written <= {".clearml/.session.json"}  # ClearML's session cache, in the test's HOME


def sessions() -> list[str]:
    """The offline task ids ClearML holds."""
    return sorted(p.name for p in Path(get_offline_dir()).glob("offline-*") if p.is_dir())


def holding(ref: str) -> list[Any]:
    """Every (task, artifact) ClearML holds for ``ref``, through ClearML's client."""
    found = []
    for task_id in sessions():
        task = Task.get_task(task_id=task_id)
        if ref in task.artifacts:
            found.append((task, task.artifacts[ref]))
    return found


def files_of(extracted: Path) -> dict[str, bytes]:
    return {p.relative_to(extracted).as_posix(): p.read_bytes() for p in sorted(extracted.rglob("*")) if p.is_file()}


class TestClearMLBackend(BackendSuite):
    can_fetch = True  # offline sessions can be opened again with Task.get_task

    @pytest.fixture
    def make_backend(self, tmp_path: Path) -> Any:
        return lambda: ClearMLBackend(project="tracelet-tests")

    def read_back(self, backend: Backend, artifact: LoggedArtifact, result: ArtifactResult) -> TrackerView:
        found = holding(artifact.ref)
        assert found, f"no ClearML task holds {artifact.ref}"
        task, held = found[0]
        assert result.version == task.id
        extracted = Path(held.get_local_copy(raise_on_error=True))
        metadata = dict(held.metadata)
        return TrackerView(files=files_of(extracted / "files"), tags=metadata,
                           references=json.loads(metadata["tracelet.references"]), copies=len(found))

    def break_tracker(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def unreachable(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("injected: ClearML files server unreachable")

        monkeypatch.setattr(Task, "upload_artifact", unreachable)

    def aliases_held(self, backend: Backend, artifact: LoggedArtifact) -> set[str]:
        [(task, _held)] = holding(artifact.ref)
        tags = Task.get_task(task_id=task.id).get_tags()
        return {alias for alias in ("candidate", "production")
                if alias_tag(artifact.name, alias, artifact.version) in tags}

    def params_held(self, backend: Backend, artifact: LoggedArtifact, result: ArtifactResult) -> dict[str, str]:
        parameters = Task.get_task(task_id=result.version).get_parameters()
        return {k.removeprefix("General/"): str(v) for k, v in parameters.items() if k.startswith("General/")}

    def status_held(self, backend: Backend, artifact: LoggedArtifact) -> str | None:
        [(task, _held)] = holding(artifact.ref)
        tags = [t for t in Task.get_task(task_id=task.id).get_tags() if t.startswith("tracelet.status=")
                and t.endswith(f":{artifact.ref}")]
        assert len(tags) <= 1, tags
        return tags[0].removeprefix("tracelet.status=").removesuffix(f":{artifact.ref}") if tags else None

    def media_held(self, backend: Backend, artifact: LoggedArtifact, result: ArtifactResult) -> list[str]:
        """Debug samples, from the offline session's ``metrics.jsonl`` (what ClearML uploads
        with ``import_offline_session``)."""
        events = Path(get_offline_dir(), str(result.version), "metrics.jsonl")
        reported = [event for line in events.read_text().splitlines() for event in json.loads(line)]
        return [f"{e['metric']}/{e['variant']}" for e in reported if e["type"] == "training_debug_image"
                and Path(e["url"]).is_file()]

    def test_aliases_given_to_log_leave_the_previous_version(self, make_backend: Any, store: ArtifactStore,
                                                             version: LoggedArtifact) -> None:
        self.check_aliases_given_to_log_leave_the_previous_version(make_backend, store, version)


# -- ClearML specifics ------------------------------------------------------------------------
@pytest.fixture
def dataset(store: ArtifactStore, make_file: Any) -> LoggedArtifact:
    raw = store.log(TraceletArtifact("data/raw", "dataset").add_object([1, 2], "rows"))
    artifact = (TraceletArtifact("data/clean", "dataset", description="cleaned rows", metadata={"source": "crawl"})
                .add_file(make_file("rows.csv", "a,b\n1,2\n"), "tables/rows.csv")
                .add_reference("s3://bucket/raw/data.tar", size_bytes=10_000, name="raw-data"))
    return store.log(artifact, inputs=[raw], aliases=["gold"])


def test_a_dataset_is_routed_to_clearml_by_name_and_read_back_in_a_fresh_process(
        store: ArtifactStore, dataset: LoggedArtifact, tmp_path: Path, clearml_offline: dict[str, str]) -> None:
    folder = FolderBackend(str(tmp_path / "folder"))
    with Experiment("cleaning", backend=["clearml", folder], store=store) as exp:
        results = exp.log_artifact(dataset.new_draft(), aliases=["gold"])
        image = exp.log_artifact(exp.create_artifact("plots/hist", "image").add_object([3], "h"))
    assert set(results) == {"local", "clearml"} and results["clearml"].ok, results["clearml"].error
    assert set(image) == {"local", "clearml", "folder"}  # no wandb configured: every backend
    [task_id] = {results["clearml"].version}
    reader = textwrap.dedent(f"""
        import json, pathlib
        from clearml import Task
        task = Task.get_task(task_id={task_id!r})
        held = task.artifacts["data/clean:v1"]
        root = pathlib.Path(held.get_local_copy(raise_on_error=True))
        print(json.dumps({{
            "name": task.name, "tags": task.get_tags(), "type": str(task.task_type),
            "artifacts": sorted(task.artifacts), "metadata": dict(held.metadata), "kind": held.type,
            "params": task.get_parameters(),
            "files": {{p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}},
        }}))
    """)
    env = {**os.environ, **clearml_offline}
    proc = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (seen["name"], seen["kind"]) == ("cleaning", "archive")
    assert sorted(seen["tags"]) == ["data/clean:gold@v1", "tracelet"]  # the alias given at log time, as a move tags it
    assert seen["type"] == "custom"
    assert seen["artifacts"] == ["data/clean:v1", "plots/hist:v1"]
    assert seen["params"]["properties/tracelet.experiment"] == "cleaning"
    assert seen["params"]["properties/tracelet.run_id"] == exp.run.run_id
    metadata = seen["metadata"]
    assert metadata["tracelet.ref"] == "data/clean:v1" and metadata["tracelet.digest"] == dataset.digest
    assert (metadata["tracelet.inputs"], metadata["tracelet.aliases"]) == ("data/raw:v1", "gold")
    assert json.loads(metadata["tracelet.references"]) == {"raw-data": "s3://bucket/raw/data.tar"}
    assert metadata["tracelet.description"] == "cleaned rows"
    assert json.loads(metadata["tracelet.metadata"]) == {"source": "crawl"}
    assert seen["files"]["files/tables/rows.csv"] == "a,b\n1,2\n"
    assert json.loads(seen["files"][MANIFEST_NAME])["digest"] == dataset.digest


def test_sync_finds_a_delivery_made_by_an_earlier_process(store: ArtifactStore, dataset: LoggedArtifact) -> None:
    Experiment("e", backend=["clearml"], store=store).log_artifact(dataset.new_draft())
    before = sessions()
    # ClearML got it, but the outcome was never recorded (a crash right after the upload)
    from sqlalchemy import update

    from tracelet_core._catalog import deliveries

    with store.catalog.engine.begin() as conn:
        conn.execute(update(deliveries).values(status="pending"))
    [retried] = store.sync()
    assert retried.ok
    assert sessions() == before  # the retry opened no task
    assert len(holding(dataset.ref)) == 1


def test_offline_one_task_per_process_fails_the_delivery_until_sync(store: ArtifactStore,
                                                                    dataset: LoggedArtifact) -> None:
    users_task = Task.init(project_name="mine", task_name="training", auto_connect_frameworks={
        "detect_repository": False, "pytorch": False}, auto_connect_streams=False, auto_resource_monitoring=False,
        auto_connect_arg_parser=False)
    try:
        results = Experiment("e", backend=["clearml"], store=store).log_artifact(dataset.new_draft())
        assert not results["clearml"].ok
        assert "one task per process" in (results["clearml"].error or "")
        assert dataset.ref not in users_task.artifacts
    finally:
        users_task.close()
    assert [r.ok for r in store.sync()] == [True]
    assert len(holding(dataset.ref)) == 1


def test_fetch_skips_a_session_that_is_gone(dataset: LoggedArtifact, tmp_path: Path) -> None:
    backend = ClearMLBackend(project="p")
    result = backend.log(dataset)
    assert result.version and result.version.startswith("offline-")
    fetched = backend.fetch(dataset.name, dataset.version, tmp_path / "first")
    assert (fetched.local_path / "tables/rows.csv").read_text() == "a,b\n1,2\n"
    assert fetched.referenced == {"raw-data": "s3://bucket/raw/data.tar"}
    shutil.rmtree(Path(get_offline_dir()) / result.version)  # e.g. cleaned after import_offline_session
    with pytest.raises(BackendError, match="no task in project 'p' holds data/clean:v1"):
        backend.fetch(dataset.name, dataset.version, tmp_path / "second")


def test_fetch_reports_a_version_clearml_does_not_hold(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="no task in project 'p' holds data/none:v1"):
        ClearMLBackend(project="p").fetch("data/none", "v1", tmp_path / "dest")


def test_offline_clearml_cannot_register_an_output_model_so_models_stay_artifacts(
        store: ArtifactStore, tmp_path: Path) -> None:
    """The evidence behind delivering models as task artifacts offline (ClearML 2.1): when
    ClearML fixes ``OutputModel`` offline this test fails, and the backend can use it."""
    from clearml import OutputModel

    weights = tmp_path / "model.bin"
    weights.write_bytes(b"w")
    Task.set_offline(True)
    task = Task.init(project_name="evidence", task_name="output-model", auto_connect_frameworks=NO_FRAMEWORKS,
                     auto_resource_monitoring=False, auto_connect_streams=False, auto_connect_arg_parser=False)
    try:
        with pytest.raises(AttributeError, match="'DummyModel' object has no attribute 'locked'"):
            OutputModel(task=task, name="m").update_weights(weights_filename=str(weights))
    finally:
        task.close()
    logged = store.log(TraceletArtifact("demo/model", "model").add_file(weights, "model.bin"))
    assert ClearMLBackend(project="p").log(logged).ok
    assert len(holding(logged.ref)) == 1
