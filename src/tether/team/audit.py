"""The audit trail: every change made through the server or its commands, with who,
what, when and from where. Append-only; secrets never enter it."""

from __future__ import annotations

import getpass
import time
from dataclasses import dataclass
from typing import Any

from tether.repositories import team as repo
from tether.team.deployment import Deployment
from tether.team.records import AuditEntry


@dataclass(frozen=True)
class Actor:
    """Who acts, and from where."""

    name: str
    remote: str = "local"

    @classmethod
    def command_line(cls) -> Actor:
        """An operator running ``tether server …`` on the server's machine."""
        try:
            who = getpass.getuser()
        except (KeyError, OSError):
            who = "unknown"
        return cls(f"cli:{who}")


def record(team: Deployment, actor: Actor, action: str, obj: str, detail: dict[str, Any]) -> None:
    repo.add_audit(
        team.team, AuditEntry(time.time(), actor.name, action, obj, detail, actor.remote)
    )


def entries(team: Deployment, *, limit: int = 1000) -> list[AuditEntry]:
    return repo.audit(team.team, limit=limit)
