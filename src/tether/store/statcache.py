"""The stat cache: which content a file had when it last looked like this.

On disk, disposable (deleting it only costs re-hashing)::

    .tether/cache/stat.db      SQLite
      stat(path, ino, mtime_ns, size, digest)   path relative to the project, '/'-separated
      complete(digest, blobs_mtime_ns)          data roots whose every object was in the store
                                                while blobs/ had that mtime
      dirs(path, fingerprint, digest)           a tracked folder's tree digest when the
                                                stamps of all its files hashed to fingerprint

A lookup is trusted only when inode, mtime and size all match. An entry is not written
for a file modified less than ``RACY_NS`` before the scan started: a later write in the
same clock tick could leave mtime and size unchanged (git's "racily clean" problem), so
such files are hashed again next time instead.

Keys are project-relative, so the cache survives moving the project (DVC keys by
absolute path, which makes its state useless on another node).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple, TypeVar

from tether.hashing import Digest

T = TypeVar("T")

RACY_NS = 1_000_000_000  # one second covers coarse filesystem clocks and NFS skew

_VERSION = 3
_SCHEMA = """
CREATE TABLE IF NOT EXISTS stat (
    path TEXT PRIMARY KEY, ino INTEGER, mtime_ns INTEGER, size INTEGER, digest TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dirs (
    path TEXT PRIMARY KEY, fingerprint TEXT, digest TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS complete (
    digest TEXT PRIMARY KEY, blobs_mtime_ns INTEGER
) WITHOUT ROWID;
"""


class Stamp(NamedTuple):
    """What ``stat`` says about a file; equal stamps mean unchanged content. (A named
    tuple, not a dataclass: a scan makes one per file, and tuples are cheaper.)"""

    ino: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stamp:
        return cls(st.st_ino, st.st_mtime_ns, st.st_size)


class StatCache:
    """The cache; every method degrades to "nothing cached" when SQLite fails (a full
    disk, a read-only folder): a disposable cache never fails the command using it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._off = False

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._conn = self._open()
            except sqlite3.DatabaseError:
                # A damaged cache is thrown away, never repaired: it holds nothing that
                # cannot be recomputed.
                self._discard()
                self._conn = self._open()
        return self._conn

    def _discard(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(f"{self.path}{suffix}")

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")  # disposable: speed over durability
        if conn.execute("PRAGMA user_version").fetchone()[0] != _VERSION:
            # Another layout (older tether): start over rather than migrate a cache.
            conn.executescript(
                "DROP TABLE IF EXISTS stat; DROP TABLE IF EXISTS complete; "
                "DROP TABLE IF EXISTS dirs;"
            )
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {_VERSION}")
        return conn

    def _use(self, work: Callable[[sqlite3.Connection], T], default: T, *, write: bool) -> T:
        """Run ``work`` on the connection; on any SQLite or OS failure turn the cache off
        for this process and answer ``default`` (for a read: nothing known)."""
        if self._off:
            return default
        try:
            conn = self._connect()
            with self._lock:
                if not write:
                    return work(conn)
                with conn:
                    return work(conn)
        except (sqlite3.Error, OSError):
            self._off = True
            with contextlib.suppress(sqlite3.Error):
                self.close()
            return default

    def lookup_many(self, paths: list[str]) -> dict[str, tuple[Stamp, Digest]]:
        """Entries for exactly ``paths`` (a window of a walk), in few queries."""

        Row = tuple[str, int, int, int, str]

        def query(conn: sqlite3.Connection) -> list[Row]:
            rows: list[Row] = []
            for i in range(0, len(paths), 500):
                part = paths[i : i + 500]
                rows += conn.execute(
                    "SELECT path, ino, mtime_ns, size, digest FROM stat WHERE path IN "
                    f"({','.join('?' * len(part))})",
                    part,
                ).fetchall()
            return rows

        out: dict[str, tuple[Stamp, Digest]] = {}
        none: list[Row] = []
        for path, ino, mtime_ns, size, digest in self._use(query, none, write=False):
            with contextlib.suppress(Exception):
                out[path] = (Stamp(ino, mtime_ns, size), Digest(digest))
        return out

    def record(self, entries: Iterable[tuple[str, Stamp, Digest]], *, scan_start_ns: int) -> None:
        cutoff = scan_start_ns - RACY_NS
        rows = [
            (path, s.ino, s.mtime_ns, s.size, d.hex)
            for path, s, d in entries
            if s.mtime_ns < cutoff
        ]
        if rows:
            self._use(
                lambda conn: conn.executemany(
                    "INSERT OR REPLACE INTO stat VALUES (?, ?, ?, ?, ?)", rows
                ),
                None,
                write=True,
            )

    # A folder whose files all kept their stamps still has the tree it had: one lookup
    # instead of one row per file (the folder's "nothing changed" fast path).

    def lookup_dir(self, path: str, fingerprint: str) -> Digest | None:
        row = self._use(
            lambda conn: conn.execute(
                "SELECT digest FROM dirs WHERE path = ? AND fingerprint = ?", (path, fingerprint)
            ).fetchone(),
            None,
            write=False,
        )
        return Digest(row[0]) if row is not None else None

    def record_dir(self, path: str, fingerprint: str, digest: Digest) -> None:
        self._use(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO dirs VALUES (?, ?, ?)", (path, fingerprint, digest.hex)
            ),
            None,
            write=True,
        )

    # A completeness mark is only as good as the store directory it was checked against:
    # any blob added or removed (by tether or by hand) changes that directory's mtime.

    def is_complete(self, digest: Digest, blobs_mtime_ns: int) -> bool:
        row = self._use(
            lambda conn: conn.execute(
                "SELECT blobs_mtime_ns FROM complete WHERE digest = ?", (digest.hex,)
            ).fetchone(),
            None,
            write=False,
        )
        return row is not None and row[0] == blobs_mtime_ns

    def mark_complete(self, digest: Digest, blobs_mtime_ns: int) -> None:
        self._use(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO complete VALUES (?, ?)", (digest.hex, blobs_mtime_ns)
            ),
            None,
            write=True,
        )

    def forget_complete(self) -> None:
        """Called whenever blobs leave the store (gc, fsck quarantine)."""
        forgot = self._use(lambda conn: conn.execute("DELETE FROM complete"), None, write=True)
        if forgot is None:
            # Could not forget: a stale mark must not survive, so the cache goes.
            self._discard()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
