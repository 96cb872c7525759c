"""Streaming content digests (BLAKE3), written as ``blake3:<hex>``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO

from blake3 import blake3

ALGORITHM = "blake3"
CHUNK_SIZE = 1 << 20
_PARALLEL_THRESHOLD = 64 << 20


def new_hasher(expected_size: int = 0) -> Any:
    """A BLAKE3 hasher; large inputs hash on several threads."""
    return blake3(max_threads=blake3.AUTO) if expected_size >= _PARALLEL_THRESHOLD else blake3()


def format_digest(hasher: Any) -> str:
    return f"{ALGORITHM}:{hasher.hexdigest()}"


def hash_stream(stream: BinaryIO, expected_size: int = 0) -> tuple[str, int]:
    """Digest and byte count of everything left in ``stream``, read in chunks."""
    hasher = new_hasher(expected_size)
    size = 0
    while chunk := stream.read(CHUNK_SIZE):
        hasher.update(chunk)
        size += len(chunk)
    return format_digest(hasher), size


def hash_file(path: Path) -> tuple[str, int]:
    """Digest and size of a local file, streamed (memory-mapped when large)."""
    size = path.stat().st_size
    if size >= _PARALLEL_THRESHOLD:
        hasher = new_hasher(size)
        hasher.update_mmap(path)
        return format_digest(hasher), size
    with path.open("rb") as stream:
        return hash_stream(stream, size)


def hash_bytes(data: bytes) -> str:
    return format_digest(blake3(data))


def hash_json(value: Any) -> str:
    """Digest of a JSON value in canonical form (sorted keys, no whitespace)."""
    return hash_bytes(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


def split_digest(digest: str) -> tuple[str, str]:
    """``blake3:abc...`` -> (``blake3``, ``abc...``); refuses anything malformed."""
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != ALGORITHM or len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
        raise ValueError(f"malformed digest {digest!r}")
    return algorithm, hexdigest
