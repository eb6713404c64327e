"""Model events: registrations, archives and alias moves, each with who, when, from,
to and why. Stored in ``model_events``; a ``uid`` per event lets histories read back
from a registry merge without duplicates."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from tether.db.connection import Connection, Instant, Row
from tether.errors import ModelError
from tether.workspace import Workspace

ACTIONS = ("register", "archive", "set", "move", "rollback", "remove")


@dataclass(frozen=True)
class ModelEvent:
    """A registration, an archive, or an alias move (set, move, rollback, remove)."""

    uid: str
    model: str
    alias: str | None
    action: str
    old_version: int | None
    new_version: int | None
    at: float
    user: str
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "model": self.model,
            "alias": self.alias,
            "action": self.action,
            "from": self.old_version,
            "to": self.new_version,
            "at": self.at,
            "user": self.user,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelEvent:
        def version(v: object) -> int | None:
            return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None

        action = data.get("action")
        if action not in ACTIONS or not isinstance(data.get("uid"), str):
            raise ModelError("a history event is malformed", hint="the history is damaged")
        alias = data.get("alias")
        reason = data.get("reason")
        return cls(
            uid=str(data["uid"])[:64],
            model=str(data.get("model", ""))[:255],
            alias=str(alias)[:128] if alias is not None else None,
            action=str(action),
            old_version=version(data.get("from")),
            new_version=version(data.get("to")),
            at=float(data.get("at", 0.0)),
            user=str(data.get("user", ""))[:200],
            reason=str(reason)[:2000] if reason is not None else None,
        )


ACTIONS = ("register", "archive", "set", "move", "rollback", "remove")


def add_event(
    conn: Connection,
    ws: Workspace,
    name: str,
    alias: str | None,
    action: str,
    old: int | None,
    new: int | None,
    reason: str | None,
) -> ModelEvent:
    event = ModelEvent(
        uuid.uuid4().hex, name, alias, action, old, new, time.time(), ws.user, reason
    )
    conn.execute(
        "INSERT INTO model_events (uid, model, alias, action, old_version, new_version, at,"
        ' "user", reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        (event.uid, name, alias, action, old, new, Instant(event.at), event.user, reason),
    )
    return event


def event_from_row(row: Row) -> ModelEvent:
    return ModelEvent(
        row["uid"],
        row["model"],
        row["alias"],
        row["action"],
        row["old_version"],
        row["new_version"],
        row["at"],
        row["user"],
        row["reason"],
    )
