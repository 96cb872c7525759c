"""Reading from a store someone tampered with: nothing runs, nothing is returned silently."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from support import MakeFile

from tracelet_core import (
    ArtifactStore,
    IntegrityError,
    LoggedArtifact,
    TraceletArtifact,
    UnsafeDeserializationError,
)
from tracelet_core._hashing import hash_file


class Exploit:
    """Unpickling this touches a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def plant_object(store: ArtifactStore, tmp_path: Path, payload: bytes, serializer: str) -> LoggedArtifact:
    """A version whose object entry holds ``payload`` with a *matching* digest: what an attacker
    who can write the store and the catalog could produce."""
    source = tmp_path / "planted.bin"
    source.write_bytes(payload)
    digest, size = hash_file(source)
    store.blobs.put_file(source, digest, size)
    entry = {"kind": "object", "name": "value", "path": "value.bin", "serializer": serializer,
             "size": size, "digest": digest, "python_type": None, "description": None, "extra": {}}
    return store._commit(name="planted", type_="custom", description=None, metadata={}, entry_dicts=[entry],
                         producer=None, input_refs=[], aliases=[], idempotency_key=None)


def test_a_planted_pickle_is_refused_unless_allowed(store: ArtifactStore, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    planted = plant_object(store, tmp_path, pickle.dumps(Exploit(marker)), "pickle")
    with pytest.raises(UnsafeDeserializationError):
        planted.load()
    assert not marker.exists()


def test_a_swapped_pickle_blob_is_caught_by_its_digest_before_loading(store: ArtifactStore, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    logged = store.log(TraceletArtifact("p").add_object({"safe": True}, "value", "pickle"))
    blob = Path(store.blobs.blob_path(logged.objects[0].digest or ""))
    os.chmod(blob, 0o644)
    blob.write_bytes(pickle.dumps(Exploit(marker)))
    with pytest.raises(IntegrityError) as info:
        logged.load(allow_pickle=True)  # even a trusted store is verified first
    assert info.value.problems and info.value.problems[0].startswith("value.pkl")
    assert not marker.exists()


def test_torch_entries_load_only_with_weights_only(store: ArtifactStore, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    raw = tmp_path / "evil.pt"
    torch.save({"weights": torch.ones(2), "payload": Exploit(marker)}, raw)
    planted = plant_object(store, tmp_path, raw.read_bytes(), "torch")
    with pytest.raises(UnsafeDeserializationError, match="weights_only"):
        planted.load()
    assert not marker.exists()


def test_bytes_that_match_their_digest_but_do_not_parse_raise_integrity_error(store: ArtifactStore,
                                                                              tmp_path: Path) -> None:
    planted = plant_object(store, tmp_path, b"{not json", "json")
    with pytest.raises(IntegrityError, match="cannot be read back as 'json'"):
        planted.load()


def test_a_changed_reference_is_reported_on_download(store: ArtifactStore, make_file: MakeFile,
                                                     tmp_path: Path) -> None:
    remote = make_file("remote/data.csv", "a,b\n1,2\n")
    logged = store.log(TraceletArtifact("ref", "dataset").add_reference(remote.as_uri(), name="data.csv"))
    dest = logged.download(tmp_path / "ok", references=True)
    assert (dest / "data.csv").read_text() == "a,b\n1,2\n"
    assert not (logged.download(tmp_path / "no-refs") / "data.csv").exists()
    remote.write_text("a,b\n1,2\n3,4\n")  # the referenced object changed after logging
    with pytest.raises(IntegrityError) as info:
        logged.download(tmp_path / "changed", references=True)
    assert info.value.problems[0].startswith("data.csv: ")
    assert not (tmp_path / "changed" / "data.csv").exists()
