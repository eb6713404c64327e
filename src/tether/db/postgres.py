"""PostgreSQL, for a team: the same schema with the engine's own types.

psycopg 3 (imported only when a ``postgresql://`` URL is used) speaks to it. Times are
``timestamptz`` (in UTC) and JSON documents ``jsonb``, read back as seconds and as text
so that repositories see what SQLite gives them. Placeholders are written ``?`` in the
portable SQL and become ``%s`` here. Metric points go in with ``COPY``.

Write transactions take one transaction-scoped advisory lock, so writers serialize as
they do on SQLite: "read the latest version, insert the next" and "read the alias,
move it, record the event" stay correct under READ COMMITTED, while readers never wait.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tether.db.connection import Connection, Database, Dialect, Instant, Params
from tether.errors import DatabaseError

if TYPE_CHECKING:
    import psycopg

# 'tether' in ASCII: the advisory lock every write transaction takes.
WRITE_LOCK = 0x746574686572
CONNECT_TIMEOUT_S = 10


class _PgDialect(Dialect):
    def seconds(self, expr: str) -> str:
        return f"CAST(extract(epoch FROM {expr}) AS double precision)"

    def json_text(self, column: str, key: str) -> str:
        return f"({column} ->> '{key}')"


DIALECT = _PgDialect(name="postgresql", insertion_order="seq", like="ILIKE")
_TOKENS = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|\?|%")


@functools.lru_cache(maxsize=2048)
def _translate(sql: str) -> str:
    """``?`` placeholders to ``%s``, a literal ``%`` to ``%%``; quoted text untouched."""

    def swap(m: re.Match[str]) -> str:
        token = m.group(0)
        return "%s" if token == "?" else "%%" if token == "%" else token

    return _TOKENS.sub(swap, sql)


class _Row:
    """A row readable by column name or position, as ``sqlite3.Row`` is."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = values
        self._index = index

    def __getitem__(self, key: str | int) -> Any:
        return self._values[key if isinstance(key, int) else self._index[key]]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return list(self._index)


def _rows(cursor: Any) -> Any:
    index = {c.name: i for i, c in enumerate(cursor.description or ())}
    return lambda values: _Row(values, index)


class _Conn:
    __slots__ = ("raw",)

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Params = (), /) -> Any:
        return self.raw.execute(_translate(sql), tuple(params))

    def executemany(self, sql: str, rows: Iterable[Params], /) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(_translate(sql), [tuple(r) for r in rows])

    def insert_many(self, table: str, columns: Sequence[str], rows: Iterable[Params]) -> None:
        with (
            self.raw.cursor() as cur,
            cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)


@functools.cache
def _adapter_classes() -> tuple[type[Any], type[Any]]:
    import psycopg
    from psycopg.adapt import Dumper, Loader

    class InstantDumper(Dumper):
        oid = psycopg.postgres.types["timestamptz"].oid

        def dump(self, obj: Any) -> bytes:
            return datetime.fromtimestamp(obj, UTC).isoformat().encode()

    class SecondsLoader(Loader):
        def load(self, data: Any) -> float:
            return datetime.fromisoformat(bytes(data).decode()).timestamp()

    return InstantDumper, SecondsLoader


def _register(adapters: Any) -> None:
    """Instant → timestamptz; timestamptz → seconds; json/jsonb → their text."""
    from psycopg.types.string import TextLoader

    dumper, loader = _adapter_classes()
    adapters.register_dumper(Instant, dumper)
    adapters.register_loader("timestamptz", loader)
    adapters.register_loader("json", TextLoader)
    adapters.register_loader("jsonb", TextLoader)


class PostgresDatabase(Database):
    dialect = DIALECT

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            import psycopg
        except ImportError:
            raise DatabaseError(
                "PostgreSQL support is not installed",
                hint="pip install 'tether-ml[postgres]'",
            ) from None
        conn = psycopg.connect(
            self.url.url,
            autocommit=True,
            row_factory=_rows,
            connect_timeout=CONNECT_TIMEOUT_S,
            options="-c TimeZone=UTC",
            application_name="tether",
        )
        _register(conn.adapters)
        return conn

    def _alive(self, raw: Any) -> bool:
        return not (raw.closed or raw.broken)

    @contextlib.contextmanager
    def _transaction(self, raw: psycopg.Connection[Any]) -> Iterator[Connection]:
        from psycopg import pq

        outermost = raw.info.transaction_status == pq.TransactionStatus.IDLE
        with raw.transaction():
            if outermost:
                raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            yield _Conn(raw)

    @contextlib.contextmanager
    def _snapshot(self, raw: psycopg.Connection[Any]) -> Iterator[Connection]:
        from psycopg import pq

        if raw.info.transaction_status != pq.TransactionStatus.IDLE:
            yield _Conn(raw)
            return
        with raw.transaction():
            raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield _Conn(raw)

    def _read(self, raw: psycopg.Connection[Any], sql: str, params: Params) -> list[Any]:
        return raw.execute(_translate(sql), tuple(params)).fetchall()

    def _map_error(self, exc: BaseException) -> DatabaseError | None:
        try:
            import psycopg
        except ImportError:
            return None
        if not isinstance(exc, psycopg.Error):
            return None
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, psycopg.OperationalError):
            hint = f"check that PostgreSQL at {self.url.display} is running and reachable"
        elif isinstance(exc, psycopg.errors.InsufficientPrivilege):
            hint = "grant the database user the rights on tether's tables"
        else:
            hint = "report this with the command that caused it"
        return DatabaseError(f"database error: {text}", hint=hint)
