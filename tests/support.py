"""Types and helpers the test modules share (the fixtures themselves live in ``conftest.py``).

Test modules import from here by name (``from support import MakeFile, free_port``): pytest puts
``tests/`` on ``sys.path`` because ``tests/conftest.py`` lives there, as for ``backend_support``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tracelet_core import ArtifactStore, TraceletSettings


class MakeFile(Protocol):
    """The ``make_file`` fixture: ``make_file("a/b.txt", b"bytes")`` writes a file under a
    scratch folder of the test and returns its path."""

    def __call__(self, relative: str, content: bytes | str = b"data") -> Path: ...


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class StoreLocation:
    """Where a store under test keeps its bytes, and the catalog it pairs with.

    ``fs`` and ``root`` read the bytes independently of the store (its own filesystem object
    is not consulted), so a test can check what really landed on the disk or in the bucket.
    ``kind`` is ``local``, ``s3`` or ``memory``; ``catalog`` is ``sqlite`` or ``postgresql``.
    """

    kind: str
    catalog: str
    uri: str
    catalog_url: str
    fs: Any  # fsspec.AbstractFileSystem
    root: str
    settings: TraceletSettings | None = None

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    @contextmanager
    def open(self, catalog_url: str | None = None) -> Iterator[ArtifactStore]:
        """The store at this location, on this location's catalog unless another is given."""
        with ArtifactStore.open(self.uri, catalog_url=catalog_url or self.catalog_url,
                                settings=self.settings) as store:
            yield store

    def files(self, prefix: str) -> list[str]:
        """Every file under ``prefix`` (``blobs``, ``manifests``, ...) of the store, sorted."""
        self.fs.invalidate_cache()  # s3fs caches listings; a test reads what is there now
        base = f"{self.root}/{prefix}"
        return sorted(self.fs.find(base)) if self.fs.exists(base) else []

    def read(self, path: str) -> bytes:
        return bytes(self.fs.cat_file(path))
