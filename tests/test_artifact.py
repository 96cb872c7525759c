"""The ``TraceletArtifact`` builder, its serializers and ``add_model``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from support import MakeFile

from tracelet_core import (
    ArtifactStore,
    ArtifactType,
    InvalidArtifactError,
    TraceletArtifact,
    UnsafeDeserializationError,
)


def test_artifact_types_are_the_thirteen_of_the_guide() -> None:
    assert [t.value for t in ArtifactType] == [
        "model", "checkpoint", "weights", "dataset", "sample", "image", "audio", "video",
        "visualization", "report", "config", "code", "custom"]
    assert TraceletArtifact("x", "image").type is ArtifactType.IMAGE
    with pytest.raises(InvalidArtifactError):
        TraceletArtifact("x", "tensorboard")


def test_builder_chains_and_describes_itself(make_file: MakeFile) -> None:
    art = (TraceletArtifact("results", ArtifactType.REPORT, description="d", metadata={"k": 1})
           .add_file(make_file("report.html", "<p/>"), "reports/experiment.html")
           .add_file(make_file("metrics.json", "{}"), "data/metrics.json")
           .add_object({"lr": 0.001}, "summary", "json"))
    assert [f.path for f in art.files] == ["reports/experiment.html", "data/metrics.json"]
    assert art.objects[0].serializer == "json" and art.objects[0].path == "summary.json"
    assert art.size_bytes == 4 + 2 + art.objects[0].size
    art.metadata["preferred_backends"] = ["mlflow"]
    as_dict = art.to_dict()
    assert as_dict["name"] == "results" and as_dict["type"] == "report"
    assert as_dict["metadata"] == {"k": 1, "preferred_backends": ["mlflow"]}
    assert len(as_dict["files"]) == 2 and len(as_dict["objects"]) == 1


def test_add_file_defaults_to_the_file_name_and_normalises_dot_segments(make_file: MakeFile) -> None:
    art = TraceletArtifact("x").add_file(make_file("sub/model.pth", b"1"))
    art.add_file(make_file("c.yaml", b"a: 1"), "./config/./c.yaml")
    assert [f.path for f in art.files] == ["model.pth", "config/c.yaml"]


def test_duplicate_and_conflicting_paths_are_refused(make_file: MakeFile) -> None:
    art = TraceletArtifact("x").add_file(make_file("a.txt"), "dir/a.txt")
    with pytest.raises(InvalidArtifactError):
        art.add_file(make_file("b.txt"), "dir/a.txt")
    with pytest.raises(InvalidArtifactError):
        art.add_file(make_file("c.txt"), "dir/a.txt/inner")
    with pytest.raises(InvalidArtifactError):
        art.add_file(make_file("d.txt"), "dir")


def test_add_dir_adds_every_file_under_a_prefix(make_file: MakeFile, store: ArtifactStore,
                                                tmp_path: Path) -> None:
    make_file("tree/a.txt", "a")
    make_file("tree/sub/b.txt", "b")
    make_file("tree/sub/deeper/c.txt", "c")
    art = TraceletArtifact("tree", "dataset").add_dir(tmp_path / "files/tree", "data")
    assert [f.path for f in art.files] == ["data/a.txt", "data/sub/b.txt", "data/sub/deeper/c.txt"]
    dest = store.log(art).download(tmp_path / "out")
    assert (dest / "data/sub/deeper/c.txt").read_text() == "c"


def test_add_dir_follows_symlinks_that_stay_inside(make_file: MakeFile, tmp_path: Path) -> None:
    target = make_file("tree/real.txt", "r")
    (tmp_path / "files/tree/alias.txt").symlink_to(target)
    art = TraceletArtifact("tree").add_dir(tmp_path / "files/tree")
    assert sorted(f.path for f in art.files) == ["alias.txt", "real.txt"]


def test_files_are_hashed_when_logged_not_when_added(make_file: MakeFile, store: ArtifactStore) -> None:
    source = make_file("a.txt", "before")
    art = TraceletArtifact("x").add_file(source)
    source.write_text("after!")
    assert store.log(art).path("a.txt").read_text() == "after!"


def test_objects_are_a_snapshot_taken_when_added(store: ArtifactStore) -> None:
    config = {"lr": 0.1}
    art = TraceletArtifact("cfg", "config").add_object(config, "hyper")
    config["lr"] = 99
    assert store.log(art).load() == {"lr": 0.1}


@pytest.mark.parametrize(
    ("obj", "serializer", "expected_key"),
    [
        ({"a": [1, 2.5, None, "x"]}, "json", "json"),
        ({"a": {"b": [1, 2]}}, "yaml", "yaml"),
        (np.arange(12, dtype=np.float32).reshape(3, 4), "numpy", "numpy"),
        (pd.DataFrame({"x": [1, 2], "y": ["a", "b"]}), "parquet", "parquet"),
        ({"w": torch.ones(2, 3), "step": 4}, "torch", "torch"),
        (pd.DataFrame({"x": [1.5]}), "auto", "parquet"),
        (np.zeros(3), "auto", "numpy"),
        (torch.zeros(2), "auto", "torch"),
        ({"plain": [1, 2]}, "auto", "json"),
        ({1, 2, 3}, "auto", "json-tagged"),  # round 3: sets need no pickle
        (complex(1, 2), "auto", "pickle"),  # what no safe format holds
    ],
)
def test_serializers_round_trip_and_record_their_key(store: ArtifactStore, obj: Any, serializer: str,
                                                     expected_key: str) -> None:
    logged = store.log(TraceletArtifact("obj").add_object(obj, "value", serializer))
    assert logged.objects[0].serializer == expected_key
    loaded = logged.load("value", allow_pickle=True)
    if isinstance(obj, pd.DataFrame):
        pd.testing.assert_frame_equal(loaded, obj)
    elif isinstance(obj, np.ndarray):
        np.testing.assert_array_equal(loaded, obj)
    elif isinstance(obj, torch.Tensor):
        assert torch.equal(loaded, obj)
    elif isinstance(obj, dict) and "w" in obj:
        assert torch.equal(loaded["w"], obj["w"]) and loaded["step"] == 4
    else:
        assert loaded == obj


def test_pickle_is_refused_unless_allowed(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    logged = store.log(TraceletArtifact("p").add_object({1, 2}, "s", "pickle"))
    with pytest.raises(UnsafeDeserializationError):
        logged.load()
    assert logged.load(allow_pickle=True) == {1, 2}
    monkeypatch.setenv("TRACELET_ALLOW_PICKLE", "true")
    with ArtifactStore.open(store.blobs.root) as allowing:
        assert allowing.get("p").load() == {1, 2}


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def test_add_model_stores_a_pytorch_state_dict_not_a_pickled_module(store: ArtifactStore) -> None:
    net = TinyNet()
    art = TraceletArtifact("classifier", "model").add_model(net, input_example=torch.ones(1, 3))
    logged = store.log(art)
    model_entry = next(o for o in logged.objects if o.name == "model")
    assert model_entry.serializer == "torch"
    assert model_entry.extra["framework"] == "pytorch"
    assert model_entry.extra["model_class"].endswith("TinyNet")
    assert logged.metadata["framework"] == "pytorch"
    state = logged.load()  # loaded with weights_only=True: no code runs
    restored = TinyNet()
    restored.load_state_dict(state)
    assert torch.equal(restored(torch.ones(1, 3)), net(torch.ones(1, 3)))
    assert torch.equal(logged.load("model_input_example"), torch.ones(1, 3))


def test_add_model_detects_sklearn_and_stores_it_with_skops(store: ArtifactStore) -> None:
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(np.array([[0.0], [1.0], [2.0]]), np.array([0.0, 2.0, 4.0]))
    logged = store.log(TraceletArtifact("reg", "model").add_model(model))
    assert logged.objects[0].extra["framework"] == "sklearn" and logged.objects[0].serializer == "skops"
    assert logged.load(allow_pickle=False).predict(np.array([[3.0]]))[0] == pytest.approx(6.0)


def test_framework_detection_by_module_name() -> None:
    from tracelet_core._frameworks import detect_framework

    def fake(module: str) -> Any:
        return type("Model", (), {"__module__": module})()

    assert detect_framework(fake("xgboost.sklearn")) == "xgboost"
    assert detect_framework(fake("lightgbm.basic")) == "lightgbm"
    assert detect_framework(fake("keras.src.models")) == "tensorflow"
    assert detect_framework(fake("tensorflow.python.keras")) == "tensorflow"
    assert detect_framework(fake("sklearn.ensemble")) == "sklearn"
    assert detect_framework(TinyNet()) == "pytorch"
    assert detect_framework(object()) is None


def test_add_model_refuses_unknown_or_mismatched_frameworks() -> None:
    with pytest.raises(InvalidArtifactError, match="cannot detect"):
        TraceletArtifact("m", "model").add_model(object())
    with pytest.raises(InvalidArtifactError, match="unknown framework"):
        TraceletArtifact("m", "model").add_model(TinyNet(), framework="jax")
    with pytest.raises(InvalidArtifactError, match="is pytorch"):
        TraceletArtifact("m", "model").add_model(TinyNet(), framework="sklearn")


# -- add_value: one rule for every producer -----------------------------------------------------
class Opaque:
    """Only pickle can hold this."""

    def __init__(self, value: int) -> None:
        self.value = value


def test_add_value_stores_models_paths_and_objects_by_one_rule(make_file: MakeFile, store: ArtifactStore) -> None:
    from sklearn.linear_model import LinearRegression

    from tracelet_core import add_value
    from tracelet_core._values import inferred_type

    net = add_value(TraceletArtifact("v/net", "model"), TinyNet())
    assert (net.kind, net.entry, net.serializer) == ("model", "model", "torch")
    sk = TraceletArtifact("v/sk", "model")
    assert add_value(sk, LinearRegression()).kind == "model" and sk.objects[0].extra["framework"] == "sklearn"
    assert add_value(TraceletArtifact("v/t"), torch.zeros(2)).kind == "object"  # a tensor is not a model
    frame = TraceletArtifact("v/f")
    assert add_value(frame, pd.DataFrame({"x": [1]})).serializer == "parquet"
    path = TraceletArtifact("v/p")
    stored = add_value(path, make_file("table.csv", "a\n1\n"))
    assert (stored.kind, stored.entry, [f.path for f in path.files]) == ("file", "value.csv", ["value.csv"])
    named = TraceletArtifact("v/n")
    assert add_value(named, {"k": (1, 2)}, "params").serializer == "json-tagged"
    assert store.log(named).load("params") == {"k": (1, 2)}

    assert inferred_type(TinyNet()) is ArtifactType.MODEL
    assert inferred_type(pd.DataFrame()) is ArtifactType.DATASET
    assert inferred_type(np.zeros(1)) is ArtifactType.DATASET
    assert inferred_type(make_file("plot.png", "x")) is ArtifactType.IMAGE
    assert inferred_type({"a": 1}) is ArtifactType.CUSTOM


def test_add_value_refuses_what_only_pickle_can_hold_unless_allowed(monkeypatch: pytest.MonkeyPatch,
                                                                    store: ArtifactStore) -> None:
    from tracelet_core import add_value

    with pytest.raises(InvalidArtifactError, match="TRACELET_ALLOW_PICKLE"):
        add_value(TraceletArtifact("v/o"), Opaque(1), allow_pickle=False)
    monkeypatch.setenv("TRACELET_ALLOW_PICKLE", "true")
    allowed = TraceletArtifact("v/o")
    assert add_value(allowed, Opaque(1)).serializer == "pickle"  # the setting is the default
    asked = TraceletArtifact("v/o2")
    assert add_value(asked, {1, 2}, serializer="pickle", allow_pickle=False).serializer == "pickle"
    assert store.log(asked).load(allow_pickle=True) == {1, 2}


def test_serializes_to_recognises_a_logged_object_by_its_bytes(store: ArtifactStore) -> None:
    from tracelet_core._values import serializes_to

    logged = store.log(TraceletArtifact("v/s").add_object({"a": [1, 2]}, "value", "json"))
    [entry] = logged.objects
    assert serializes_to({"a": [1, 2]}, entry)
    assert not serializes_to({"a": [1, 3]}, entry)
    assert not serializes_to(Opaque(1), entry)


def test_a_content_scoped_key_finds_its_version_only_for_the_same_content(store: ArtifactStore) -> None:
    from tracelet_core._store import content_scoped_key

    def log(value: list[int]) -> Any:
        return store.log(TraceletArtifact("v/k").add_object(value, "value", "json"),
                         idempotency_key=content_scoped_key("step-1"))

    first = log([1])
    store.log(TraceletArtifact("v/k").add_object([9], "value", "json"))  # another writer, in between
    again = log([1])
    assert (again.ref, again.created) == (first.ref, False)
    other = log([2])
    assert other.created and other.ref == "v/k:v3"


def test_add_reference_records_size_and_checksum_without_copying(make_file: MakeFile,
                                                                 store: ArtifactStore, store_dir: Path) -> None:
    big = make_file("big.bin", b"b" * 4096)
    art = TraceletArtifact("ds", "dataset").add_reference(big.as_uri(), description="raw data")
    art.add_reference("s3://my-bucket/large-dataset.tar.gz", size_bytes=5_000_000_000, name="remote")
    local_ref, remote_ref = art.references
    assert local_ref.size == 4096 and local_ref.checksum and local_ref.checksum.startswith("mtime:")
    assert remote_ref.size == 5_000_000_000 and remote_ref.uri == "s3://my-bucket/large-dataset.tar.gz"
    store.log(art)
    assert not any(p.is_file() and p.stat().st_size == 4096 for p in (store_dir / "blobs").rglob("*"))


def test_large_files_are_streamed_not_read_whole(tmp_path: Path, store: ArtifactStore) -> None:
    """Logging and downloading a 40 MiB file never holds more than a few chunks in memory."""
    import tracemalloc

    source = tmp_path / "big.bin"
    chunk = np.random.default_rng(0).bytes(1 << 20)
    with source.open("wb") as handle:
        for _ in range(40):
            handle.write(chunk)
    tracemalloc.start()
    try:
        logged = store.log(TraceletArtifact("blob").add_file(source))
        dest = logged.download(tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert logged.files[0].size == 40 << 20
    assert peak < 8 << 20, f"peak Python allocation {peak / 2**20:.1f} MiB"
    assert (dest / "big.bin").stat().st_size == 40 << 20
    with (dest / "big.bin").open("rb") as handle:
        assert handle.read(1 << 20) == chunk


def test_equal_torch_objects_dedup_across_processes(store_dir: Path) -> None:
    """torch.save embeds a per-process id; the torch serializer normalises it away."""
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "from tracelet_core import ArtifactStore, TraceletArtifact\n"
        "torch.manual_seed(0)\n"
        "state = torch.nn.Linear(4, 2).state_dict()\n"
        "with ArtifactStore.open(sys.argv[1]) as store:\n"
        "    print(store.log(TraceletArtifact('w', 'weights').add_object(dict(state), 'w', 'torch')).ref)\n"
    )
    refs = [subprocess.run([sys.executable, "-c", script, str(store_dir)], capture_output=True, text=True,
                           check=True).stdout.strip() for _ in range(2)]
    assert refs == ["w:v1", "w:v1"]


# -- one type per name ------------------------------------------------------------------------------
def _blob_files(store_dir: Path) -> list[Path]:
    return sorted(p for p in (store_dir / "blobs").rglob("*") if p.is_file())


def test_a_version_of_another_type_is_refused_naming_both(any_store: ArtifactStore, store_dir: Path,
                                                          make_file: MakeFile) -> None:
    first = any_store.log(TraceletArtifact("churn", "dataset").add_file(make_file("a.csv", "x\n1\n")))
    blobs = _blob_files(store_dir)
    other = TraceletArtifact("churn", "model").add_file(make_file("m.bin", b"weights"))
    with pytest.raises(InvalidArtifactError, match=r"'dataset'.*'model'"):
        any_store.log(other)
    with pytest.raises(InvalidArtifactError, match=r"'dataset'.*'model'"):
        any_store.upsert(other, "g")
    assert _blob_files(store_dir) == blobs  # refused before any blob was written
    assert [v.ref for v in any_store.versions("churn")] == [first.ref] and any_store.drafts() == []
    assert any_store.log(TraceletArtifact("churn", "dataset").add_file(make_file("b.csv", "x\n2\n"))).version == "v2"


def test_the_commit_checks_the_type_again_under_its_lock(any_store: ArtifactStore, make_file: MakeFile,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # a writer that read the name before another committed its first version: the pre-check saw
    # nothing (simulated here), the commit transaction still refuses the other type
    any_store.log(TraceletArtifact("churn", "dataset").add_file(make_file("a.csv", "x\n1\n")))
    monkeypatch.setattr(any_store.catalog, "check_type", lambda name, type_: None)
    with pytest.raises(InvalidArtifactError, match=r"'dataset'.*'model'"):
        any_store.log(TraceletArtifact("churn", "model").add_file(make_file("m.bin", b"weights")))
    any_store.upsert(TraceletArtifact("churn", "model").add_file(make_file("m.bin", b"weights")), "g")
    with pytest.raises(InvalidArtifactError, match=r"'dataset'.*'model'"):
        any_store.finish("churn", "g")
    assert [v.version for v in any_store.versions("churn")] == ["v1"]
    assert any_store.get("churn").type is ArtifactType.DATASET


def test_exists_answers_for_names_numbers_and_aliases(any_store: ArtifactStore, make_file: MakeFile) -> None:
    assert not any_store.exists("churn")
    any_store.log(TraceletArtifact("churn", "dataset").add_file(make_file("a.csv", "x\n1\n")), aliases=["golden"])
    assert [any_store.exists(r) for r in ("churn", "churn:latest", "churn:v1", "churn:golden")] == [True] * 4
    assert [any_store.exists(r) for r in ("churn:v2", "churn:production", "churns", "team/churn")] == [False] * 4
    with pytest.raises(InvalidArtifactError):
        any_store.exists("churn:v1:extra")  # a malformed ref is an error, not "no"
