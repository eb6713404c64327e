"""SQLite, the embedded default: one file (``.tether/tether.db``) in WAL mode.

WAL lets many readers work beside one writer; write transactions start with
``BEGIN IMMEDIATE`` so that a busy database makes writers wait (``busy_timeout``)
instead of failing half-way with SQLITE_BUSY. Foreign keys are on. Times are REAL
seconds; JSON is TEXT.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from tether.db.connection import Connection, Database, Dialect, Params
from tether.errors import DatabaseError

BUSY_TIMEOUT_MS = 30_000
DIALECT = Dialect(name="sqlite")


class _Conn:
    """A sqlite3 connection seen through the boundary's ``Connection``."""

    __slots__ = ("raw",)

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Params = (), /) -> sqlite3.Cursor:
        return self.raw.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Params], /) -> None:
        self.raw.executemany(sql, rows)

    def insert_many(self, table: str, columns: Sequence[str], rows: Iterable[Params]) -> None:
        marks = ", ".join("?" * len(columns))
        self.raw.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


class SqliteDatabase(Database):
    dialect = DIALECT

    def _connect(self) -> sqlite3.Connection:
        path = self.url.path
        assert path is not None
        try:
            # check_same_thread off only so that close() may run on another thread: each
            # thread uses its own connection (Database._connection).
            conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise DatabaseError(
                f"cannot open {path}: {exc}",
                hint="check that the folder is on a local disk and writable",
            ) from None
        return conn

    @contextlib.contextmanager
    def _transaction(self, raw: sqlite3.Connection, run: str | None) -> Iterator[Connection]:
        # SQLite has one writer at a time, whatever ``run`` says.
        if raw.in_transaction:
            raw.execute("SAVEPOINT nested")
            try:
                yield _Conn(raw)
            except BaseException:
                raw.execute("ROLLBACK TO nested")
                raw.execute("RELEASE nested")
                raise
            raw.execute("RELEASE nested")
            return
        raw.execute("BEGIN IMMEDIATE")
        try:
            yield _Conn(raw)
        except BaseException:
            raw.execute("ROLLBACK")
            raise
        raw.execute("COMMIT")

    @contextlib.contextmanager
    def _snapshot(self, raw: sqlite3.Connection) -> Iterator[Connection]:
        if raw.in_transaction:
            yield _Conn(raw)
            return
        raw.execute("BEGIN DEFERRED")  # a read transaction: one WAL snapshot, no lock
        try:
            yield _Conn(raw)
        finally:
            raw.execute("COMMIT")

    def _read(
        self, raw: sqlite3.Connection, sql: str, params: Params, *, tuples: bool = False
    ) -> list[Any]:
        cursor = raw.cursor()
        if tuples:
            cursor.row_factory = None
        return cursor.execute(sql, params).fetchall()

    def _map_error(self, exc: BaseException) -> DatabaseError | None:
        if not isinstance(exc, sqlite3.Error):
            return None
        text = str(exc)
        if "locked" in text or "busy" in text:
            hint = "another process holds the database; try again"
        elif "readonly" in text or "unable to open" in text or "disk" in text:
            hint = f"check that {self.url.path} is on a local disk, writable, with free space"
        elif "malformed" in text or "not a database" in text:
            hint = "the database file is damaged: restore .tether/tether.db from a backup"
        else:
            hint = "report this with the command that caused it"
        return DatabaseError(f"database error: {text}", hint=hint)
