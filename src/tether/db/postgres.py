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
import struct
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
# How long a writer waits for another's transaction before it gives up with a hint
# (SQLite's busy timeout plays this part there).
LOCK_TIMEOUT_MS = 60_000


class _PgDialect(Dialect):
    def seconds(self, expr: str) -> str:
        return f"CAST(extract(epoch FROM {expr}) AS double precision)"

    def json_text(self, column: str, key: str) -> str:
        return f"({column} ->> '{key}')"

    def object_agg(self, key: str, value: str) -> str:
        return f"json_object_agg({key}, {value})"

    def any_of(self, column: str, values: Sequence[object]) -> Iterator[tuple[str, Params]]:
        # One array parameter: one statement to parse and plan, whatever the count. The
        # array literal is built here: psycopg's list dumper inspects every element.
        if values:
            items = (str(v).replace("\\", "\\\\").replace('"', '\\"') for v in values)
            yield (
                f"{column} = ANY(CAST(? AS text[]))",
                ("{" + ",".join(f'"{i}"' for i in items) + "}",),
            )


DIALECT = _PgDialect(name="postgresql", like="ILIKE")
_TOKENS = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|\?|%")


@functools.lru_cache(maxsize=2048)
def _translate(sql: str) -> str:
    """``?`` placeholders to ``%s``, a literal ``%`` to ``%%``; quoted text untouched."""

    def swap(m: re.Match[str]) -> str:
        token = m.group(0)
        return "%s" if token == "?" else "%%" if token == "%" else token

    return _TOKENS.sub(swap, sql)


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


# timestamptz on the wire (binary): microseconds since 2000-01-01 UTC.
_PG_EPOCH = 946_684_800
_MICROS = struct.Struct("!q")


@functools.cache
def _adapter_classes() -> dict[str, type[Any]]:
    import psycopg
    from psycopg.adapt import Dumper, Loader
    from psycopg.pq import Format

    class InstantDumper(Dumper):
        oid = psycopg.postgres.types["timestamptz"].oid

        def dump(self, obj: Any) -> bytes:
            return datetime.fromtimestamp(obj, UTC).isoformat().encode()

    class SecondsLoader(Loader):
        def load(self, data: Any) -> float:
            return datetime.fromisoformat(bytes(data).decode()).timestamp()

    class SecondsBinaryLoader(Loader):
        format = Format.BINARY

        def load(self, data: Any) -> float:
            return float(_MICROS.unpack(data)[0] / 1_000_000 + _PG_EPOCH)

    class JsonTextBinaryLoader(Loader):
        format = Format.BINARY

        def load(self, data: Any) -> str:
            return bytes(data).decode()

    class JsonbTextBinaryLoader(Loader):
        format = Format.BINARY

        def load(self, data: Any) -> str:
            return bytes(data[1:]).decode()  # a version byte, then the text

    return {
        "instant": InstantDumper,
        "seconds": SecondsLoader,
        "seconds-binary": SecondsBinaryLoader,
        "json-binary": JsonTextBinaryLoader,
        "jsonb-binary": JsonbTextBinaryLoader,
    }


def _register(adapters: Any) -> None:
    """Instant → timestamptz; timestamptz → seconds; json/jsonb → their text (reads
    come back in binary, writes' results in text)."""
    from psycopg.types.string import TextLoader

    found = _adapter_classes()
    adapters.register_dumper(Instant, found["instant"])
    adapters.register_loader("timestamptz", found["seconds"])
    adapters.register_loader("timestamptz", found["seconds-binary"])
    adapters.register_loader("json", TextLoader)
    adapters.register_loader("jsonb", TextLoader)
    adapters.register_loader("json", found["json-binary"])
    adapters.register_loader("jsonb", found["jsonb-binary"])


class PostgresDatabase(Database):
    dialect = DIALECT

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError:
            raise DatabaseError(
                "PostgreSQL support is not installed",
                hint="pip install 'tether-ml[postgres]'",
            ) from None
        conn = psycopg.connect(
            self.url.url,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_S,
            options=f"-c TimeZone=UTC -c lock_timeout={LOCK_TIMEOUT_MS}"
            + (f" -c search_path={self.url.schema}" if self.url.schema else ""),
            application_name="tether",
        )
        _register(conn.adapters)
        return conn

    def _alive(self, raw: Any) -> bool:
        return not (raw.closed or raw.broken)

    @contextlib.contextmanager
    def _transaction(self, raw: psycopg.Connection[Any], run: str | None) -> Iterator[Connection]:
        from psycopg import pq

        outermost = raw.info.transaction_status == pq.TransactionStatus.IDLE
        with raw.transaction():
            if outermost and run is None:
                # One writer per schema: projects sharing a database do not wait on
                # each other.
                raw.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(current_schema(), %s))",
                    (WRITE_LOCK,),
                )
            elif outermost:
                # The schema's lock shared (a project-wide writer still excludes this
                # one), then the run's own: writers of other runs go on meanwhile.
                raw.execute(
                    "SELECT pg_advisory_xact_lock_shared(hashtextextended(current_schema(), %s)),"
                    " pg_advisory_xact_lock(hashtextextended(current_schema() || '/' || %s, %s))",
                    (WRITE_LOCK, run, WRITE_LOCK),
                )
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

    def _read(
        self, raw: psycopg.Connection[Any], sql: str, params: Params, *, tuples: bool = False
    ) -> list[Any]:
        from psycopg.rows import tuple_row

        # Binary results: numbers and times arrive without text to parse.
        cursor = raw.cursor(row_factory=tuple_row) if tuples else raw.cursor()
        return cursor.execute(_translate(sql), tuple(params), binary=True).fetchall()

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
        elif isinstance(exc, psycopg.errors.LockNotAvailable):
            hint = "another tether process holds the database's write lock; try again"
        elif isinstance(exc, psycopg.errors.InsufficientPrivilege):
            hint = "grant the database user the rights on tether's tables"
        else:
            hint = "report this with the command that caused it"
        return DatabaseError(f"database error: {text}", hint=hint)
