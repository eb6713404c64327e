"""Use cases on the model registry shared by every face: one version with the run that
made it; moving an alias back, with the version's files restored when asked; a model's
history from the project or its registry; pushing a model to a registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether.api.registry import DEFAULT_NETWORK, NetworkOptions
from tether.errors import UsageError
from tether.registry.records import ModelEvent, ModelSummary, ModelVersion

if TYPE_CHECKING:
    from tether.modelkit.catalog import KitSummary
    from tether.modelkit.unpack import UnpackReport
    from tether.registry.remote import ModelPushReport
    from tether.workspace import Workspace


@dataclass(frozen=True)
class MakerRun:
    """What a version page shows of the run behind it (name None: the run is deleted)."""

    id: str
    name: str | None
    seed: int | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # last values

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "seed": self.seed,
            "params": self.params,
            "metrics": self.metrics,
        }


@dataclass(frozen=True)
class VersionDetail:
    version: ModelVersion
    run: MakerRun | None

    def to_json(self) -> dict[str, Any]:
        return {
            **self.version.to_json(),
            "run_detail": None if self.run is None else self.run.to_json(),
        }


def show(ws: Workspace, spec: str, version: str | None = None) -> VersionDetail:
    """``NAME``, ``NAME@vN``, ``NAME:ALIAS`` (or ``NAME`` and ``version``) with its run."""
    from tether.api import runs
    from tether.registry.models import resolve

    found = resolve(ws, spec, version)
    if not found.run_id:
        return VersionDetail(found, None)
    run = runs.find(ws, found.run_id)
    if run is None:
        return VersionDetail(found, MakerRun(found.run_id, None, None))
    maker = MakerRun(
        run.id,
        run.name,
        run.seed,
        dict(run.params),
        {k: m.last for k, m in run.metrics.items()},
    )
    return VersionDetail(found, maker)


@dataclass(frozen=True)
class AliasRollback:
    event: ModelEvent
    restored: UnpackReport | None  # with restore=True: the files put back

    def to_json(self) -> dict[str, Any]:
        out = self.event.to_json()
        if self.restored is not None:
            out["restored"] = {"written": self.restored.written, "replaced": self.restored.replaced}
        return out


@dataclass(frozen=True)
class RollbackRequest:
    name: str
    alias: str
    to: str | None = None  # a version; None: where the alias pointed before its last move
    reason: str | None = None
    restore: bool = False  # also put that version's files back into the project


def rollback(ws: Workspace, request: RollbackRequest) -> AliasRollback:
    from tether.registry import models

    event = models.rollback(ws, request.name, request.alias, to=request.to, reason=request.reason)
    restored = None
    if request.restore:
        version = models.resolve(ws, f"{request.name}@v{event.new_version}")
        restored = models.restore(ws, version)
    return AliasRollback(event, restored)


@dataclass(frozen=True)
class HistoryQuery:
    name: str  # a model of the project, or REGISTRY/REPO (no project needed)
    alias: str | None = None  # only this alias's moves
    remote: bool = False  # read the project's model from the registry it was pushed to


def history(
    ws: Workspace | None, query: HistoryQuery, network: NetworkOptions = DEFAULT_NETWORK
) -> tuple[ModelEvent, ...]:
    """Every registration and alias move of a model, oldest first."""
    from tether.oci.reference import parse_reference
    from tether.registry import models

    if not query.remote and parse_reference(query.name, default_tag=False).registry is None:
        if ws is None:
            raise UsageError(
                f"{query.name} names no registry and there is no project here",
                hint="run it in a project, or give REGISTRY/REPO",
            )
        return tuple(models.history(ws, query.name, query.alias))
    from tether.modelkit.remote import remote_ref
    from tether.registry.remote import remote_history

    target = query.name
    if query.remote:
        if ws is None:
            raise UsageError("--remote needs a project", hint="or give REGISTRY/REPO")
        target = _pushed_to(ws, query.name)
    with network.client(remote_ref(target).registry or "", ws) as client:
        events = remote_history(client, target)
    return tuple(e for e in events if query.alias is None or e.alias == query.alias)


def _pushed_to(ws: Workspace, name: str) -> str:
    from tether.registry.models import list_models

    found = next((m.remote for m in list_models(ws) if m.name == name), None)
    if not found:
        raise UsageError(
            f"{name} has not been pushed to a registry",
            hint=f"push it first: tether model push {name} REGISTRY/REPO",
        )
    return found


def push(
    ws: Workspace,
    name: str,
    destination: str | None = None,
    network: NetworkOptions = DEFAULT_NETWORK,
) -> ModelPushReport:
    """Push every version in use, every alias and the history of model ``name``;
    ``destination`` defaults to where it was pushed last."""
    from tether.modelkit.remote import remote_ref
    from tether.registry.remote import push_model

    target = destination or _pushed_to(ws, name)
    with network.client(remote_ref(target).registry or "", ws) as client:
        return push_model(ws, client, name, target)


@dataclass(frozen=True)
class Catalog:
    """The registered models and the ModelKits in the store."""

    models: tuple[ModelSummary, ...]
    kits: tuple[KitSummary, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "models": [m.to_json() for m in self.models],
            "kits": [k.to_json() for k in self.kits],
        }


def catalog(ws: Workspace) -> Catalog:
    from tether.modelkit.catalog import list_kits
    from tether.registry.models import list_models

    return Catalog(tuple(list_models(ws)), tuple(list_kits(ws)))


@dataclass(frozen=True)
class ModelOverview:
    name: str
    versions: tuple[ModelVersion, ...]
    history: tuple[ModelEvent, ...]  # newest first
    remote: str | None = None  # the registry repository 'model push' mirrors it to

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [v.to_json() for v in self.versions],
            "history": [e.to_json() for e in self.history],
            "remote": self.remote,
        }


def overview(ws: Workspace, name: str) -> ModelOverview:
    """Every version of a model (archived too) and its whole history."""
    from tether.registry import models

    with ws.db.snapshot():
        versions = tuple(models.versions(ws, name))
        events = tuple(reversed(models.history(ws, name)))
        remote = next((m.remote for m in models.list_models(ws) if m.name == name), None)
    return ModelOverview(name, versions, events, remote)


@dataclass(frozen=True)
class AliasMove:
    name: str
    alias: str
    version: str  # v2, 2, sha256:…, or another alias
    reason: str | None = None


def set_alias(ws: Workspace, move: AliasMove) -> ModelEvent | None:
    """Point an alias at a version, recorded with who and why; None when it already
    points there."""
    from tether.registry import models

    return models.set_alias(ws, move.name, move.alias, move.version, reason=move.reason)
