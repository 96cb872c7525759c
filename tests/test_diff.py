"""``ArtifactStore.diff`` and ``tracelet diff``: entries, labels, lineage, producer and the content
of tables, objects, tensors and text, with exact expected numbers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from support import MakeFile, StoreLocation
from typer.testing import CliRunner

from tracelet_core import (
    ArtifactNotFoundError,
    ArtifactStore,
    RunInfo,
    TraceletArtifact,
    VersionDiff,
)
from tracelet_core.cli import app


def test_entries_labels_inputs_and_producer(any_store: ArtifactStore, make_file: MakeFile) -> None:
    raw1 = any_store.log(TraceletArtifact("raw", "dataset").add_object([1], "rows"))
    raw2 = any_store.log(TraceletArtifact("raw", "dataset").add_object([2], "rows"))
    a = any_store.log(
        TraceletArtifact("model", "model", metadata={"params": {"lr": 0.1, "depth": 3}, "team": "x"}, tags=["old"])
        .add_file(make_file("same.bin", b"same"), "same.bin").add_file(make_file("gone.bin", b"g"), "gone.bin")
        .add_file(make_file("w1.bin", b"\0\1\2\3\4"), "weights.bin"),
        producer=RunInfo("tracelet", "run-a"), inputs=[raw1], aliases=["production"])
    b = any_store.log(
        TraceletArtifact("model", "model", metadata={"params": {"lr": 0.2, "depth": 3}, "note": "n"}, tags=["new"])
        .add_file(make_file("same2.bin", b"same"), "same.bin").add_file(make_file("new.bin", b"n"), "new.bin")
        .add_file(make_file("w2.bin", b"\0\1\2\3\4\5\6"), "weights.bin"),
        producer=RunInfo("tracelet", "run-b"), inputs=[raw2], aliases=["staging"])

    found = any_store.diff("model:v1", "model:staging")
    assert isinstance(found, VersionDiff) and not found.identical
    data = found.to_dict()
    assert set(data) == {"files", "metadata", "tags", "aliases", "inputs", "producer", "content"}
    assert data["files"] == {"added": ["new.bin"], "removed": ["gone.bin"], "unchanged": 1,
                             "changed": [{"path": "weights.bin", "size_before": 5, "size_after": 7}]}
    assert data["metadata"] == {"params.lr": [0.1, 0.2], "team": ["x", None], "note": [None, "n"]}
    assert data["tags"] == {"new": [False, True], "old": [True, False]}
    assert data["aliases"] == {"production": [True, False], "staging": [False, True]}
    assert data["inputs"] == {"added": ["raw:v2"], "removed": ["raw:v1"]}
    before, after = data["producer"]
    assert (before["run_id"], after["run_id"]) == ("run-a", "run-b")
    assert data["content"] == {}  # binary: no format it reads, sizes only
    json.dumps(data, allow_nan=False)

    assert any_store.diff(a, b, content=False).content == {}
    same = any_store.diff(a, a)
    assert same.identical and same.files["changed"] == [] and same.files["unchanged"] == 3
    assert same.producer is None and same.metadata == {} and same.content == {}
    assert b.ref == "model:v2"


def test_diff_of_a_missing_version_says_so(store: ArtifactStore) -> None:
    store.log(TraceletArtifact("d", "dataset").add_object({"a": 1}, "cfg"))
    with pytest.raises(ArtifactNotFoundError):
        store.diff("d:v1", "d:v9")
    with pytest.raises(ArtifactNotFoundError):
        store.diff("nothing:v1", "d:v1")


def _two_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    before = pd.DataFrame({"x": [1, 2, 3, 4], "y": [1.0, None, 3.0, 5.0], "gone": ["a", "b", "c", "d"],
                           "label": ["p", "q", "r", "s"]})
    after = pd.DataFrame({"x": [2.0, 4.0, 6.0, 8.0, 10.0], "y": [None, None, 1.0, 2.0, 3.0], "new": [1, 1, 1, 1, 1],
                          "label": ["p", "q", "r", "s", "t"]})
    return before, after


TABLE_EXPECTED = {
    "kind": "table", "rows": [4, 5], "columns_added": ["new"], "columns_removed": ["gone"],
    "dtypes_changed": {"x": ["int64", "double"]},
    "stats": {"x": {"mean": [2.5, 6.0], "min": [1, 2.0], "max": [4, 10.0], "nulls": [0, 0]},
              "y": {"mean": [3.0, 2.0], "min": [1.0, 1.0], "max": [5.0, 3.0], "nulls": [1, 2]}},
}


def test_tables_parquet_csv_and_dataframes(store: ArtifactStore, tmp_path: Path) -> None:
    versions = []
    for index, frame in enumerate(_two_tables()):
        folder = tmp_path / f"t{index}"
        folder.mkdir()
        frame.to_parquet(folder / "t.parquet", index=False)
        frame.to_csv(folder / "t.csv", index=False)
        artifact = TraceletArtifact("table", "dataset").add_file(folder / "t.parquet", "t.parquet")
        artifact.add_file(folder / "t.csv", "t.csv").add_object(frame, "frame", serializer="parquet")
        versions.append(store.log(artifact))
    content = store.diff(*versions).content
    assert content["t.parquet"] == TABLE_EXPECTED
    assert content["frame"] == TABLE_EXPECTED
    csv = content["t.csv"]  # integer columns are read as float64: a later float must not fail
    assert csv["rows"] == [4, 5] and csv["dtypes_changed"] == {"x": ["int64", "double"]}
    assert csv["stats"]["x"] == {"mean": [2.5, 6.0], "min": [1.0, 2.0], "max": [4.0, 10.0], "nulls": [0, 0]}
    assert csv["stats"]["y"] == TABLE_EXPECTED["stats"]["y"]  # type: ignore[index]


def test_objects_json_yaml_by_dotted_path(store: ArtifactStore, make_file: MakeFile) -> None:
    first = {"model": {"lr": 0.1, "layers": [1, 2]}, "seed": 1, "old": True}
    second = {"model": {"lr": 0.01, "layers": [1, 2, 3], "dropout": 0.5}, "seed": 1}
    versions = []
    for index, config in enumerate((first, second)):
        json_file = make_file(f"{index}/c.json", json.dumps(config))
        yaml_file = make_file(f"{index}/c.yaml", f"model:\n  lr: {config['model']['lr']}\nname: n{index}\n")
        versions.append(store.log(TraceletArtifact("cfg", "config").add_file(json_file, "c.json")
                                  .add_file(yaml_file, "c.yaml").add_object(config, "params")
                                  .add_object(config, "params_yaml", serializer="yaml")))
    content = store.diff(*versions).content
    expected = {"kind": "object", "changed": {"model.lr": [0.1, 0.01], "model.layers": [[1, 2], [1, 2, 3]]},
                "added": ["model.dropout"], "removed": ["old"]}
    assert content["c.json"] == expected and content["params"] == expected and content["params_yaml"] == expected
    assert content["c.yaml"] == {"kind": "object", "changed": {"model.lr": [0.1, 0.01], "name": ["n0", "n1"]},
                                 "added": [], "removed": []}


def test_arrays_tensors_and_state_dicts(store: ArtifactStore, tmp_path: Path) -> None:
    before = {"layer.weight": torch.zeros(2, 3), "layer.bias": torch.tensor([1.0, 2.0]), "old": torch.ones(1)}
    after = {"layer.weight": torch.full((2, 3), 0.25), "layer.bias": torch.tensor([1.0, 2.0, 3.0]),
             "new": torch.ones(1)}
    from safetensors.numpy import save_file

    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(tmp_path / "a.safetensors"))
    save_file({"w": np.full((2, 2), -1.5, dtype=np.float32)}, str(tmp_path / "b.safetensors"))
    torch.save({"step": 1, "w": torch.ones(3)}, tmp_path / "a.pt")
    torch.save({"step": 2, "w": torch.ones(3) * 3}, tmp_path / "b.pt")
    np.savez(tmp_path / "a.npz", w=np.arange(6.0).reshape(2, 3), gone=np.zeros(2))
    np.savez(tmp_path / "b.npz", w=np.arange(6.0).reshape(2, 3) * -1, extra=np.zeros(2))
    a = store.log(TraceletArtifact("net", "weights").add_object(before, "state", serializer="torch")
                  .add_object(np.array([1.0, 2.0, 3.0]), "vector", serializer="numpy")
                  .add_file(tmp_path / "a.npz", "arrays.npz").add_file(tmp_path / "a.safetensors", "w.safetensors")
                  .add_file(tmp_path / "a.pt", "ckpt.pt"))
    b = store.log(TraceletArtifact("net", "weights").add_object(after, "state", serializer="torch")
                  .add_object(np.array([1.0, 2.5, 1.0]), "vector", serializer="numpy")
                  .add_file(tmp_path / "b.npz", "arrays.npz").add_file(tmp_path / "b.safetensors", "w.safetensors")
                  .add_file(tmp_path / "b.pt", "ckpt.pt"))
    content = store.diff(a, b).content
    assert content["state"] == {"kind": "tensors", "added": ["new"], "removed": ["old"],
                                "shape_changed": {"layer.bias": [[2], [3]]}, "max_abs_diff": {"layer.weight": 0.25}}
    assert content["vector"] == {"kind": "tensors", "added": [], "removed": [], "shape_changed": {},
                                 "max_abs_diff": {"vector": 2.0}}
    assert content["arrays.npz"] == {"kind": "tensors", "added": ["extra"], "removed": ["gone"],
                                     "shape_changed": {}, "max_abs_diff": {"w": 10.0}}
    assert content["w.safetensors"]["max_abs_diff"] == {"w": 1.5}
    assert content["ckpt.pt"]["max_abs_diff"] == {"w": 2.0}  # read with weights_only: no code runs


def test_diff_reads_content_from_every_kind_of_storage(blob_location: StoreLocation) -> None:
    with blob_location.open() as store:
        a = store.log(TraceletArtifact("cfg", "config").add_object({"lr": 0.1, "seed": 1}, "params"))
        b = store.log(TraceletArtifact("cfg", "config").add_object({"lr": 0.3, "seed": 1}, "params"))
        assert store.diff(a.ref, b.ref).content == {
            "params": {"kind": "object", "changed": {"lr": [0.1, 0.3]}, "added": [], "removed": []}}


def test_text_is_a_bounded_unified_diff(store: ArtifactStore, make_file: MakeFile) -> None:
    a = store.log(TraceletArtifact("notes", "report").add_file(make_file("a/r.md", "title\nold line\nend\n"), "r.md")
                  .add_file(make_file("a/long.txt", "".join(f"a{i}\n" for i in range(500))), "long.txt")
                  .add_file(make_file("a/big.txt", "x" * (1 << 20)), "big.txt")
                  .add_file(make_file("a/blob.txt", b"\0\1binary"), "blob.txt")
                  .add_file(make_file("a/bad.json", "{not json\n"), "bad.json"))
    b = store.log(TraceletArtifact("notes", "report").add_file(make_file("b/r.md", "title\nnew line\nend\n"), "r.md")
                  .add_file(make_file("b/long.txt", "".join(f"b{i}\n" for i in range(500))), "long.txt")
                  .add_file(make_file("b/big.txt", "y" * (1 << 20)), "big.txt")
                  .add_file(make_file("b/blob.txt", b"\0\2binary"), "blob.txt")
                  .add_file(make_file("b/bad.json", "{still not json\n"), "bad.json"))
    content = store.diff(a, b).content
    assert content["r.md"] == {"kind": "text", "diff": "--- notes:v1/r.md\n+++ notes:v2/r.md\n@@ -1,3 +1,3 @@\n"
                                                        " title\n-old line\n+new line\n end"}
    lines = content["long.txt"]["diff"].splitlines()
    assert len(lines) == 200 and lines[-1] == "... (804 more lines)"  # 3 header lines + 1000 changes
    assert "big.txt" not in content and "blob.txt" not in content  # 1 MiB or more, binary: sizes only
    assert not (store.cache_dir / "notes" / "v1" / "big.txt").exists()  # too large: never fetched
    assert content["bad.json"]["kind"] == "text"  # not the JSON its name says: diffed as text
    changed = {c["path"] for c in store.diff(a, b).files["changed"]}
    assert changed == {"r.md", "long.txt", "big.txt", "blob.txt", "bad.json"}


def test_pickle_is_compared_by_digest_unless_allowed(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []
    import pickle

    real = pickle.load
    monkeypatch.setattr(pickle, "load", lambda *a, **k: loads.append("load") or real(*a, **k))
    a = store.log(TraceletArtifact("p", "custom").add_object({"a": {1, 2}}, "value", serializer="pickle"))
    b = store.log(TraceletArtifact("p", "custom").add_object({"a": {1, 3}}, "value", serializer="pickle"))
    found = store.diff(a, b)
    assert found.files["changed"][0]["path"] == "value.pkl" and found.content == {} and loads == []
    allowed = store.diff(a, b, allow_pickle=True).content["value"]
    assert allowed == {"kind": "object", "changed": {"a": ["{1, 2}", "{1, 3}"]}, "added": [], "removed": []}


def _write_table(path: Path, rows: int, factor: float, group: int = 100_000) -> None:
    schema = pa.schema([(c, pa.float64()) for c in "abcd"])
    with pq.ParquetWriter(path, schema) as writer:  # a row group at a time: never the whole table
        for start in range(0, rows, group):
            values = np.arange(start, min(start + group, rows), dtype=np.float64) * factor
            writer.write_table(pa.table({c: values for c in "abcd"}, schema=schema))


def test_table_diff_memory_stays_bounded(tmp_path: Path) -> None:
    """Two 128 MB tables (4M rows x 4 float64 columns, row groups of 100k rows) diff in a fresh
    process whose peak RSS grows by less than three quarters of ONE table (loading both would
    take twice a table), and pyarrow's allocator peaks under 32 MB. Measured after a warm-up
    diff of two small tables, which pays the fixed costs (thread pools, allocator arenas:
    about 45 MB whatever the table's size, 16 MB and 192 MB tables alike)."""
    rows = 4_000_000
    store_dir = tmp_path / "store"
    with ArtifactStore.open(store_dir) as store:
        for name, size in (("small", 1000), ("big", rows)):
            for factor in (1.0, 2.0):
                path = tmp_path / f"{name}.parquet"
                _write_table(path, size, factor)
                store.log(TraceletArtifact(name, "dataset").add_file(path, "t.parquet"))
                path.unlink()
    script = textwrap.dedent(f"""
        import json, resource
        import pyarrow as pa
        from tracelet_core import ArtifactStore
        store = ArtifactStore.open({str(store_dir)!r})
        store.diff("small:v1", "small:v2")
        store.get("big:v1").path("t.parquet"); store.get("big:v2").path("t.parquet")
        start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        found = store.diff("big:v1", "big:v2").content["t.parquet"]
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start
        print(json.dumps({{"found": found, "grown": grown, "arrow_peak": pa.default_memory_pool().max_memory()}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    stats = report["found"]["stats"]["a"]
    assert report["found"]["rows"] == [rows, rows]
    assert stats["max"] == [rows - 1.0, 2 * (rows - 1.0)] and stats["mean"] == [(rows - 1) / 2, rows - 1.0]
    assert report["arrow_peak"] < 32 * 1024 * 1024, report
    assert report["grown"] < rows * 4 * 8 * 3 // 4, report


def test_csv_diff_streams_in_blocks(tmp_path: Path) -> None:
    """Two CSV files of 3M rows (96 MB as float64 columns, 120 MB of text) diff with pyarrow's
    allocator peaking under 64 MB in a fresh process (1 MiB blocks; measured: ~41 MB here and
    ~40 MB for 12M rows, so the peak does not grow with the file)."""
    import pyarrow.csv as pacsv

    rows = 3_000_000
    store_dir = tmp_path / "store"
    with ArtifactStore.open(store_dir) as store:
        for factor in (1.0, 2.0):
            path = tmp_path / "t.csv"
            with pacsv.CSVWriter(path, pa.schema([(c, pa.float64()) for c in "abcd"])) as writer:
                for start in range(0, rows, 500_000):
                    values = (np.arange(start, start + 500_000, dtype=np.float64) + 0.5) * factor
                    writer.write_table(pa.table({c: values for c in "abcd"}))
            store.log(TraceletArtifact("csv", "dataset").add_file(path, "t.csv"))
            path.unlink()
    script = textwrap.dedent(f"""
        import json
        import pyarrow as pa
        from tracelet_core import ArtifactStore
        found = ArtifactStore.open({str(store_dir)!r}).diff("csv:v1", "csv:v2").content["t.csv"]
        print(json.dumps({{"found": found, "arrow_peak": pa.default_memory_pool().max_memory()}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    assert report["found"]["rows"] == [rows, rows]
    assert report["found"]["stats"]["d"]["max"] == [rows - 0.5, 2 * (rows - 0.5)]
    assert report["arrow_peak"] < 64 * 1024 * 1024, report


def test_cli_diff_plain_and_json(store_dir: Path, make_file: MakeFile) -> None:
    with ArtifactStore.open(store_dir) as store:
        store.log(TraceletArtifact("cfg", "config").add_object({"lr": 0.1, "n": 1}, "params")
                  .add_file(make_file("a.txt", "keep\n"), "a.txt"))
        store.log(TraceletArtifact("cfg", "config").add_object({"lr": 0.2, "n": 1}, "params")
                  .add_file(make_file("a.txt", "keep\n"), "a.txt").add_file(make_file("b.txt", "b"), "b.txt"))
    runner = CliRunner()
    plain = runner.invoke(app, ["--store", str(store_dir), "diff", "cfg:v1", "cfg:v2"])
    assert plain.exit_code == 0, plain.output
    assert "cfg:v1 -> cfg:v2" in plain.stdout and " b.txt | added" in plain.stdout
    assert " params.json | 25 bytes -> 25 bytes" in plain.stdout
    assert "1 entry changed, 1 added, 0 removed, 1 unchanged" in plain.stdout
    assert "params (object)" in plain.stdout and "lr: 0.1 -> 0.2" in plain.stdout
    as_json = runner.invoke(app, ["diff", "cfg:v1", "cfg:v2", "--json", "--store", str(store_dir)])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["content"]["params"]["changed"] == {"lr": [0.1, 0.2]} and data["files"]["added"] == ["b.txt"]
    missing = runner.invoke(app, ["--store", str(store_dir), "diff", "cfg:v1", "cfg:v7"])
    assert missing.exit_code == 1 and missing.stderr.startswith("error:")
    nowhere = runner.invoke(app, ["--store", str(store_dir.parent / "none"), "diff", "a:v1", "a:v2"])
    assert nowhere.exit_code == 1 and not (store_dir.parent / "none").exists()


def test_values_differ_by_type_too(store: ArtifactStore) -> None:
    a = store.log(TraceletArtifact("c", "config", metadata={"flag": 1, "n": 2}).add_object({"x": 1, "y": 0}, "v"))
    b = store.log(TraceletArtifact("c", "config", metadata={"flag": True, "n": 2}).add_object({"x": 1.0, "y": 1}, "v"))
    found = store.diff(a, b)
    assert found.metadata == {"flag": [1, True]}
    assert found.content["v"]["changed"] == {"x": [1, 1.0], "y": [0, 1]}


def test_references_are_compared_by_their_recorded_checksum(store: ArtifactStore, make_file: MakeFile) -> None:
    remote = make_file("remote/data.csv", "a\n1\n")
    a = store.log(TraceletArtifact("ext", "dataset").add_reference(str(remote), name="data.csv"))
    remote.write_text("a\n1\n2\n")
    b = store.log(TraceletArtifact("ext", "dataset").add_reference(str(remote), name="data.csv"))
    found = store.diff(a, b)
    assert found.files["changed"] == [{"path": "data.csv", "size_before": 4, "size_after": 6}]
    assert found.content == {}  # a reference's bytes are not in the store: never fetched
