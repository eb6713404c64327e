"""The model registry's records: versions, model summaries and events (who moved which
alias from where to where, when and why). Values only; stored by
``repositories/models.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from tether.errors import ModelError
from tether.hashing import Digest

ModelAction = Literal["register", "archive", "set", "move", "rollback", "remove"]
ACTIONS: tuple[ModelAction, ...] = get_args(ModelAction)


@dataclass(frozen=True)
class ModelEvent:
    """A registration, an archive, or an alias move (set, move, rollback, remove)."""

    uid: str
    model: str
    alias: str | None
    action: ModelAction
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
            action=action,
            old_version=version(data.get("from")),
            new_version=version(data.get("to")),
            at=float(data.get("at", 0.0)),
            user=str(data.get("user", ""))[:200],
            reason=str(reason)[:2000] if reason is not None else None,
        )


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    digest: Digest
    run_id: str | None
    source: str
    created: float
    user: str
    description: str | None = None
    archived: float | None = None
    aliases: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"v{self.version}"

    @property
    def ref(self) -> str:
        return f"{self.model}:v{self.version}"

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "digest": str(self.digest),
            "run": self.run_id,
            "source": self.source,
            "created": self.created,
            "user": self.user,
            "description": self.description,
            "archived": self.archived,
            "aliases": list(self.aliases),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelVersion:
        return cls(
            model=str(data["model"]),
            version=int(data["version"]),
            digest=Digest.parse(str(data["digest"])),
            run_id=data.get("run"),
            source=str(data.get("source", "")),
            created=float(data.get("created", 0.0)),
            user=str(data.get("user", "")),
            description=data.get("description"),
            archived=data.get("archived"),
            aliases=tuple(data.get("aliases", ())),
        )


@dataclass(frozen=True)
class ModelSummary:
    name: str
    versions: int
    latest: int | None
    aliases: dict[str, int] = field(default_factory=dict)
    remote: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": self.versions,
            "latest": self.latest,
            "aliases": self.aliases,
            "remote": self.remote,
        }
