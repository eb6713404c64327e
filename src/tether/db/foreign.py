"""A database tether does not own (another tool's, such as MLflow's tracking database),
opened read only: nothing tether does through it can change it.

SQLite files open with ``mode=ro``; PostgreSQL sessions are read only. Queries use ``?``
placeholders on both engines and return rows as dicts.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tether.errors import DatabaseError, UsageError


class ForeignDatabase:
    def __init__(self, url: str) -> None:
        scheme = urlsplit(url).scheme.lower().split("+", 1)[0]
        self.dialect = scheme
        if scheme == "sqlite":
            # sqlite:///relative/file (from the working folder), sqlite:////absolute
            path = Path(unquote(url.split("://", 1)[1][1:]))
            if not path.is_file():
                raise UsageError(f"no SQLite database at {path}", hint="check the path")
            try:
                self._sqlite = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            except sqlite3.Error as e:
                raise DatabaseError(f"cannot open {path}: {e}", hint="check the file") from None
            self._sqlite.row_factory = sqlite3.Row
        elif scheme in ("postgresql", "postgres"):
            import psycopg
            from psycopg.rows import dict_row

            plain = re.sub(r"^[a-z0-9]+(\+[a-z0-9]+)?://", "postgresql://", url)
            try:
                self._pg = psycopg.connect(plain, autocommit=True, row_factory=dict_row)
            except psycopg.Error as e:
                raise DatabaseError(
                    f"cannot connect to {urlsplit(url).hostname}: {str(e).strip()[:200]}",
                    hint="check the URL; the password comes from PGPASSWORD or ~/.pgpass",
                ) from None
            self._pg.execute("SET default_transaction_read_only = on")
        else:
            raise UsageError(f"unsupported database {url[:40]!r}", hint="sqlite or postgresql")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        if self.dialect == "sqlite":
            try:
                return [dict(r) for r in self._sqlite.execute(sql, params)]
            except sqlite3.Error as e:
                raise DatabaseError(f"reading the database failed: {e}", hint=None) from None
        import psycopg

        try:
            return list(self._pg.execute(sql.replace("?", "%s"), params))
        except psycopg.Error as e:
            raise DatabaseError(f"reading the database failed: {e}", hint=None) from None

    def close(self) -> None:
        if self.dialect == "sqlite":
            self._sqlite.close()
        else:
            self._pg.close()
