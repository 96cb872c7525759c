"""Streaming content digests (BLAKE3), written as ``blake3:<hex>``.

Files are read in chunks into one reused buffer (never memory-mapped whole: a mapped 4 GiB
file counts 4 GiB towards the process's peak RSS); large chunks are hashed on several
threads. ``copy_hashing`` hashes while it copies, so a new file is read exactly once;
``kernel_copy_hashing`` (local to local) lets the kernel copy on one thread while this one
hashes each copied chunk from the page cache, so a copy costs about what ``cp`` costs.
"""

from __future__ import annotations

import json
import os
import queue
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from blake3 import blake3

ALGORITHM = "blake3"
_HEX_DIGEST = re.compile("[0-9a-f]{64}")
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
    if algorithm != ALGORITHM or _HEX_DIGEST.fullmatch(hexdigest) is None:
        raise ValueError(f"malformed digest {digest!r}")
    return algorithm, hexdigest


#: Bytes the kernel copies per ``copy_file_range`` call in ``kernel_copy_hashing`` (the hash
#: thread reads each chunk right after it lands, from the page cache).
KERNEL_COPY_CHUNK = 8 << 20
#: Bytes the hashing side reads at a time (and the read/write fallback copies): the copy's chunk
#: lands in the page cache whole, and is hashed from there in reads this size (memory stays flat).
KERNEL_HASH_READ = 2 << 20
#: Local copies at least this large go through ``kernel_copy_hashing`` (below it, one thread's
#: start costs more than the overlap saves).
KERNEL_COPY_MIN_BYTES = 4 << 20
#: Whether ``kernel_copy_hashing`` can run here (POSIX positional reads and writes; the
#: kernel copy itself is optional: Linux has it).
KERNEL_COPY_AVAILABLE = all(hasattr(os, call) for call in ("readv", "preadv", "pwrite"))


def kernel_copy_hashing(src: int, dst: int, size_hint: int = 0, progress: Callable[[int], None] | None = None,
                        *, limit: int | None = None, chunk: int = KERNEL_COPY_CHUNK) -> tuple[str, int]:
    """Copy file ``src`` (an fd, from its current offset) to file ``dst`` (an fd, at offset 0)
    in the kernel (``copy_file_range``; a read/write loop where the kernel refuses it) on one
    thread, while this thread hashes the bytes *written to* ``dst`` as each chunk lands (from
    the page cache): the digest is that of what was copied, even if ``src`` changes meanwhile.
    Memory stays flat (one chunk buffer). The digest and byte count; with ``limit``, copying
    stops after ``limit + 1`` bytes (as ``copy_hashing``)."""
    landed: queue.SimpleQueue[int | BaseException | None] = queue.SimpleQueue()

    def copy() -> None:
        copied = 0
        in_kernel = hasattr(os, "copy_file_range")
        fallback: bytearray | None = None
        try:
            while True:
                want = chunk if limit is None else min(chunk, limit + 1 - copied)
                if want <= 0:
                    break
                count = 0
                if in_kernel:
                    try:
                        count = os.copy_file_range(src, dst, want, None, copied)
                    except OSError:  # EXDEV, ENOSYS, EINVAL...: the kernel cannot copy these two
                        if copied:  # a failure mid-copy is a real one
                            raise
                        in_kernel = False
                if not in_kernel:
                    fallback = fallback if fallback is not None else bytearray(min(chunk, KERNEL_HASH_READ))
                    count = os.readv(src, [memoryview(fallback)[:min(want, len(fallback))]])
                    written = 0
                    while written < count:
                        written += os.pwrite(dst, memoryview(fallback)[written:count], copied + written)
                if not count:
                    break
                copied += count
                landed.put(copied)
            landed.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the hashing thread, re-raised there
            landed.put(exc)

    copier = threading.Thread(target=copy, name="tracelet-copy", daemon=True)
    copier.start()
    hasher = new_hasher(size_hint)
    buffer = bytearray(min(chunk, KERNEL_HASH_READ))
    view = memoryview(buffer)
    hashed = 0
    try:
        while True:
            item = landed.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                break
            while hashed < item:
                count = os.preadv(dst, [view[:min(len(buffer), item - hashed)]], hashed)
                if not count:
                    raise OSError(f"copy target shorter than the {item} bytes copied")
                hasher.update(view[:count])
                hashed += count
                if progress is not None:
                    progress(count)
    finally:
        copier.join()
    return format_digest(hasher), hashed
