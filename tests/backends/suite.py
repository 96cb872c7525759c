"""The shared backend test suite: one subclass per tracker (like fsspec's abstract tests).

A subclass provides ``make_backend`` (a configured backend writing to this test's temp
folder), ``read_back`` (what the tracker holds, read with the tracker's own client or files),
``aliases_held`` / ``params_held`` / ``media_held`` (the tracker's own aliases, parameters
and native media for a version), ``break_tracker`` (inject a fault into the tracker SDK's
upload call: the only mock allowed) and says whether the tracker can be read back
(``can_fetch``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from backend_support import log_in_run

from tracelet_core import (
    ArtifactResult,
    ArtifactStore,
    ArtifactType,
    Backend,
    BackendError,
    Experiment,
    LoggedArtifact,
    TraceletArtifact,
)


@dataclass
class TrackerView:
    """One version as the tracker holds it."""

    files: dict[str, bytes]  # artifact path -> bytes uploaded to the tracker
    tags: dict[str, str]  # tags / metadata / params the tracker recorded
    references: dict[str, str] = field(default_factory=dict)  # artifact path -> URI
    copies: int = 1  # how many tracker-side copies (runs/artifact versions) carry this ref


class BackendSuite:
    """Tests every backend must pass."""

    can_fetch = True

    # -- hooks a subclass implements ------------------------------------------------------
    @pytest.fixture
    def make_backend(self, tmp_path: Path) -> Any:
        raise NotImplementedError

    def read_back(self, backend: Backend, artifact: LoggedArtifact, result: ArtifactResult) -> TrackerView:
        raise NotImplementedError

    def break_tracker(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make the tracker's upload call raise (fault injection)."""
        raise NotImplementedError

    def aliases_held(self, backend: Backend, artifact: LoggedArtifact) -> set[str]:
        """The aliases the tracker shows on its copy of ``artifact``."""
        raise NotImplementedError

    def params_held(self, backend: Backend, artifact: LoggedArtifact, result: ArtifactResult) -> dict[str, str]:
        """The tracker's own parameters of the run holding ``artifact`` (values as text)."""
        raise NotImplementedError

    def media_held(self, backend: Backend, artifact: LoggedArtifact, result: ArtifactResult) -> list[str]:
        """What the tracker shows as native media for ``artifact`` (one label per item)."""
        raise NotImplementedError

    def status_held(self, backend: Backend, artifact: LoggedArtifact) -> str | None:
        """The ``tracelet.status`` the tracker shows on its copy of ``artifact`` (None: none)."""
        raise NotImplementedError

    # -- fixtures ---------------------------------------------------------------------------
    @pytest.fixture
    def version(self, store: ArtifactStore, make_file: Any) -> LoggedArtifact:
        artifact = TraceletArtifact("suite/model", ArtifactType.MODEL, description="suite model",
                                    metadata={"epochs": 3})
        artifact.add_file(make_file("weights.bin", b"\x00\x01weights" * 100), "weights/model.bin")
        artifact.add_file(make_file("config.yaml", "lr: 0.1\n"), "config.yaml")
        artifact.add_object({"accuracy": 0.93}, "metrics")
        artifact.add_reference("s3://bucket/raw/data.tar", size_bytes=10_000, name="raw-data")
        raw = store.log(TraceletArtifact("suite/raw", "dataset").add_object([1, 2, 3], "rows"))
        return store.log(artifact, inputs=[raw], aliases=["candidate"])

    # -- the suite ----------------------------------------------------------------------------
    def test_delivers_files_objects_and_tags(self, make_backend: Any, version: LoggedArtifact) -> None:
        backend = make_backend()
        result = log_in_run(backend, version, "suite-experiment", "suite-run")
        assert result.ok, result.error
        assert result.backend == backend.name
        view = self.read_back(backend, version, result)
        expected = {entry.path: version.path(entry.path).read_bytes() for entry in [*version.files, *version.objects]}
        assert {p: view.files[p] for p in expected} == expected
        assert view.tags["tracelet.ref"] == "suite/model:v1"
        assert view.tags["tracelet.digest"] == version.digest
        assert view.tags["tracelet.inputs"] == "suite/raw:v1"
        assert view.references.get("raw-data") == "s3://bucket/raw/data.tar"

    def test_relogging_is_idempotent(self, make_backend: Any, version: LoggedArtifact) -> None:
        backend = make_backend()
        backend.start("suite-experiment", "suite-run")
        try:
            first = backend.log(version)
            second = backend.log(version)
        finally:
            backend.stop()
        assert first.ok and second.ok
        assert (first.version, first.uri) == (second.version, second.uri)
        assert self.read_back(backend, version, second).copies == 1

    def test_large_files_reach_the_tracker_as_references(self, make_backend: Any, store: ArtifactStore,
                                                         make_file: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(store.settings, "reference_threshold_bytes", 1000)
        big = store.log(TraceletArtifact("suite/big", "checkpoint")
                        .add_file(make_file("big.ckpt", b"x" * 5000), "big.ckpt")
                        .add_file(make_file("small.txt", b"small"), "small.txt"))
        backend = make_backend()
        result = log_in_run(backend, big, "suite-experiment", "suite-run")
        view = self.read_back(backend, big, result)
        assert view.files.get("small.txt") == b"small"
        assert "big.ckpt" not in view.files
        assert view.references["big.ckpt"] == store.blobs.blob_uri(big.files[0].digest or "")

    def test_a_failed_delivery_is_retried_by_sync_exactly_once(
            self, make_backend: Any, store: ArtifactStore, version: LoggedArtifact,
            monkeypatch: pytest.MonkeyPatch) -> None:
        backend = make_backend()
        with monkeypatch.context() as faults:
            self.break_tracker(faults)
            results = Experiment("suite", backend=[backend], store=store).log_artifact(version.new_draft())
        assert results["local"].ok and not results[backend.name].ok
        assert results[backend.name].error
        retried = store.sync()
        assert [(r.backend, r.ok) for r in retried] == [(backend.name, True)]
        assert store.sync() == []
        assert self.read_back(backend, version, retried[0]).copies == 1

    def test_experiment_get_artifact_reads_the_trackers_copy(self, make_backend: Any, store: ArtifactStore,
                                                             version: LoggedArtifact) -> None:
        backend = make_backend()
        with Experiment("suite", backend=[backend], store=store) as exp:
            results = exp.log_artifact(version.new_draft())
            assert results[backend.name].ok, results[backend.name].error
            if self.can_fetch:
                assert exp.get_artifact("suite/model", backend=backend.name).ref == "suite/model:v1"
            else:
                with pytest.raises(BackendError):
                    exp.get_artifact("suite/model", backend=backend.name)

    # -- what the tracker's own users see ---------------------------------------------------
    def test_alias_moves_follow_through_the_outbox_exactly_once(
            self, make_backend: Any, store: ArtifactStore, version: LoggedArtifact) -> None:
        backend = make_backend()
        with Experiment("suite", backend=[backend], store=store) as exp:
            assert exp.log_artifact(version.new_draft())[backend.name].ok
            second = exp.log_artifact(version.new_draft().add_object({"loss": 0.1}, "loss"))
            assert second[backend.name].ok, second[backend.name].error
        v1, v2 = store.get("suite/model:v1"), store.get("suite/model:v2")
        store.set_alias(v1.ref, "production")  # delivered right away: the trackers are known
        assert not store.alias_events(status="failed"), store.alias_events(status="failed")
        assert "production" in self.aliases_held(backend, v1)
        store.set_alias(v2.ref, "production")  # moved
        assert "production" in self.aliases_held(backend, v2)
        assert "production" not in self.aliases_held(backend, v1)
        store.remove_alias("suite/model", "production")  # removed
        assert "production" not in self.aliases_held(backend, v2)
        assert store.alias_events() == [] and store.sync() == []  # nothing twice
        assert [e.action for e in store.alias_events("suite/model", status="delivered")] == [
            "set", "remove", "set", "remove"]

    def test_config_keys_become_the_trackers_parameters(self, make_backend: Any, store: ArtifactStore) -> None:
        config = store.log(TraceletArtifact("suite/config", "config").add_object(
            {"optimizer": {"lr": 0.1, "name": "adam"}, "epochs": 3}, "hparams"))
        backend = make_backend()
        result = log_in_run(backend, config, "suite-experiment", "suite-run")
        assert result.ok, result.error
        params = self.params_held(backend, config, result)
        assert {k: params.get(k) for k in ("optimizer.lr", "optimizer.name", "epochs")} == {
            "optimizer.lr": "0.1", "optimizer.name": "adam", "epochs": "3"}

    def test_images_become_the_trackers_native_media(self, make_backend: Any, store: ArtifactStore,
                                                     tmp_path: Path) -> None:
        from PIL import Image

        picture = tmp_path / "sample.png"
        Image.new("RGB", (8, 6), (0, 128, 255)).save(picture)
        images = store.log(TraceletArtifact("suite/samples", "image").add_file(picture, "sample.png"))
        backend = make_backend()
        result = log_in_run(backend, images, "suite-experiment", "suite-run")
        assert result.ok, result.error
        assert self.media_held(backend, images, result), "the tracker shows no native image"

    def test_quarantine_release_and_delete_tag_the_trackers_copy(
            self, make_backend: Any, store: ArtifactStore, version: LoggedArtifact) -> None:
        backend = make_backend()
        with Experiment("suite", backend=[backend], store=store) as exp:
            assert exp.log_artifact(version.new_draft())[backend.name].ok
            second = exp.log_artifact(version.new_draft().add_object({"loss": 0.1}, "loss"))
            assert second[backend.name].ok, second[backend.name].error
        v1, v2 = store.get("suite/model:v1"), store.get("suite/model:v2")
        assert self.status_held(backend, v1) is None
        store.quarantine(v1.ref, "weights trained on leaked labels", downstream=False)
        assert self.status_held(backend, v1) == "quarantined"
        store.release(v1.ref)
        assert self.status_held(backend, v1) == "active"
        store.delete(v1.ref, force=True)  # aliased ("candidate"): its alias goes too
        assert self.status_held(backend, v1) == "deleted"
        assert "candidate" not in self.aliases_held(backend, v1)
        assert self.status_held(backend, v2) is None
        assert store.catalog.status_events() == [] and store.sync() == []  # each delivered once

    # -- for trackers whose aliases are tags (not W&B, whose aliases move natively) ---------
    def check_aliases_given_to_log_leave_the_previous_version(self, make_backend: Any, store: ArtifactStore,
                                                              version: LoggedArtifact) -> None:
        """``log(aliases=...)`` moves an alias without an alias event: the new version's
        copy shows it, the previous version's copy no longer does."""
        backend = make_backend()
        with Experiment("suite", backend=[backend], store=store) as exp:
            assert exp.log_artifact(version.new_draft())[backend.name].ok  # v1, holding "candidate"
            second = exp.log_artifact(version.new_draft().add_object({"loss": 0.1}, "loss"), aliases=["candidate"])
            assert second[backend.name].ok, second[backend.name].error
        v1, v2 = store.get("suite/model:v1"), store.get("suite/model:v2")
        assert (v1.aliases, v2.aliases) == ([], ["candidate"])
        assert "candidate" in self.aliases_held(backend, v2)
        assert "candidate" not in self.aliases_held(backend, v1)
