"""Named, ordered schema migrations, recorded in ``_tether_migrations``.

Each migration runs in its own ``BEGIN IMMEDIATE`` transaction, so processes that
start at the same moment serialize on the write lock and a migration applies once.
A database that has migrations this tether does not know is newer than the code and
is refused rather than guessed at.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from sqlite3 import Connection

from tether.db.connection import Database
from tether.errors import DatabaseError


@dataclass(frozen=True)
class Migration:
    name: str
    apply: Callable[[Connection], None]


def _0001_tag_history(conn: Connection) -> None:
    # Every tag move, so that "where did v1.0.0 point before --force?" has an answer.
    conn.execute(
        """CREATE TABLE tag_events (
               id INTEGER PRIMARY KEY,
               repository TEXT NOT NULL,
               tag TEXT NOT NULL,
               action TEXT NOT NULL CHECK (action IN ('set', 'move', 'remove')),
               old_digest TEXT,
               new_digest TEXT,
               at REAL NOT NULL,
               user TEXT NOT NULL
           )"""
    )
    conn.execute("CREATE INDEX tag_events_by_tag ON tag_events (repository, tag, id)")


def _0002_layer_files(conn: Connection) -> None:
    # File listings of layers (path, size, digest, mode), computed once per layer digest
    # for 'tether diff'; derivable from the blobs, so safe to drop.
    conn.execute(
        """CREATE TABLE layer_files (
               layer_digest TEXT PRIMARY KEY,
               files_json TEXT NOT NULL
           )"""
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration("0001_tag_history", _0001_tag_history),
    Migration("0002_layer_files", _0002_layer_files),
)


def applied(db: Database) -> list[str]:
    db.conn.execute(
        "CREATE TABLE IF NOT EXISTS _tether_migrations (name TEXT PRIMARY KEY, applied_at REAL)"
    )
    return [r["name"] for r in db.query("SELECT name FROM _tether_migrations ORDER BY name")]


def migrate(db: Database) -> list[str]:
    """Apply pending migrations; returns the names applied now."""
    known = {m.name for m in MIGRATIONS}
    unknown = sorted(set(applied(db)) - known)
    if unknown:
        raise DatabaseError(
            f"the database has migrations this tether does not know: {', '.join(unknown)}",
            hint="upgrade tether (pip install -U tether-ml)",
        )
    done: list[str] = []
    for m in MIGRATIONS:
        with db.atomic() as conn:
            # Re-check inside the write lock: another process may have applied it.
            row = conn.execute("SELECT 1 FROM _tether_migrations WHERE name = ?", (m.name,))
            if row.fetchone():
                continue
            m.apply(conn)
            conn.execute("INSERT INTO _tether_migrations VALUES (?, ?)", (m.name, time.time()))
            done.append(m.name)
    return done
