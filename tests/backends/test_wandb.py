"""The W&B backend in offline mode, verified through W&B's own run files.

W&B offline cannot read anything back (``use_artifact`` and ``wandb.Api`` need the server),
so these tests read what W&B wrote: the run's ``.wandb`` file (a log of
``wandb_internal_pb2.Record`` messages in LevelDB's log format, which W&B 0.31 reads only in
its Go core, so :func:`wandb_records` decodes it here) and the staged copies of the files in
``WANDB_DATA_DIR/artifacts/staging`` that the manifest entries point at.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wandb
from backend_support import FolderBackend, log_in_run
from suite import BackendSuite, TrackerView
from wandb.proto import wandb_internal_pb2

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
from tracelet_core.backends.wandb import WandbBackend, tracelet_name, wandb_artifact_name

BLOCK = 32 * 1024
HEADER = 7  # ":W&B", a 2-byte magic and a version byte
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """Every record of a ``.wandb`` run file (LevelDB log format: 32 KiB blocks of chunks,
    each with a 4-byte checksum, 2-byte length and 1-byte type)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records: list[bytes] = []
    pending: list[bytes] = []
    pos = HEADER
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a chunk header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        payload = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            records.append(payload)
        elif kind == FIRST:
            pending = [payload]
        elif kind == MIDDLE:
            pending.append(payload)
        elif kind == LAST:
            records.append(b"".join([*pending, payload]))
        else:
            break
    return [wandb_internal_pb2.Record.FromString(r) for r in records]


def run_files(root: str | Path) -> list[Path]:
    return sorted(Path(root).glob("wandb/offline-run-*/run-*.wandb"))


def artifact_records(root: str | Path, ref: str | None = None) -> list[Any]:
    """The artifact records in every offline run under ``root`` (those of ``ref``).

    ``run.finish()`` returns before W&B's core process has flushed the run file (measured:
    3 of 20 files still empty right after it); ``wandb.teardown()`` waits for the core to
    close every run file, so it comes first."""
    wandb.teardown()
    found = []
    for path in run_files(root):
        for record in wandb_records(path):
            if record.WhichOneof("record_type") == "artifact":
                metadata = json.loads(record.artifact.metadata or "{}")
                if ref is None or metadata.get("tracelet.ref") == ref:
                    found.append(record.artifact)
    return found


def all_records(root: str | Path) -> list[Any]:
    """Every record of every offline run under ``root`` (run files flushed first)."""
    wandb.teardown()
    return [record for path in run_files(root) for record in wandb_records(path)]


def summary_items(root: str | Path) -> list[tuple[str, Any]]:
    """(key, value) of every summary update W&B recorded, in run-file order."""
    items = []
    for record in all_records(root):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                items.append((item.key or "/".join(item.nested_key), json.loads(item.value_json)))
    return items


@pytest.fixture(autouse=True)
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """W&B offline, every folder it writes under ``tmp_path`` (HOME too), its server a closed
    loopback port; W&B's process-wide setup is torn down after each test so the next one
    reads its own environment."""
    for key in list(os.environ):
        if key.startswith(("WANDB_", "AWS_")):
            monkeypatch.delenv(key)
    # The suite's version references s3://bucket/...; tracelet probes it through s3fs, which
    # must find no credentials and no EC2 metadata service rather than ask AWS.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    for name in ("DIR", "DATA_DIR", "CACHE_DIR", "CONFIG_DIR"):
        folder = tmp_path / f"wandb-{name.lower()}"
        folder.mkdir()
        monkeypatch.setenv(f"WANDB_{name}", str(folder))
    wandb.teardown()
    yield tmp_path / "wandb-dir"
    wandb.teardown()
    assert not home.exists(), f"W&B wrote to HOME: {sorted(home.rglob('*'))}"


class TestWandbBackend(BackendSuite):
    can_fetch = False  # W&B offline cannot read artifacts back

    @pytest.fixture
    def make_backend(self, tmp_path: Path) -> Any:
        return lambda: WandbBackend(project="tracelet-tests")

    def read_back(self, backend: Backend, artifact: LoggedArtifact, result: ArtifactResult) -> TrackerView:
        assert isinstance(backend, WandbBackend)
        records = artifact_records(backend.dir, artifact.ref)
        assert records, f"no W&B artifact record carries {artifact.ref}"
        record = records[0]
        staging = Path(os.environ["WANDB_DATA_DIR"]) / "artifacts" / "staging"
        files: dict[str, bytes] = {}
        references: dict[str, str] = {}
        for entry in record.manifest.contents:
            if entry.ref:
                references[entry.path] = entry.ref
            else:
                assert Path(entry.local_path).parent == staging
                files[entry.path] = Path(entry.local_path).read_bytes()
        tags = {k: str(v) for k, v in json.loads(record.metadata).items()}
        assert result.uri and result.uri.startswith("file://")
        return TrackerView(files=files, tags=tags, references=references, copies=len(records))

    def break_tracker(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def unreachable(*args: Any, **kwargs: Any) -> Any:
            raise wandb.errors.CommError("injected: W&B unreachable")

        monkeypatch.setattr(wandb.Run, "log_artifact", unreachable)

    def aliases_held(self, backend: Backend, artifact: LoggedArtifact) -> set[str]:
        assert isinstance(backend, WandbBackend)
        latest: dict[str, dict[str, Any]] = {}  # alias -> the newest move W&B recorded offline
        prefix = f"tracelet.alias/{artifact.name}/"
        for key, value in summary_items(backend.dir):
            if key.startswith(prefix) and value["at"] >= latest.get(key[len(prefix):], {"at": 0})["at"]:
                latest[key[len(prefix):]] = value
        held = {alias for alias, move in latest.items() if move["ref"] == artifact.ref}
        relogged = {a for r in artifact_records(backend.dir, artifact.ref) for a in r.aliases}
        assert held <= relogged  # logged again with the alias, for `wandb sync` to move it
        return held

    def params_held(self, backend: Backend, artifact: LoggedArtifact, result: ArtifactResult) -> dict[str, str]:
        assert isinstance(backend, WandbBackend)
        params: dict[str, str] = {}
        for record in all_records(backend.dir):
            kind = record.WhichOneof("record_type")
            items = record.config.update if kind == "config" else record.run.config.update if kind == "run" else []
            for item in items:
                value = json.loads(item.value_json)
                params[item.key] = str(value.get("value", value) if isinstance(value, dict) else value)
        return params

    def status_held(self, backend: Backend, artifact: LoggedArtifact) -> str | None:
        """Offline, W&B keeps the status in the run's summary (``wandb sync`` uploads it);
        the newest update for this version wins."""
        assert isinstance(backend, WandbBackend)
        key = f"tracelet.status/{artifact.name}/{artifact.version}"
        updates = [value for k, value in summary_items(backend.dir) if k == key and value["ref"] == artifact.ref]
        return max(updates, key=lambda u: u["at"])["status"] if updates else None

    def media_held(self, backend: Backend, artifact: LoggedArtifact, result: ArtifactResult) -> list[str]:
        assert isinstance(backend, WandbBackend)
        found = []
        for record in all_records(backend.dir):
            if record.WhichOneof("record_type") == "history":
                for item in record.history.item:  # a media object's fields, one item each
                    if list(item.nested_key[-1:]) == ["_type"] and json.loads(item.value_json) == "image-file":
                        found.append(item.nested_key[0])
        return found


# -- W&B specifics ----------------------------------------------------------------------------
@pytest.fixture
def model(store: ArtifactStore, make_file: Any) -> LoggedArtifact:
    raw = store.log(TraceletArtifact("data/raw", "dataset").add_object([1, 2], "rows"))
    artifact = (TraceletArtifact("team/my-model", "model", description="a small model", metadata={"epochs": 3})
                .add_file(make_file("w.bin", b"weights"), "weights/w.bin")
                .add_reference("s3://bucket/raw/data.tar", size_bytes=10_000, name="raw-data"))
    return store.log(artifact, inputs=[raw], aliases=["candidate", "prod.eu"])


def test_the_artifact_record_mirrors_the_version(model: LoggedArtifact) -> None:
    backend = WandbBackend(project="proj")
    result = log_in_run(backend, model, "train", "run-42")
    [record] = artifact_records(backend.dir)
    assert (record.name, record.type, record.project) == ("team--my-model", "model", "proj")
    assert record.description == "a small model"
    assert sorted(record.aliases) == ["candidate", "latest", "prod.eu", "tracelet-v1"]
    metadata = json.loads(record.metadata)
    assert metadata["epochs"] == 3
    assert metadata["tracelet.ref"] == "team/my-model:v1"
    assert metadata["tracelet.digest"] == model.digest
    assert metadata["tracelet.inputs"] == "data/raw:v1"
    assert metadata["tracelet.aliases"] == "candidate,prod.eu"
    entries = {e.path: e for e in record.manifest.contents}
    assert set(entries) == {"weights/w.bin", "raw-data", MANIFEST_NAME}
    assert Path(entries["weights/w.bin"].local_path).read_bytes() == b"weights"
    assert entries["raw-data"].ref == "s3://bucket/raw/data.tar" and not entries["raw-data"].local_path
    assert entries["raw-data"].size == 10_000
    described = json.loads(Path(entries[MANIFEST_NAME].local_path).read_text())
    assert described["digest"] == model.digest
    # the run: named after the experiment, grouped by the tracelet run id
    [run_file] = run_files(backend.dir)  # flushed by artifact_records
    [run] = [r.run for r in wandb_records(run_file) if r.WhichOneof("record_type") == "run"]
    assert (run.display_name, run.run_group, run.job_type) == ("train", "run-42", "tracelet")
    assert result.ok and result.version == record.digest
    assert result.uri == f"{run_file.as_uri()}#team--my-model:tracelet-v1"


def test_fetch_offline_explains_why_it_cannot_read_back(model: LoggedArtifact, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="W&B offline cannot read artifacts back.*wandb sync"):
        WandbBackend().fetch(model.name, model.version, tmp_path / "dest")


def test_an_image_is_routed_to_wandb_by_name(store: ArtifactStore, make_file: Any, tmp_path: Path,
                                             wandb_offline: Path) -> None:
    folder = FolderBackend(str(tmp_path / "folder"))
    with Experiment("vision", backend=["wandb", folder], store=store) as exp:
        image = exp.log_artifact(exp.create_artifact("samples/grid", "image")
                                 .add_file(make_file("grid.png", b"\x89PNG fake"), "grid.png"))
        config = exp.log_artifact(exp.create_artifact("cfg", "config").add_object({"lr": 0.1}, "cfg"))
        pinned = exp.create_artifact("samples/other", "image").add_object([1], "o")
        pinned.metadata["preferred_backends"] = ["folder"]
        override = exp.log_artifact(pinned)
    assert set(image) == {"local", "wandb"} and image["wandb"].ok, image["wandb"].error
    assert set(config) == {"local", "wandb", "folder"}  # config goes to every backend
    assert set(override) == {"local", "folder"}
    assert exp.backends["wandb"].config()["dir"] == str(wandb_offline)  # WANDB_DIR, resolved
    [record] = artifact_records(wandb_offline, "samples/grid:v1")
    assert (record.name, record.type) == ("samples--grid", "image")
    assert [e.path for e in record.manifest.contents] == ["grid.png", MANIFEST_NAME]
    assert len(artifact_records(wandb_offline)) == 2  # the image and the config, in one run
    assert len(run_files(wandb_offline)) == 1
    assert record.project == "tracelet"  # no project configured, no WANDB_PROJECT


def test_sync_finds_a_delivery_made_by_an_earlier_process(store: ArtifactStore, model: LoggedArtifact) -> None:
    Experiment("e", backend=["wandb"], store=store).log_artifact(model.new_draft())
    # W&B got it, but the outcome was never recorded (a crash right after the upload)
    from sqlalchemy import update

    from tracelet_core._catalog import deliveries

    with store.catalog.engine.begin() as conn:
        conn.execute(update(deliveries).values(status="pending"))
    [retried] = store.sync()
    assert retried.ok
    backend_dir = os.environ["WANDB_DIR"]
    assert len(artifact_records(backend_dir, model.ref)) == 1
    assert len(run_files(backend_dir)) == 1  # the retry opened no run


def test_runs_are_per_backend_so_threads_log_at_once(store: ArtifactStore) -> None:
    versions = [store.log(TraceletArtifact(f"plots/p{i}", "visualization").add_object({"i": i}, "p"))
                for i in range(2)]
    backends = [WandbBackend(project="threads") for _ in versions]
    results: list[ArtifactResult] = []

    def deliver(backend: WandbBackend, version: LoggedArtifact, index: int) -> None:
        results.append(log_in_run(backend, version, f"exp{index}", f"run{index}"))

    threads = [threading.Thread(target=deliver, args=(backends[i], versions[i], i)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.ok for r in results] == [True, True]
    assert wandb.run is None  # no global run was touched
    assert sorted(json.loads(a.metadata)["tracelet.ref"] for a in artifact_records(backends[0].dir)) == [
        "plots/p0:v1", "plots/p1:v1"]
    projects = {r.run.project for f in run_files(backends[0].dir) for r in wandb_records(f)
                if r.WhichOneof("record_type") == "run"}
    assert len(run_files(backends[0].dir)) == 2 and projects == {"threads"}


def test_disabled_wandb_raises_so_the_outbox_keeps_the_delivery(store: ArtifactStore, model: LoggedArtifact,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with pytest.raises(BackendError, match="disabled"):
        WandbBackend().log(model)


@pytest.mark.parametrize("name", ["model", "team/my-model", "a--b/c", "a-/b", "x-_y/z_-w", "a.b/c-", "v-/q"])
def test_artifact_names_map_reversibly(name: str) -> None:
    mapped = wandb_artifact_name(name)
    assert "/" not in mapped and tracelet_name(mapped) == name


def test_names_too_long_for_wandb_are_shortened_uniquely() -> None:
    long_a, long_b = "a" * 150 + "/x", "a" * 150 + "/y"
    assert len(wandb_artifact_name(long_a)) == 128
    assert wandb_artifact_name(long_a) != wandb_artifact_name(long_b)


def test_offline_deliveries_are_unconfirmed_until_the_run_file_holds_them(
        store: ArtifactStore, model: LoggedArtifact) -> None:
    exp = Experiment("e", backend=["wandb"], store=store).start()
    try:
        result = exp.log_artifact(model.new_draft())["wandb"]
        assert result.ok and not result.confirmed
        [row] = store.deliveries(model.ref)
        assert row.status == "unconfirmed"  # W&B holds it in memory only: sync would deliver it again
    finally:
        exp.stop()
    [row] = store.deliveries(model.ref)
    assert row.status == "delivered" and row.result and row.result["confirmed"]
    assert len(artifact_records(os.environ["WANDB_DIR"], model.ref)) == 1
    assert store.sync() == []


def test_checkpoints_and_weights_are_wandb_models_with_the_tracelet_type_in_metadata(
        store: ArtifactStore, make_file: Any) -> None:
    backend = WandbBackend(project="types")
    for kind in ("checkpoint", "weights"):
        assert backend.log(store.log(TraceletArtifact(f"ckpt/{kind}", kind)
                                     .add_file(make_file(f"{kind}.pt", b"w"), f"{kind}.pt"))).ok
    records = {json.loads(r.metadata)["tracelet.type"]: r.type for r in artifact_records(backend.dir)}
    assert records == {"checkpoint": "model", "weights": "model"}
