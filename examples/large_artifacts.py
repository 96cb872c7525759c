"""Large files and data sets (the Tracelet guide's "Performance Considerations").

A data set version made of small files that are stored (``dataset_info.json``, a ``sample.png``
preview), one large shard that is streamed from disk and hashed on the way (never loaded into
memory), and a reference to the complete data set elsewhere (its bytes are never copied; any
URI scheme). Logging the same content again returns the existing version, and a second name
holding the same shard stores no second copy: blobs are content-addressed. On its way to a
tracker, a file over 100 MB (or any file, with ``metadata["force_reference"]``) travels as a
reference to the store instead of an upload.

The shard is small by default; ``TRACELET_EXAMPLE_SHARD_MB=512`` makes it large.

    python examples/large_artifacts.py             # store: TRACELET_STORE_URI or ~/.tracelet/store
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tracelet_core import ArtifactType, Experiment, TraceletArtifact

MIB = 1 << 20


def write_shard(path: Path, megabytes: int, seed: int = 0) -> Path:
    """``megabytes`` of seeded random bytes, written one MiB at a time."""
    rng = np.random.default_rng(seed)
    with path.open("wb") as handle:
        for _ in range(megabytes):
            handle.write(rng.integers(0, 256, size=MIB, dtype=np.uint8).tobytes())
    return path


def blob_bytes(store_root: str) -> int:
    """Bytes under a local store's blob folder (what content addressing saves shows here)."""
    if not Path(store_root).is_dir():  # a remote store: not measured here
        return 0
    return sum(p.stat().st_size for p in Path(store_root, "blobs").rglob("*") if p.is_file())


def main() -> None:
    megabytes = int(os.environ.get("TRACELET_EXAMPLE_SHARD_MB", "4"))
    with tempfile.TemporaryDirectory() as scratch, Experiment("large_data") as exp:
        work = Path(scratch)
        print(f"store: {exp.store.uri}")
        (work / "dataset_info.json").write_text(json.dumps({"rows": megabytes * 1024, "format": "binary"}))
        Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8) + 128).save(work / "sample.png")
        shard = write_shard(work / "shard-000.bin", megabytes)

        def large_dataset() -> TraceletArtifact:
            artifact = exp.create_artifact("large_dataset", ArtifactType.DATASET, "shard 0 of the training set")
            artifact.add_file(work / "dataset_info.json").add_file(work / "sample.png")  # preview
            artifact.add_file(shard, "shards/shard-000.bin")
            artifact.add_reference("https://data.example.com/datasets/full-dataset.tar.gz",
                                   size_bytes=10_000_000_000, description="Complete training dataset")
            artifact.metadata["force_reference"] = True  # trackers get references to the store, not uploads
            return artifact

        started = time.perf_counter()
        first = exp.log_artifact(large_dataset())["local"]
        files = sum(f.size for f in exp.store.get(f"large_dataset:{first.version}").files)
        print(f"logged large_dataset:{first.version}: {files / MIB:.1f} MiB of files stored "
              f"in {time.perf_counter() - started:.2f} s (+ a 10 GB reference, not copied)")
        stored = blob_bytes(exp.store.uri)

        again = exp.log_artifact(large_dataset())["local"]
        print(f"logged the same content again: still {again.version} (no new version, nothing copied)")

        mirror = exp.create_artifact("large_dataset_mirror", ArtifactType.DATASET, "same shard, another name")
        exp.log_artifact(mirror.add_file(shard, "shard-000.bin"))
        grown = blob_bytes(exp.store.uri) - stored
        print(f"large_dataset_mirror holds the same {megabytes} MiB shard: the store grew by {grown} bytes")

        logged = exp.get_artifact("large_dataset")
        local_copy = logged.path("shards/shard-000.bin")  # verified against its digest, then cached
        reference = logged.references[0]
        print(f"read back {logged.ref}: {local_copy.stat().st_size / MIB:.1f} MiB at {local_copy}")
        print(f"reference {reference.name}: {reference.uri} ({reference.size:,} bytes, never downloaded)")


if __name__ == "__main__":
    main()
