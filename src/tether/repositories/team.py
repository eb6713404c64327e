"""The team repository: every SQL statement over the server's users, tokens, projects,
grants and audit trail (tables in ``db/schema_team.py``)."""

from __future__ import annotations

import json
from typing import Any

from tether.db.connection import Database, Instant
from tether.team.records import AuditEntry, Grant, Role, Token, User


def _user(row: Any) -> User:
    return User(int(row["id"]), row["name"], bool(row["admin"]), float(row["created"]))


def add_user(db: Database, name: str, *, admin: bool, at: float) -> User | None:
    """The new user; None when the name is taken."""
    with db.atomic() as conn:
        row = conn.execute(
            "INSERT INTO users (name, admin, created) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING RETURNING id, name, admin, created",
            (name, admin, Instant(at)),
        ).fetchone()
    return None if row is None else _user(row)


def user_named(db: Database, name: str) -> User | None:
    rows = db.query("SELECT id, name, admin, created FROM users WHERE name = ?", (name,))
    return _user(rows[0]) if rows else None


def users(db: Database) -> list[User]:
    return [_user(r) for r in db.query("SELECT id, name, admin, created FROM users ORDER BY name")]


def add_token(
    db: Database, token_id: str, user: User, secret_sha256: str, *, at: float, expires: float | None
) -> None:
    with db.atomic() as conn:
        conn.execute(
            "INSERT INTO tokens (id, user_id, secret_sha256, created, expires)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                token_id,
                user.id,
                secret_sha256,
                Instant(at),
                None if expires is None else Instant(expires),
            ),
        )


def token(db: Database, token_id: str) -> tuple[Token, str, User] | None:
    """A token with its stored hash and its user."""
    rows = db.query(
        "SELECT t.id, t.secret_sha256, t.created AS t_created, t.expires, t.revoked,"
        " u.id AS user_id, u.name, u.admin, u.created"
        " FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?",
        (token_id,),
    )
    if not rows:
        return None
    r = rows[0]
    user = User(int(r["user_id"]), r["name"], bool(r["admin"]), float(r["created"]))
    found = Token(r["id"], user.name, float(r["t_created"]), r["expires"], r["revoked"])
    return found, r["secret_sha256"], user


def tokens_of(db: Database, user: User) -> list[Token]:
    return [
        Token(r["id"], user.name, float(r["created"]), r["expires"], r["revoked"])
        for r in db.query(
            "SELECT id, created, expires, revoked FROM tokens WHERE user_id = ? ORDER BY created",
            (user.id,),
        )
    ]


def revoke_token(db: Database, token_id: str, *, at: float) -> bool:
    """True when the token existed and was not revoked yet."""
    with db.atomic() as conn:
        row = conn.execute(
            "UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL RETURNING id",
            (Instant(at), token_id),
        ).fetchone()
    return row is not None


def add_project(db: Database, name: str, *, at: float) -> bool:
    """True when the project is new."""
    with db.atomic() as conn:
        row = conn.execute(
            "INSERT INTO projects (name, created) VALUES (?, ?)"
            " ON CONFLICT (name) DO NOTHING RETURNING name",
            (name, Instant(at)),
        ).fetchone()
    return row is not None


def projects(db: Database) -> list[str]:
    return [r["name"] for r in db.query("SELECT name FROM projects ORDER BY name")]


def set_grant(db: Database, user: User, project: str, role: Role) -> None:
    with db.atomic() as conn:
        conn.execute(
            "INSERT INTO grants (user_id, project, role) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id, project) DO UPDATE SET role = excluded.role",
            (user.id, project, role),
        )


def remove_grant(db: Database, user: User, project: str) -> bool:
    with db.atomic() as conn:
        row = conn.execute(
            "DELETE FROM grants WHERE user_id = ? AND project = ? RETURNING role",
            (user.id, project),
        ).fetchone()
    return row is not None


def role_of(db: Database, user: User, project: str) -> Role | None:
    rows = db.query("SELECT role FROM grants WHERE user_id = ? AND project = ?", (user.id, project))
    return rows[0]["role"] if rows else None


def set_alias_rule(db: Database, project: str, alias: str, role: Role | None) -> None:
    """``role`` to move ``alias`` in ``project``; None: no rule (write suffices)."""
    with db.atomic() as conn:
        if role is None:
            conn.execute(
                "DELETE FROM alias_rules WHERE project = ? AND alias = ?", (project, alias)
            )
            return
        conn.execute(
            "INSERT INTO alias_rules (project, alias, role) VALUES (?, ?, ?)"
            " ON CONFLICT (project, alias) DO UPDATE SET role = excluded.role",
            (project, alias, role),
        )


def alias_rules(db: Database, project: str) -> dict[str, Role]:
    rows = db.query("SELECT alias, role FROM alias_rules WHERE project = ?", (project,))
    return {r["alias"]: r["role"] for r in rows}


def record_blob(db: Database, project: str, digest: str, size: int, *, at: float) -> None:
    with db.atomic() as conn:
        conn.execute(
            "INSERT INTO blobs (project, digest, size, stored) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (project, digest) DO NOTHING",
            (project, digest, size, Instant(at)),
        )


def blob_sizes(db: Database, project: str, digests: list[str]) -> dict[str, int]:
    """The size of each of ``digests`` recorded for ``project``."""
    found: dict[str, int] = {}
    for where, params in db.dialect.any_of("digest", digests):
        for digest, size in db.tuples(
            f"SELECT digest, size FROM blobs WHERE project = ? AND {where}", (project, *params)
        ):
            found[digest] = int(size)
    return found


def grants(db: Database) -> list[Grant]:
    return [
        Grant(r["name"], r["project"], r["role"])
        for r in db.query(
            "SELECT u.name, g.project, g.role FROM grants g JOIN users u ON u.id = g.user_id"
            " ORDER BY g.project, u.name"
        )
    ]


def add_audit(db: Database, entry: AuditEntry) -> None:
    with db.atomic() as conn:
        conn.execute(
            "INSERT INTO audit (at, actor, action, object, detail, remote)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                Instant(entry.at),
                entry.actor,
                entry.action,
                entry.object,
                json.dumps(entry.detail, sort_keys=True),
                entry.remote,
            ),
        )


def audit(db: Database, *, limit: int = 1000) -> list[AuditEntry]:
    return [
        AuditEntry(
            float(r["at"]),
            r["actor"],
            r["action"],
            r["object"],
            json.loads(r["detail"]),
            r["remote"],
        )
        for r in db.query(
            "SELECT at, actor, action, object, detail, remote FROM audit ORDER BY id DESC LIMIT ?",
            (limit,),
        )
    ]
