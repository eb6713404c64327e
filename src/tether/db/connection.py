"""The project database: one SQLite file, ``.tether/tether.db``, in WAL mode.

WAL lets many readers work beside one writer; write transactions start with
``BEGIN IMMEDIATE`` so that a busy database makes writers wait (``busy_timeout``)
instead of failing half-way with SQLITE_BUSY. Foreign keys are on.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from tether.errors import DatabaseError

BUSY_TIMEOUT_MS = 30_000


class Database:
    """A connection to the project database with an ``atomic()`` write transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # One connection may serve several threads (a training loop's metric flushes and
        # a callback's log_param): transactions on it must not interleave.
        self._lock = threading.RLock()
        try:
            self.conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            self.conn.row_factory = sqlite3.Row
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise DatabaseError(
                f"cannot open {self.path}: {exc}",
                hint="check that .tether/ is on a local disk and writable",
            ) from None

    @contextlib.contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on success, rolled back on any exception.

        Nested inside another on this connection it is a savepoint, so a library call
        that writes (a tag move) can join a caller's transaction (an alias move)."""
        with self._lock:
            if self.conn.in_transaction:
                with self._savepoint():
                    yield self.conn
                return
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise DatabaseError(
                    f"cannot start a transaction: {exc}",
                    hint="another process may hold the database; try again",
                ) from None
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def _savepoint(self) -> Iterator[None]:
        self.conn.execute("SAVEPOINT nested")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK TO nested")
            self.conn.execute("RELEASE nested")
            raise
        else:
            self.conn.execute("RELEASE nested")

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self.conn.execute(sql, params))

    def close(self) -> None:
        self.conn.close()
