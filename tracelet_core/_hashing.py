"""Streaming content digests (BLAKE3), written as ``blake3:<hex>``.

Files are read in chunks into one reused buffer (never memory-mapped whole: a mapped 4 GiB
file counts 4 GiB towards the process's peak RSS); large chunks are hashed on several
threads. ``copy_hashing`` hashes while it copies, so a new file is read exactly once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from blake3 import blake3

ALGORITHM = "blake3"
#: Read size for streams whose size is unknown or small (fits the CPU cache: the chunk is
#: hashed and written while it is still there).
CHUNK_SIZE = 1 << 20
#: Read size for large files hashed on several threads: each thread gets a large share;
#: memory stays flat (one buffer per copy).
LARGE_CHUNK_SIZE = 4 << 20
_PARALLEL_THRESHOLD = 64 << 20


def _hash_threads() -> int:
    """Threads for hashing large files: half the usable cores, at most 8. With two cores or
    fewer, one: measured on a busy 2-core machine, extra hashing threads made a 256 MiB copy
    three times slower, as they only compete with the copy itself."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, usable // 2)) if usable > 2 else 1


HASH_THREADS = _hash_threads()


def new_hasher(expected_size: int = 0) -> Any:
    """A BLAKE3 hasher; large inputs hash on several threads where there are cores to spare."""
    if expected_size >= _PARALLEL_THRESHOLD and HASH_THREADS > 1:
        return blake3(max_threads=HASH_THREADS)
    return blake3()


def format_digest(hasher: Any) -> str:
    return f"{ALGORITHM}:{hasher.hexdigest()}"


def chunk_size_for(size_hint: int) -> int:
    return LARGE_CHUNK_SIZE if size_hint >= _PARALLEL_THRESHOLD and HASH_THREADS > 1 else CHUNK_SIZE


def copy_hashing(src: BinaryIO, dst: BinaryIO | None, size_hint: int = 0,
                 progress: Callable[[int], None] | None = None, *, limit: int | None = None) -> tuple[str, int]:
    """Read everything left in ``src`` once, hashing it and (unless ``dst`` is None) writing
    it to ``dst``; the digest and byte count of what was read. With ``limit``, reading stops
    after ``limit + 1`` bytes (the caller sees a count over the limit and refuses the stream)."""
    hasher = new_hasher(size_hint)
    buffer = bytearray(chunk_size_for(size_hint))
    view = memoryview(buffer)
    size = 0
    readinto = getattr(src, "readinto", None)
    while True:
        want = len(buffer) if limit is None else min(len(buffer), limit + 1 - size)
        if want <= 0:
            break
        if readinto is not None:
            count = readinto(view[:want])
            if not count:
                break
            chunk: Any = view[:count]
        else:  # streams without readinto (some fsspec files)
            chunk = src.read(want)
            if not chunk:
                break
            count = len(chunk)
        hasher.update(chunk)
        if dst is not None:
            dst.write(chunk)
        size += count
        if progress is not None:
            progress(count)
    return format_digest(hasher), size


def hash_stream(stream: BinaryIO, expected_size: int = 0) -> tuple[str, int]:
    """Digest and byte count of everything left in ``stream``, read in chunks."""
    return copy_hashing(stream, None, expected_size)


def hash_file(path: Path) -> tuple[str, int]:
    """Digest and size of a local file, streamed through one buffer."""
    with path.open("rb", buffering=0) as stream:
        return copy_hashing(stream, None, os.fstat(stream.fileno()).st_size)


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
