"""The team server's own tables, in the schema ``tether_team`` of its PostgreSQL
database (each project's runs, data and models live in a schema of their own, ``p_NAME``).

A token is stored as the SHA-256 of its secret part only; its id (the part before the
secret) finds the row. The audit table is append-only: who did what, when, from where.
``alias_rules`` names the aliases of a project that need a role to move. ``blobs`` lists
the blobs a project holds in an object-storage bucket, each recorded only once the server
has checked its bytes against its digest: what sync asks "do you have it?" of.
"""

from __future__ import annotations

from tether.db.connection import Connection
from tether.db.migrations import Migration

_SCHEMA = """
CREATE TABLE users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    admin boolean NOT NULL DEFAULT false,
    created timestamptz NOT NULL
);
CREATE TABLE tokens (
    id text PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    secret_sha256 text NOT NULL,
    created timestamptz NOT NULL,
    expires timestamptz,
    revoked timestamptz
);
CREATE INDEX tokens_by_user ON tokens (user_id);
CREATE TABLE projects (
    name text PRIMARY KEY,
    created timestamptz NOT NULL
);
CREATE TABLE grants (
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project text NOT NULL REFERENCES projects (name) ON DELETE CASCADE,
    role text NOT NULL CHECK (role IN ('read', 'write', 'admin')),
    PRIMARY KEY (user_id, project)
);
CREATE TABLE audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    object text NOT NULL,
    detail jsonb NOT NULL,
    remote text NOT NULL
);
CREATE INDEX audit_by_time ON audit (at)
"""


def _0001_team(conn: Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def _0002_alias_rules(conn: Connection) -> None:
    # An alias of a project that only a role at least this high may move (production
    # for admins, say), on the server's pages and through sync alike.
    conn.execute(
        "CREATE TABLE alias_rules ("
        " project text NOT NULL REFERENCES projects (name) ON DELETE CASCADE,"
        " alias text NOT NULL,"
        " role text NOT NULL CHECK (role IN ('write', 'admin')),"
        " PRIMARY KEY (project, alias))"
    )


def _0003_blobs(conn: Connection) -> None:
    conn.execute(
        "CREATE TABLE blobs ("
        " project text NOT NULL REFERENCES projects (name) ON DELETE CASCADE,"
        " digest text NOT NULL,"
        " size bigint NOT NULL,"
        " stored timestamptz NOT NULL,"
        " PRIMARY KEY (project, digest))"
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration("team_0001", _0001_team),
    Migration("team_0002_alias_rules", _0002_alias_rules),
    Migration("team_0003_blobs", _0003_blobs),
)
