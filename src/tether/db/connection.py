"""The database boundary: what repositories may use, whatever the engine.

Two engines sit behind it, chosen by URL (see ``url.py``): SQLite (``sqlite.py``, the
embedded default) and PostgreSQL (``postgres.py``). Repositories write one portable
SQL with ``?`` placeholders, ``ON CONFLICT`` upserts and no engine-only functions; the
few expressions that must differ come from ``Dialect``. Times are passed as
``Instant`` (seconds since the epoch): a REAL on SQLite, a ``timestamptz`` on
PostgreSQL, read back as seconds on both.

Each thread gets its own connection, so one thread's transaction never interleaves
with another's; ``atomic()`` is one write transaction (a savepoint when nested) that
serializes with other writers, as SQLite's ``BEGIN IMMEDIATE`` does. Engine errors
leave as ``DatabaseError`` with a hint, never as a driver's exception.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tether.db.url import DatabaseURL
from tether.errors import DatabaseError

Params = Sequence[object]


class Instant(float):
    """A moment in seconds since the epoch, stored as the engine's time type."""

    __slots__ = ()


class Row(Protocol):
    """A result row, read by column name (``sqlite3.Row`` on SQLite, a dict on
    PostgreSQL)."""

    def __getitem__(self, key: str | int, /) -> Any: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """One connection inside a transaction: what repositories write through."""

    def execute(self, sql: str, params: Params = (), /) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Params], /) -> None: ...

    def insert_many(self, table: str, columns: Sequence[str], rows: Iterable[Params]) -> None:
        """Append rows in bulk: ``executemany`` on SQLite, ``COPY`` on PostgreSQL."""


@dataclass(frozen=True)
class Dialect:
    """The expressions portable SQL cannot share."""

    name: str
    # Case-insensitive for ASCII on both (SQLite's LIKE is).
    like: str = "LIKE"

    def seconds(self, expr: str) -> str:
        """``expr`` (a time, or a difference of two) as a number of seconds."""
        return expr

    def json_text(self, column: str, key: str) -> str:
        """The text of ``column``'s top-level ``key`` (a JSON document)."""
        return f"json_extract({column}, '$.{key}')"

    def object_agg(self, key: str, value: str) -> str:
        """Aggregate: a JSON object (as text) of ``key`` → ``value`` over a group."""
        return f"json_group_object({key}, {value})"

    def any_of(self, column: str, values: Sequence[object]) -> Iterator[tuple[str, Params]]:
        """``column`` (text) is one of ``values``, as (condition, parameters) pieces to run
        one query each: IN lists of at most 500 (SQLite's variable limit)."""
        for i in range(0, len(values), 500):
            chunk = tuple(values[i : i + 500])
            yield f"{column} IN ({','.join('?' * len(chunk))})", chunk


class Database(ABC):
    """An open database: per-thread connections, ``atomic()`` writes, ``query()`` reads."""

    dialect: Dialect

    def __init__(self, url: DatabaseURL) -> None:
        self.url = url
        self._local = threading.local()
        self._all: list[Any] = []
        self._all_lock = threading.Lock()
        # A Database dropped without close() (a library user's Workspace) still closes
        # its connections, rather than leaving them to the driver's finalizers.
        weakref.finalize(self, _close_all, self._all)

    @property
    def display(self) -> str:
        return self.url.display

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not self._alive(conn):
            with self._all_lock, contextlib.suppress(ValueError):
                self._all.remove(conn)
            conn = None
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @abstractmethod
    def _connect(self) -> Any: ...

    def _alive(self, raw: Any) -> bool:
        """False for a connection the server dropped: the next call opens another."""
        return True

    @abstractmethod
    def _transaction(
        self, raw: Any, run: str | None
    ) -> contextlib.AbstractContextManager[Connection]: ...

    @abstractmethod
    def _snapshot(self, raw: Any) -> contextlib.AbstractContextManager[Connection]: ...

    @abstractmethod
    def _read(self, raw: Any, sql: str, params: Params, *, tuples: bool = False) -> list[Any]: ...

    @abstractmethod
    def _map_error(self, exc: BaseException) -> DatabaseError | None:
        """The driver's error as a DatabaseError, or None when it is not the driver's."""

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            mapped = self._map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    @contextlib.contextmanager
    def atomic(self, *, run: str | None = None) -> Iterator[Connection]:
        """One write transaction: committed on success, rolled back on any exception.

        Nested inside another on this thread it is a savepoint, so a library call that
        writes (a tag move) can join a caller's transaction (an alias move). Writers
        take turns; ``run`` narrows that to the writers of one run where the engine can
        (PostgreSQL: a transaction that only adds to a run runs beside those adding to
        others, never beside a project-wide one)."""
        with self._mapped_errors(), self._transaction(self._connection(), run) as conn:
            yield conn

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """Several reads that see one consistent state and take no write lock (inside
        ``atomic()`` they simply join it)."""
        with self._mapped_errors(), self._snapshot(self._connection()) as conn:
            yield conn

    def query(self, sql: str, params: Params = ()) -> list[Any]:
        """Rows of one read, outside any write transaction of another thread."""
        with self._mapped_errors():
            return self._read(self._connection(), sql, params)

    def tuples(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Rows of one read as plain tuples: for bulk reads of hundreds of thousands of
        rows, where looking columns up by name costs more than reading them."""
        with self._mapped_errors():
            return self._read(self._connection(), sql, params, tuples=True)

    def close(self) -> None:
        with self._all_lock:
            _close_all(self._all)
        self._local = threading.local()


def _close_all(conns: list[Any]) -> None:
    while conns:
        with contextlib.suppress(Exception):
            conns.pop().close()


def open_database(url: DatabaseURL) -> Database:
    """Connect to the database ``url`` names (its schema is checked by ``migrations``)."""
    if url.dialect == "sqlite":
        from tether.db.sqlite import SqliteDatabase

        return SqliteDatabase(url)
    from tether.db.postgres import PostgresDatabase

    return PostgresDatabase(url)
