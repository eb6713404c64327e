"""Use case on lineage: trace what made a subject, or what used it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tether.lineage.graph import Graph
    from tether.workspace import Workspace


@dataclass(frozen=True)
class Trace:
    subject: str  # a model version or alias, a ModelKit REF, a run, a data PATH[@DIGEST]
    downstream: bool = False  # what used it, instead of what made it
    depth: int | None = None  # stop after this many steps


def trace(ws: Workspace, request: Trace) -> Graph:
    from tether.lineage.graph import lineage

    return lineage(ws, request.subject, downstream=request.downstream, depth=request.depth)
