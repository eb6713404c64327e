"""Named, ordered schema migrations per engine, recorded in ``_tether_migrations``.

Opening a database only checks its version (one query): a new, empty database is
created at the current schema; one that lacks migrations is refused with a hint to run
``tether migrate``; one that has migrations this tether does not know is newer than the
code and is refused rather than guessed at. Each migration runs in its own write
transaction, so processes that migrate at once serialize and a migration applies once.

SQLite keeps the history that built its schema (``schema_sqlite.py``); PostgreSQL
starts from the schema that history ends at (``schema_postgres.py``), named after the
last SQLite migration it matches. Later migrations are written once per engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tether.db.connection import Connection, Database, Instant
from tether.errors import DatabaseError

TEAM_SCHEMA = "tether_team"
_LEDGER = "CREATE TABLE IF NOT EXISTS _tether_migrations (name TEXT PRIMARY KEY, applied_at {})"


@dataclass(frozen=True)
class Migration:
    name: str
    apply: Callable[[Connection], None]


@dataclass(frozen=True)
class SchemaState:
    applied: tuple[str, ...]
    pending: tuple[str, ...]
    unknown: tuple[str, ...]  # applied by a newer tether

    @property
    def empty(self) -> bool:
        return not self.applied


def migrations_for(db: Database) -> tuple[Migration, ...]:
    if db.dialect.name == "sqlite":
        from tether.db.schema_sqlite import MIGRATIONS
    else:
        from tether.db.schema_postgres import MIGRATIONS
    return MIGRATIONS


def migrations(db: Database) -> tuple[Migration, ...]:
    """The migrations of what this database holds: a project's tables, or (the team
    server's own schema, ``tether_team``) users, tokens, projects, grants and audit."""
    if db.url.schema == TEAM_SCHEMA:
        from tether.db.schema_team import MIGRATIONS

        return MIGRATIONS
    return migrations_for(db)


def state(db: Database) -> SchemaState:
    """Where the database stands against this tether's migrations (reads only)."""
    if db.dialect.name == "sqlite":
        exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    else:
        exists = "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = ?"
    names: list[str] = []
    if db.query(exists, ("_tether_migrations",)):
        names = [r["name"] for r in db.query("SELECT name FROM _tether_migrations ORDER BY name")]
    known = [m.name for m in migrations(db)]
    return SchemaState(
        applied=tuple(names),
        pending=tuple(n for n in known if n not in names),
        unknown=tuple(sorted(set(names) - set(known))),
    )


def ensure_current(db: Database) -> None:
    """Check the schema on open: create it in an empty database, refuse any other
    that is not exactly at this tether's version."""
    now = state(db)
    if now.unknown:
        raise DatabaseError(
            f"the database {db.display} was migrated by a newer tether ({', '.join(now.unknown)})",
            hint="upgrade tether (pip install -U tether-ml)",
        )
    if now.empty:
        migrate(db)
    elif now.pending:
        # The team server's schemas (its own, and p_NAME per project) migrate together.
        served = db.url.schema == TEAM_SCHEMA or (db.url.schema or "").startswith("p_")
        raise DatabaseError(
            f"the database {db.display} is older than this tether "
            f"({len(now.pending)} migration(s) pending)",
            hint=f"back it up, then run 'tether {'server migrate' if served else 'migrate'}'",
        )


def migrate(db: Database, *, through: str | None = None) -> list[str]:
    """Apply pending migrations (only up to ``through``, when named); returns the names
    applied now."""
    now = state(db)
    if now.unknown:
        raise DatabaseError(
            f"the database has migrations this tether does not know: {', '.join(now.unknown)}",
            hint="upgrade tether (pip install -U tether-ml)",
        )
    time_type = "REAL" if db.dialect.name == "sqlite" else "timestamptz"
    if db.url.schema is not None and now.pending:
        with db.atomic() as conn:
            # The name was checked against SCHEMA_NAME when the URL was parsed.
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {db.url.schema}")
    done: list[str] = []
    for m in migrations(db):
        if m.name in now.applied:
            continue
        if through is not None and m.name > through:
            break
        with db.atomic() as conn:
            conn.execute(_LEDGER.format(time_type))
            # Re-check inside the write lock: another process may have applied it.
            if conn.execute(
                "SELECT 1 FROM _tether_migrations WHERE name = ?", (m.name,)
            ).fetchone():
                continue
            m.apply(conn)
            conn.execute(
                "INSERT INTO _tether_migrations VALUES (?, ?)", (m.name, Instant(time.time()))
            )
            done.append(m.name)
    return done
