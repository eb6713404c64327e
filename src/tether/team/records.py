"""Values of the team domain."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

Role = Literal["read", "write", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
RANK = {"read": 1, "write": 2, "admin": 3}


@dataclass(frozen=True)
class User:
    id: int
    name: str
    admin: bool
    created: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "admin": self.admin, "created": self.created}


@dataclass(frozen=True)
class Token:
    """A token as stored: never its secret."""

    id: str
    user: str
    created: float
    expires: float | None
    revoked: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "created": self.created,
            "expires": self.expires,
            "revoked": self.revoked,
        }


@dataclass(frozen=True)
class NewToken:
    """A token just made: ``secret`` is shown once and never stored."""

    token: Token
    secret: str

    def to_json(self) -> dict[str, Any]:
        return {**self.token.to_json(), "token": self.secret}


@dataclass(frozen=True)
class Grant:
    user: str
    project: str
    role: Role

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user, "project": self.project, "role": self.role}


@dataclass(frozen=True)
class AuditEntry:
    at: float
    actor: str  # a user name, or "cli:<os user>" for the server's own commands
    action: str  # user.add, token.create, token.revoke, project.add, grant.set, alias.set…
    object: str
    detail: dict[str, Any]
    remote: str  # the client's address, or "local"

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "object": self.object,
            "detail": self.detail,
            "remote": self.remote,
        }
