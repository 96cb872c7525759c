"""``StatCache``: which digest a local file had when it was last logged, so re-logging a file
that did not change neither re-reads nor re-copies it.

An entry maps ``(path, size, mtime_ns, inode, device)`` to the file's digest. It lives in a
small SQLite file on this machine (``<cache dir>/statcache.db``: inside a local store, or the
local cache folder of a remote one), never in the shared catalog: inode and device numbers
mean nothing on another machine.

Git's racy-timestamp rule: a file whose mtime is within the timestamp granularity of the
moment it was hashed could be modified again without its mtime changing, so it is not
cached (the next log hashes it again, and caches it then). An entry is only recorded when
the file's stat was the same before and after it was read. A broken or unwritable cache
file only turns the cache off; it never fails a log.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

#: How close to the hashing moment an mtime may be before the entry is not trusted: file
#: systems stamp times from a coarse clock (a scheduler tick), network file systems from
#: the server's; whole-second timestamps (FAT, some NFS setups) get two seconds.
RACY_WINDOW_NS = 100_000_000
RACY_WINDOW_WHOLE_SECONDS_NS = 2_000_000_000

_SCHEMA = """CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL, device INTEGER NOT NULL, digest TEXT NOT NULL,
    recorded_ns INTEGER NOT NULL)"""


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev


def is_racy(st: os.stat_result, hashed_at_ns: int) -> bool:
    """Whether a file hashed at ``hashed_at_ns`` may change later without a new mtime."""
    window = RACY_WINDOW_WHOLE_SECONDS_NS if st.st_mtime_ns % 1_000_000_000 == 0 else RACY_WINDOW_NS
    return hashed_at_ns - st.st_mtime_ns <= window


class StatCache:
    """Per-machine ``stat -> digest`` cache in a SQLite file; safe across threads and
    processes (one connection per thread; a busy file is a miss, never a wait of minutes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._disabled = False

    def _connection(self) -> sqlite3.Connection | None:
        if self._disabled:
            return None
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=5, isolation_level=None, check_same_thread=False)
            # the rollback journal, not WAL: no -wal/-shm files that outlive a connection; a
            # cache: losing the last rows is harmless, a busy writer is a cache miss
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
        except (OSError, sqlite3.Error):
            self._disabled = True
            return None
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def lookup(self, path: Path, st: os.stat_result) -> str | None:
        """The digest recorded for ``path`` if its stat still matches, else None."""
        conn = self._connection()
        if conn is None:
            return None
        try:
            row = conn.execute("SELECT digest FROM files WHERE path = ? AND size = ? AND mtime_ns = ? "
                               "AND inode = ? AND device = ?", (str(path), *_key(st))).fetchone()
        except sqlite3.Error:
            return None
        return str(row[0]) if row else None

    def remember(self, path: Path, before: os.stat_result, digest: str, hashed_at_ns: int) -> None:
        """Note ``digest`` for ``path`` (whose stat was ``before`` when reading began at
        ``hashed_at_ns``), unless the file changed while it was read or its mtime is racy;
        ``save`` writes what this thread noted, in one transaction."""
        try:
            after = os.stat(path)
        except OSError:
            after = None
        trusted = after is not None and _key(after) == _key(before) and not is_racy(before, hashed_at_ns)
        pending: list[tuple[str, tuple[int, int, int, int], str | None]] = self._pending()
        pending.append((str(path), _key(before), digest if trusted else None))

    def _pending(self) -> list[tuple[str, tuple[int, int, int, int], str | None]]:
        if not hasattr(self._local, "pending"):
            self._local.pending = []
        pending: list[tuple[str, tuple[int, int, int, int], str | None]] = self._local.pending
        return pending

    def save(self) -> None:
        """Write the entries this thread noted (and drop the untrusted ones' old rows)."""
        pending = self._pending()
        if not pending:
            return
        self._local.pending = []
        conn = self._connection()
        if conn is None:
            return
        now = time.time_ns()
        keep = [(path, *key, digest, now) for path, key, digest in pending if digest is not None]
        drop = [(path,) for path, _, digest in pending if digest is None]
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if keep:
                    conn.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", keep)
                if drop:
                    conn.executemany("DELETE FROM files WHERE path = ?", drop)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error:
            return

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        self._local = threading.local()
