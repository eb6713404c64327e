"""Use cases on the model registry shared by every face: one version with the run that
made it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether.registry.records import ModelVersion

if TYPE_CHECKING:
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
