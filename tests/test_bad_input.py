"""Bad input is refused with the contract's exception class and leaves the store unchanged.

Every refusal here is checked twice: the exact ``TraceletError`` subclass the contract names,
and a byte-for-byte snapshot of the store folder plus the catalog's contents (every name,
version, alias and open draft) taken before and after the call.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from store_snapshots import snapshot_tree
from support import MakeFile

from tracelet_core import (
    ArtifactFile,
    ArtifactNotFoundError,
    ArtifactObject,
    ArtifactStore,
    IntegrityError,
    InvalidArtifactError,
    LoggedArtifact,
    TraceletArtifact,
    TraceletError,
    UnsafeDeserializationError,
)

#: Names and paths an attacker or a careless caller might hand us. None of them may ever
#: become an artifact name or a path inside an artifact.
TRAVERSAL = [
    "..",
    "../../x",
    "a/../../x",
    "/etc/passwd",
    "C:\\x",
    "C:/x",
    "a\\b",
    "..\\..\\x",
    "a\x00b",
    "%2e%2e/x",
    "%2E%2E%2Fx",
    "%252e%252e%252f",
    "..%2f..%2fx",
    "file:///etc/",
    "//proc/self/root",
    "http:///#/../../etc/",
    "a//b",
    "a/",
    "~/x",
]
BAD_NAMES = [*TRAVERSAL, "", "/a", ".hidden", "-dash", "a b", "a/./b", "a:b",
             "x" * 201, "a/" + "b" * 199]
BAD_PATHS = [*TRAVERSAL, "", ".", "./", "a/%00b", "a\tb", "x/" * 600]
BAD_ALIASES = ["latest", "v3", "v1", "a/b", "", "-x", ".x", "a b", "a:b", "a\x00", "x" * 129]


# -- helpers --------------------------------------------------------------------------------
def catalog_state(store: ArtifactStore) -> dict[str, Any]:
    """Everything the catalog shows: each name's versions (with aliases, entries, lineage)
    and every open draft."""
    return {
        "names": {a.name: [v.to_dict() for v in store.versions(a.name)] for a in store.list()},
        "drafts": store.drafts(),
    }


@contextmanager
def unchanged(store: ArtifactStore, store_dir: Path) -> Iterator[None]:
    """Assert that the block changes neither a byte under ``store_dir`` nor the catalog."""
    tree, catalog = snapshot_tree(store_dir), catalog_state(store)
    yield
    assert snapshot_tree(store_dir) == tree
    assert catalog_state(store) == catalog


def blob_file(store_dir: Path, digest: str) -> Path:
    hexdigest = digest.split(":", 1)[1]
    return store_dir / "blobs" / hexdigest[:2] / hexdigest  # the documented layout


@pytest.fixture
def populated(store: ArtifactStore, make_file: MakeFile) -> list[LoggedArtifact]:
    """Two names, three versions, an alias, an object and a reference."""
    raw = store.log(TraceletArtifact("data/raw", "dataset").add_file(make_file("raw.csv", "a,b\n1,2\n")))
    v1 = store.log(TraceletArtifact("data/set", "dataset").add_file(make_file("v1.csv", "x\n1\n"), "table.csv")
                   .add_object({"rows": 1}, "stats"), inputs=[raw], aliases=["best"])
    v2 = store.log(TraceletArtifact("data/set", "dataset").add_file(make_file("v2.csv", "x\n2\n"), "table.csv")
                   .add_reference("https://example.com/data/set.csv"), inputs=[raw])
    return [raw, v1, v2]


# -- names ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BAD_NAMES)
def test_artifact_constructor_rejects_bad_names(name: str) -> None:
    with pytest.raises(InvalidArtifactError):
        TraceletArtifact(name, "dataset")


def test_a_name_of_exactly_200_characters_is_accepted_and_201_refused() -> None:
    assert TraceletArtifact("a" * 200).name == "a" * 200
    assert TraceletArtifact("a/" * 99 + "bb").name == "a/" * 99 + "bb"
    with pytest.raises(InvalidArtifactError, match="200"):
        TraceletArtifact("a" * 201)


@pytest.mark.parametrize("name", [n for n in BAD_NAMES if n != "a:b"])  # "a:b" is a valid ref
def test_store_lookups_reject_bad_names(name: str, store: ArtifactStore, store_dir: Path,
                                        populated: list[LoggedArtifact]) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.get(name),
        lambda: store.get(name, version="v1"),
        lambda: store.versions(name),
        lambda: store.list(name),
        lambda: store.set_alias(f"{name}:v1", "best"),
        lambda: store.remove_alias(name, "best"),
        lambda: store.lineage(name),
        lambda: store.verify(name),
        lambda: store.finish(name, "group"),
    ]
    for call in calls:
        with unchanged(store, store_dir), pytest.raises(InvalidArtifactError):
            call()


# -- paths inside an artifact ---------------------------------------------------------------
@pytest.mark.parametrize("path", BAD_PATHS)
def test_add_file_rejects_bad_artifact_paths(path: str, make_file: MakeFile) -> None:
    artifact = TraceletArtifact("ok")
    with pytest.raises(InvalidArtifactError):
        artifact.add_file(make_file("f.txt"), artifact_path=path)
    assert artifact.files == [] and artifact.size_bytes == 0


@pytest.mark.parametrize("path", [p for p in BAD_PATHS if p])  # "" means "no prefix" for add_dir
def test_add_dir_rejects_bad_artifact_paths(path: str, make_file: MakeFile) -> None:
    folder = make_file("dir/a.txt").parent
    artifact = TraceletArtifact("ok")
    with pytest.raises(InvalidArtifactError):
        artifact.add_dir(folder, artifact_path=path)
    assert artifact.files == []


@pytest.mark.parametrize("path", BAD_PATHS)
def test_add_object_rejects_bad_object_names(path: str) -> None:
    artifact = TraceletArtifact("ok")
    with pytest.raises(InvalidArtifactError):
        artifact.add_object({"a": 1}, path)
    assert artifact.objects == []


@pytest.mark.parametrize("path", [p for p in BAD_PATHS if p])  # "" means "derive from the URI"
def test_add_reference_rejects_bad_reference_names(path: str) -> None:
    artifact = TraceletArtifact("ok")
    with pytest.raises(InvalidArtifactError):
        artifact.add_reference("https://example.com/a.bin", name=path)
    assert artifact.references == []


@pytest.mark.parametrize("path", BAD_PATHS)
def test_logged_path_rejects_bad_artifact_paths(path: str, store: ArtifactStore, store_dir: Path,
                                                populated: list[LoggedArtifact]) -> None:
    with unchanged(store, store_dir), pytest.raises(InvalidArtifactError):
        populated[1].path(path)


@pytest.mark.parametrize("filename", ["back\\slash.txt", "c:colon.txt", "%2e%2e", "%252e%252e",
                                      "tab\tname.txt"])
def test_add_dir_rejects_files_whose_names_are_not_portable_paths(filename: str, make_file: MakeFile) -> None:
    folder = make_file("dir/fine.txt").parent
    (folder / filename).write_bytes(b"x")
    artifact = TraceletArtifact("ok")
    with pytest.raises(InvalidArtifactError):
        artifact.add_dir(folder)
    assert artifact.files == []  # all or nothing


# -- local files and folders ----------------------------------------------------------------
def test_add_file_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidArtifactError, match="does not exist"):
        TraceletArtifact("ok").add_file(tmp_path / "nope.bin")


def test_add_file_rejects_a_directory(make_file: MakeFile) -> None:
    folder = make_file("dir/a.txt").parent
    with pytest.raises(InvalidArtifactError, match="not a regular file"):
        TraceletArtifact("ok").add_file(folder)


def test_add_dir_rejects_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidArtifactError):
        TraceletArtifact("ok").add_dir(tmp_path / "nope")


def test_add_dir_rejects_a_file(make_file: MakeFile) -> None:
    with pytest.raises(InvalidArtifactError):
        TraceletArtifact("ok").add_dir(make_file("a.txt"))


def test_log_rejects_a_file_deleted_after_it_was_added(store: ArtifactStore, store_dir: Path,
                                                       make_file: MakeFile,
                                                       populated: list[LoggedArtifact]) -> None:
    source = make_file("gone.bin", b"soon gone")
    artifact = TraceletArtifact("data/set", "dataset").add_file(source)
    source.unlink()
    with unchanged(store, store_dir), pytest.raises(InvalidArtifactError):
        store.log(artifact)


def test_log_rejects_a_file_replaced_by_a_directory(store: ArtifactStore, store_dir: Path,
                                                    make_file: MakeFile,
                                                    populated: list[LoggedArtifact]) -> None:
    source = make_file("swapped", b"file for now")
    artifact = TraceletArtifact("data/set", "dataset").add_file(source)
    source.unlink()
    source.mkdir()
    with unchanged(store, store_dir), pytest.raises(InvalidArtifactError):
        store.log(artifact)


@pytest.mark.parametrize("target_kind", ["file", "dir"])
def test_add_dir_rejects_a_symlink_pointing_outside(target_kind: str, tmp_path: Path, make_file: MakeFile,
                                                    store: ArtifactStore, store_dir: Path) -> None:
    secret = make_file("outside/secret.txt", b"TOP-SECRET-OUTSIDE")
    folder = make_file("inside/fine.txt", b"fine").parent
    (folder / "escape").symlink_to(secret if target_kind == "file" else secret.parent)
    artifact = TraceletArtifact("ok")
    with unchanged(store, store_dir), pytest.raises(InvalidArtifactError, match="outside"):
        artifact.add_dir(folder)
    assert artifact.files == []  # refused as a whole, nothing half-added
    assert all(b"TOP-SECRET-OUTSIDE" not in data for data in snapshot_tree(store_dir).values())


def test_add_dir_rejects_a_relative_symlink_climbing_out(make_file: MakeFile) -> None:
    make_file("outside.txt", b"outside")
    folder = make_file("inside/deep/fine.txt").parent.parent
    (folder / "deep" / "up").symlink_to("../../outside.txt")
    with pytest.raises(InvalidArtifactError):
        TraceletArtifact("ok").add_dir(folder)


def test_add_dir_rejects_a_dangling_symlink(make_file: MakeFile) -> None:
    folder = make_file("inside/fine.txt").parent
    (folder / "dangling").symlink_to(folder / "missing.txt")
    with pytest.raises(InvalidArtifactError):
        TraceletArtifact("ok").add_dir(folder)


def test_add_dir_rejects_a_symlink_loop(make_file: MakeFile) -> None:
    folder = make_file("inside/fine.txt").parent
    (folder / "loop").symlink_to("loop")
    with pytest.raises(InvalidArtifactError):
        TraceletArtifact("ok").add_dir(folder)


def test_add_dir_accepts_symlinks_pointing_inside(make_file: MakeFile, store: ArtifactStore,
                                                  tmp_path: Path) -> None:
    real = make_file("inside/real.txt", b"real bytes")
    folder = real.parent
    make_file("inside/sub/nested.txt", b"nested")
    (folder / "alias.txt").symlink_to("real.txt")
    (folder / "subalias").symlink_to(folder / "sub")
    logged = store.log(TraceletArtifact("linked").add_dir(folder))
    assert sorted(f.path for f in logged.files) == ["alias.txt", "real.txt", "sub/nested.txt"]
    out = logged.download(tmp_path / "out")
    assert (out / "alias.txt").read_bytes() == b"real bytes"
    assert not (out / "alias.txt").is_symlink()


# -- objects and serializers ----------------------------------------------------------------
class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


UNSERIALIZABLE: dict[str, tuple[Callable[[], Any], str]] = {
    "set-json": (lambda: {1, 2}, "json"),
    "nan-json": (lambda: {"loss": float("nan")}, "json"),
    "bytes-json": (lambda: b"raw", "json"),
    "object-yaml": (lambda: object(), "yaml"),
    "object-array-numpy": (lambda: np.array([object(), None], dtype=object), "numpy"),
    "list-numpy": (lambda: [1, 2, 3], "numpy"),
    "lambda-pickle": (lambda: (lambda x: x), "pickle"),
    "lambda-auto": (lambda: (lambda x: x), "auto"),
    "module-torch": (lambda: TinyNet(), "torch"),
    "module-in-dict-torch": (lambda: {"net": TinyNet()}, "torch"),
    "string-parquet": (lambda: "not a frame", "parquet"),
    "unknown-serializer": (lambda: {"a": 1}, "no-such-serializer"),
    "empty-serializer": (lambda: {"a": 1}, ""),
}


@pytest.mark.parametrize("case", sorted(UNSERIALIZABLE))
def test_add_object_rejects_what_the_serializer_cannot_write(case: str, store: ArtifactStore,
                                                             store_dir: Path,
                                                             populated: list[LoggedArtifact]) -> None:
    factory, serializer = UNSERIALIZABLE[case]
    artifact = TraceletArtifact("data/set", "dataset")
    with unchanged(store, store_dir), pytest.raises(InvalidArtifactError):
        artifact.add_object(factory(), "thing", serializer=serializer)
    assert artifact.objects == [] and artifact.size_bytes == 0
    assert not [p for p in artifact._staged_files or [] if p.exists()]  # no half-written temp file


def test_pickle_load_is_refused_unless_allowed(store: ArtifactStore, store_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    logged = store.log(TraceletArtifact("pickled").add_object({"a", "b"}, "payload", "pickle"))
    with unchanged(store, store_dir), pytest.raises(UnsafeDeserializationError):
        logged.load()
    with unchanged(store, store_dir), pytest.raises(UnsafeDeserializationError):
        store.get("pickled").load("payload", allow_pickle=False)
    assert logged.load(allow_pickle=True) == {"a", "b"}
    monkeypatch.setenv("TRACELET_ALLOW_PICKLE", "true")
    with ArtifactStore.open(store_dir) as trusting:
        assert trusting.get("pickled").load() == {"a", "b"}
        with pytest.raises(UnsafeDeserializationError):  # an explicit False still wins
            trusting.get("pickled").load(allow_pickle=False)


@pytest.mark.parametrize("metadata", [{"x": object()}, {"x": float("nan")}, {"x": {1, 2}},
                                      {"x": b"bytes"}, {"x": float("inf")}])
def test_log_and_upsert_reject_non_json_metadata(metadata: dict[str, Any], store: ArtifactStore,
                                                 store_dir: Path, make_file: MakeFile,
                                                 populated: list[LoggedArtifact]) -> None:
    artifact = TraceletArtifact("data/set", "dataset", metadata=metadata).add_file(make_file("m.csv", "new"))
    with unchanged(store, store_dir), pytest.raises(InvalidArtifactError, match="metadata"):
        store.log(artifact)
    with unchanged(store, store_dir), pytest.raises(InvalidArtifactError, match="metadata"):
        store.upsert(artifact, group="g")


def test_log_rejects_what_is_not_an_artifact(store: ArtifactStore, store_dir: Path,
                                             populated: list[LoggedArtifact]) -> None:
    with unchanged(store, store_dir), pytest.raises(InvalidArtifactError):
        store.log({"name": "data/set"})  # type: ignore[arg-type]


@pytest.mark.parametrize("artifact_type", ["bogus", "", "MODEL ", None])
def test_unknown_artifact_types_are_refused(artifact_type: Any) -> None:
    with pytest.raises(InvalidArtifactError):
        TraceletArtifact("ok", artifact_type)


# -- refs to what does not exist ------------------------------------------------------------
@pytest.mark.parametrize("ref", ["nope", "nope:v1", "nope:latest", "data/set:v9", "data/set:v0",
                                 "data/set:production", "data", "data/set/deeper"])
def test_get_of_a_missing_name_version_or_alias_raises_not_found(ref: str, store: ArtifactStore,
                                                                  store_dir: Path,
                                                                  populated: list[LoggedArtifact]) -> None:
    with unchanged(store, store_dir):
        with pytest.raises(ArtifactNotFoundError) as raised:
            store.get(ref)
        assert isinstance(raised.value, KeyError)
        assert str(raised.value)  # a readable message, not an empty KeyError


def test_every_lookup_of_something_missing_raises_not_found(store: ArtifactStore, store_dir: Path,
                                                            populated: list[LoggedArtifact]) -> None:
    v2 = populated[2]
    calls: list[Callable[[], object]] = [
        lambda: store.get("data/set", version="v9"),
        lambda: store.get("data/set", version="production"),
        lambda: store.versions("nope"),
        lambda: store.set_alias("nope:v1", "best"),
        lambda: store.set_alias("data/set:v9", "best"),
        lambda: store.set_alias("data/set:missing-alias", "best"),
        lambda: store.remove_alias("data/set", "never-set"),
        lambda: store.remove_alias("nope", "best"),
        lambda: store.lineage("data/set:v9"),
        lambda: store.lineage("nope", direction="downstream"),
        lambda: store.verify("data/set:v9"),
        lambda: store.finish("data/set", "no-such-group"),
        lambda: v2.path("missing.csv"),
        lambda: v2.load("missing"),
        lambda: v2.load(),  # v2 holds no object
    ]
    for call in calls:
        with unchanged(store, store_dir), pytest.raises(ArtifactNotFoundError):
            call()


def test_set_alias_on_a_missing_version_leaves_the_alias_where_it_was(
        store: ArtifactStore, store_dir: Path, populated: list[LoggedArtifact]) -> None:
    with unchanged(store, store_dir), pytest.raises(ArtifactNotFoundError):
        store.set_alias("data/set:v3", "best")
    assert store.get("data/set:best").version == "v1"


def test_log_with_a_missing_input_raises_and_writes_nothing(store: ArtifactStore, store_dir: Path,
                                                           make_file: MakeFile,
                                                           populated: list[LoggedArtifact]) -> None:
    artifact = TraceletArtifact("data/set", "dataset").add_file(make_file("fresh.csv", "never stored"))
    with unchanged(store, store_dir), pytest.raises(ArtifactNotFoundError):
        store.log(artifact, inputs=["data/raw:v7"])


# -- aliases --------------------------------------------------------------------------------
@pytest.mark.parametrize("alias", BAD_ALIASES)
def test_invalid_aliases_are_refused_everywhere(alias: str, store: ArtifactStore, store_dir: Path,
                                                make_file: MakeFile,
                                                populated: list[LoggedArtifact]) -> None:
    store.upsert(TraceletArtifact("data/set", "dataset").add_file(make_file("part.csv", "p")), group="g")
    fresh = TraceletArtifact("data/set", "dataset").add_file(make_file("new.csv", "never logged"))
    calls: list[Callable[[], object]] = [
        lambda: store.set_alias("data/set:v1", alias),
        lambda: store.remove_alias("data/set", alias),
        lambda: store.log(fresh, aliases=[alias]),
        lambda: store.log(fresh, aliases=["fine", alias]),
        lambda: store.finish("data/set", "g", aliases=[alias]),
    ]
    for call in calls:
        with unchanged(store, store_dir), pytest.raises(InvalidArtifactError):
            call()
    assert [d.group for d in store.drafts()] == ["g"]  # the draft is still open


# -- corrupted, truncated and deleted blobs -------------------------------------------------
def _damage(path: Path, how: str) -> None:
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)  # blobs are read-only
    data = path.read_bytes()
    if how == "overwritten":
        path.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "emptied":
        path.write_bytes(b"")
    elif how == "deleted":
        path.unlink()
    else:  # pragma: no cover
        raise AssertionError(how)


@pytest.fixture
def damageable(store: ArtifactStore, make_file: MakeFile) -> LoggedArtifact:
    """A version with a nested file and an object, each in its own blob."""
    return store.log(TraceletArtifact("victim", "model")
                     .add_file(make_file("model.bin", os.urandom(3000)), "weights/model.bin")
                     .add_object({"layers": [4, 8, 4]}, "config"))


READS = ["store.verify", "store.verify(ref)", "LoggedArtifact.verify", "download", "path", "load"]
ENTRY_READS = [(entry, read) for entry in ("weights/model.bin", "config.json") for read in READS
               if read != "load" or entry == "config.json"]  # load() reads objects only


def _read(logged: LoggedArtifact, read: str, entry_path: str, dest: Path) -> object:
    if read == "store.verify":
        return logged.store.verify()
    if read == "store.verify(ref)":
        return logged.store.verify(logged.ref)
    if read == "LoggedArtifact.verify":
        logged.verify()
        return None
    if read == "download":
        return logged.download(dest)
    if read == "path":
        return logged.path(entry_path)
    return logged.load("config")


@pytest.mark.parametrize("how", ["overwritten", "truncated", "emptied", "deleted"])
@pytest.mark.parametrize(("entry_path", "read"), ENTRY_READS)
def test_a_damaged_blob_is_detected_by_every_read(how: str, entry_path: str, read: str,
                                                  damageable: LoggedArtifact, store: ArtifactStore,
                                                  store_dir: Path, tmp_path: Path) -> None:
    stored: list[ArtifactFile | ArtifactObject] = [*damageable.files, *damageable.objects]
    entry = next(e for e in stored if e.path == entry_path)
    assert entry.digest is not None
    _damage(blob_file(store_dir, entry.digest), how)
    dest = tmp_path / "dest"
    with unchanged(store, store_dir), pytest.raises(IntegrityError) as raised:
        _read(damageable, read, entry_path, dest)
    assert raised.value.problems, "IntegrityError.problems must list the bad entry"
    assert entry_path in "\n".join(raised.value.problems), (
        f"problems do not name {entry_path!r}: {raised.value.problems}")
    # nothing damaged was handed out, and no half-written temp file was left behind
    assert not (dest / entry_path).exists()
    assert not (store.cache_dir / "victim" / "v1" / entry_path).exists()
    if dest.exists():
        assert not [p for p in dest.rglob("*") if p.is_file() and p.name.endswith(".part")]


def test_verify_names_every_bad_entry_at_once(damageable: LoggedArtifact, store: ArtifactStore,
                                              store_dir: Path) -> None:
    file_entry, object_entry = damageable.files[0], damageable.objects[0]
    assert file_entry.digest and object_entry.digest
    _damage(blob_file(store_dir, file_entry.digest), "overwritten")
    _damage(blob_file(store_dir, object_entry.digest), "deleted")
    with pytest.raises(IntegrityError) as raised:
        store.verify()
    assert len(raised.value.problems) == 2
    assert any("weights/model.bin" in p for p in raised.value.problems)
    assert any("config.json" in p and "missing" in p for p in raised.value.problems)


def test_an_intact_version_still_reads_when_another_is_damaged(damageable: LoggedArtifact,
                                                               store: ArtifactStore, store_dir: Path,
                                                               make_file: MakeFile, tmp_path: Path) -> None:
    healthy = store.log(TraceletArtifact("healthy").add_file(make_file("ok.txt", b"fine")))
    assert damageable.files[0].digest is not None
    _damage(blob_file(store_dir, damageable.files[0].digest), "truncated")
    assert store.verify(healthy.ref) == [healthy.ref]
    assert (healthy.download(tmp_path / "h") / "ok.txt").read_bytes() == b"fine"
    with pytest.raises(IntegrityError) as raised:
        store.verify()
    assert all(p.startswith("victim:v1") for p in raised.value.problems)


# -- tampered manifests ---------------------------------------------------------------------
@pytest.mark.parametrize("how", ["edited", "reformatted", "appended", "garbage", "deleted"])
def test_a_tampered_manifest_is_reported_by_verify(how: str, damageable: LoggedArtifact,
                                                   store: ArtifactStore, store_dir: Path) -> None:
    manifest = store_dir / "manifests" / "victim" / "@v1.json"
    assert manifest.is_file()
    data = json.loads(manifest.read_bytes())
    if how == "edited":
        data["description"] = "rewritten by someone else"
        manifest.write_text(json.dumps(data, sort_keys=True, indent=1))
    elif how == "reformatted":  # same JSON value, different bytes
        manifest.write_text(json.dumps(data))
    elif how == "appended":
        manifest.write_bytes(manifest.read_bytes() + b"\n")
    elif how == "garbage":
        manifest.write_bytes(b"\x00not json")
    else:
        manifest.unlink()
    with pytest.raises(IntegrityError) as raised:
        store.verify()
    assert raised.value.problems and all("victim:v1" in p for p in raised.value.problems)
    assert any("manifest" in p for p in raised.value.problems)
    with pytest.raises(IntegrityError):
        damageable.verify()


def test_a_manifest_with_a_traversal_path_is_refused_by_reindex(damageable: LoggedArtifact,
                                                                store_dir: Path, tmp_path: Path) -> None:
    manifest = store_dir / "manifests" / "victim" / "@v1.json"
    data = json.loads(manifest.read_bytes())
    data["entries"][0]["path"] = "../../escaped.bin"
    manifest.write_text(json.dumps(data, sort_keys=True, indent=1))
    with ArtifactStore.open(store_dir, catalog_url=f"sqlite:///{tmp_path / 'fresh.db'}") as fresh:
        refs = fresh.reindex()  # skipped and reported, never restored
        assert refs == [] and len(refs.skipped) == 1 and "escapes the artifact" in refs.skipped[0]
        assert fresh.list() == []
    assert not list(tmp_path.rglob("escaped.bin"))


# -- download never writes outside its destination ------------------------------------------
@pytest.mark.parametrize("planted", ["../../escaped.bin", "sub/../../escaped.bin", "ABSOLUTE",
                                     "%2e%2e/%2e%2e/escaped.bin", "..\\..\\escaped.bin",
                                     "C:/escaped.bin", "//escaped.bin"])
def test_download_refuses_an_entry_path_planted_in_the_catalog(planted: str, damageable: LoggedArtifact,
                                                               store: ArtifactStore, store_dir: Path,
                                                               tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b" / "dest"
    if planted == "ABSOLUTE":
        planted = str(tmp_path / "escaped.bin")
    db = sqlite3.connect(store_dir / "catalog.db")
    try:
        with db:
            changed = db.execute("UPDATE entries SET data = json_set(data, '$.path', ?) WHERE path = ?",
                                 (planted, "weights/model.bin")).rowcount
        assert changed == 1
    finally:
        db.close()
    with pytest.raises(IntegrityError):
        store.get(damageable.ref).download(dest)
    assert not list(tmp_path.rglob("escaped.bin"))
    assert not dest.exists() or not [p for p in dest.rglob("*") if p.is_file()]


@pytest.mark.parametrize("link", ["weights", "weights/model.bin"])
def test_download_does_not_write_through_a_symlink_in_the_destination(link: str, damageable: LoggedArtifact,
                                                                      tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "model.bin").write_bytes(b"precious")
    dest.mkdir()
    if link == "weights":
        (dest / "weights").symlink_to(outside, target_is_directory=True)
    else:
        (dest / "weights").mkdir()
        (dest / "weights" / "model.bin").symlink_to(outside / "model.bin")
    with pytest.raises(InvalidArtifactError):
        damageable.download(dest)
    assert (outside / "model.bin").read_bytes() == b"precious"
    assert sorted(p.name for p in outside.iterdir()) == ["model.bin"]


# -- credentials in references --------------------------------------------------------------
def test_references_never_store_credentials(store: ArtifactStore, store_dir: Path) -> None:
    artifact = (TraceletArtifact("refs", "dataset")
                .add_reference("s3://key:secret@bucket/x", name="s3-object")
                .add_reference("https://user:token@host/x", name="https-object")
                .add_reference("https://alice:hunter2-pw@files.example.com/data.csv")
                .add_reference("https://files.example.com/signed.bin?X-Amz-Signature=sig-77ab"
                               "&X-Amz-Credential=cred-99cd&X-Amz-Security-Token=st-1234&part=3",
                               name="signed"))
    logged = store.log(artifact)
    uris = {r.name: r.uri for r in logged.references}
    assert uris["s3-object"] == "s3://bucket/x"
    assert uris["https-object"] == "https://host/x"
    assert uris["data.csv"] == "https://files.example.com/data.csv"
    assert uris["signed"] == "https://files.example.com/signed.bin?part=3"
    markers = [b"secret", b"token", b"Token", b"hunter2-pw", b"alice", b"sig-77ab", b"cred-99cd",
               b"st-1234"]
    manifest = (store_dir / "manifests" / "refs" / "@v1.json").read_bytes()
    catalog_files = [p for p in store_dir.iterdir() if p.name.startswith("catalog.db")]
    assert catalog_files
    for marker in markers:
        assert marker not in manifest, marker
        for catalog_file in catalog_files:
            assert marker not in catalog_file.read_bytes(), (marker, catalog_file.name)
        assert all(marker not in data for data in snapshot_tree(store_dir).values()), marker
        assert marker.decode() not in json.dumps(logged.to_dict())
        assert marker.decode() not in json.dumps(artifact.to_dict())


@pytest.mark.parametrize("uri", ["", "   ", "s3://bucket/\x00x", "https://host/a\nb"])
def test_add_reference_rejects_unusable_uris(uri: str) -> None:
    with pytest.raises(InvalidArtifactError):
        TraceletArtifact("ok").add_reference(uri)


# -- a failed call leaves everything usable -------------------------------------------------
def test_the_store_keeps_working_after_refusals(store: ArtifactStore, make_file: MakeFile,
                                                populated: list[LoggedArtifact]) -> None:
    for bad in ("../x", "a\x00b", "%2e%2e/x"):
        with pytest.raises(TraceletError):
            store.get(bad)
    logged = store.log(TraceletArtifact("data/set", "dataset").add_file(make_file("v3.csv", "x\n3\n"),
                                                                       "table.csv"))
    assert logged.version == "v3"
    assert store.get("data/set:best").version == "v1"
    assert store.verify() == ["data/raw:v1", "data/set:v1", "data/set:v2", "data/set:v3"]


@pytest.mark.parametrize("ref", ["big:v99999999999999999999", "big:v2147483648"])
def test_a_version_number_no_catalog_can_hold_is_not_found(ref: str, any_store: ArtifactStore,
                                                           make_file: MakeFile, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tracelet_core.cli import app

    any_store.log(TraceletArtifact("big").add_file(make_file("a.txt", "a")))
    with pytest.raises(ArtifactNotFoundError):
        any_store.get(ref)
    result = CliRunner().invoke(app, ["--store", str(any_store.blobs.root), "get", ref, "-o", str(tmp_path / "o")],
                                env={"TRACELET_CATALOG_URL": any_store.catalog._url})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1


# -- paths no filesystem can hold -------------------------------------------------------------
UNENCODABLE = ["caf\udce9.txt", "dir/\ud800", "\udcff/x.bin"]


@pytest.mark.parametrize("path", UNENCODABLE)
def test_an_unencodable_path_is_refused_up_front(path: str, store: ArtifactStore, store_dir: Path,
                                                 make_file: MakeFile) -> None:
    source = make_file("ok.txt", "x")
    with unchanged(store, store_dir):
        for add in (lambda: TraceletArtifact("u").add_file(source, path),
                    lambda: TraceletArtifact("u").add_object({"a": 1}, path),
                    lambda: TraceletArtifact("u").add_reference("s3://bucket/key", name=path)):
            with pytest.raises(InvalidArtifactError, match="not valid Unicode"):
                add()


def test_add_dir_over_a_latin1_file_name_is_refused_and_reindex_skips_a_planted_one(
        store: ArtifactStore, store_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "latin1"
    folder.mkdir()
    (folder / "plain.txt").write_text("fine")
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.txt"), "wb") as handle:
        handle.write(b"bytes under a Latin-1 name")
    with unchanged(store, store_dir), pytest.raises(InvalidArtifactError, match="not valid Unicode"):
        TraceletArtifact("latin").add_dir(folder)

    good = store.log(TraceletArtifact("good").add_file(folder / "plain.txt"))
    manifest = json.loads(Path(store.blobs.manifest_path("good", 1)).read_text())
    manifest["name"], manifest["entries"][0]["path"] = "planted", "caf\udce9.txt"
    planted = Path(store.blobs.manifest_path("planted", 1))
    planted.parent.mkdir(parents=True)
    planted.write_text(json.dumps(manifest))  # escapes the lone surrogate as \udce9
    from typer.testing import CliRunner

    from tracelet_core.cli import app

    rebuilt = tmp_path / "rebuilt.db"
    with ArtifactStore.open(store_dir, catalog_url=f"sqlite:///{rebuilt}") as fresh:
        refs = fresh.reindex()
        assert refs == [good.ref]
        assert len(refs.skipped) == 1 and "planted" in refs.skipped[0] and "Unicode" in refs.skipped[0]
    result = CliRunner().invoke(app, ["--store", str(store_dir), "reindex"],
                                env={"TRACELET_CATALOG_URL": f"sqlite:///{tmp_path / 'cli.db'}"})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.stderr  # not clean
    assert good.ref in result.stdout and "skipped " in result.stdout and "planted" in result.stdout
    assert result.stderr.startswith("error: the catalog was not clean") and len(result.stderr.splitlines()) == 1


def test_path_segments_are_limited_to_255_bytes_and_the_longest_ones_download(
        store: ArtifactStore, store_dir: Path, make_file: MakeFile, tmp_path: Path) -> None:
    source = make_file("ok.txt", "long names")
    longest = "\u00e9" * 127 + "a"  # 255 bytes in UTF-8 (128 characters)
    too_long = "\u00e9" * 128  # 256 bytes
    with unchanged(store, store_dir):
        for path in (too_long, f"dir/{too_long}", f"{'b' * 256}/x.txt", "c" * 256):
            with pytest.raises(InvalidArtifactError, match="at most 255"):
                TraceletArtifact("long").add_file(source, path)
            with pytest.raises(InvalidArtifactError, match="at most 255"):
                TraceletArtifact("long").add_object({"a": 1}, path)
    logged = store.log(TraceletArtifact("long").add_file(source, f"{'d' * 255}/{longest}")
                       .add_object({"a": 1}, "o" * 250))  # + ".json": 255 bytes
    out = logged.download(tmp_path / "dl")
    assert (out / ("d" * 255) / longest).read_text() == "long names"
    assert logged.load() == {"a": 1}
    assert logged.path(f"{'d' * 255}/{longest}").read_text() == "long names"


@pytest.mark.parametrize("options", ['{"key": "AKIAEXAMPLE", "secret": "hunter2-SECRET"',
                                     '["hunter2-SECRET"]', '"hunter2-SECRET"', "hunter2-SECRET"])
def test_a_malformed_storage_options_never_shows_its_secret(options: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import traceback

    from tracelet_core import ConfigurationError, TraceletSettings

    monkeypatch.setenv("TRACELET_STORAGE_OPTIONS", options)
    with pytest.raises(ConfigurationError, match="TRACELET_STORAGE_OPTIONS") as caught:
        TraceletSettings.load()
    shown = "".join(traceback.format_exception(caught.value))
    assert "hunter2" not in shown and "AKIA" not in shown
