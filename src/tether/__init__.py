"""tether: tether every model to the exact code, data, environment and seed that made it.

The package imports lightly; each name below loads its module on first use, so that
``import tether`` and ``tether --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Workspace": "tether.workspace",
    "init_workspace": "tether.workspace",
    "TetherError": "tether.errors",
    "Digest": "tether.hashing",
    "Kitfile": "tether.manifest.kitfile",
    "pack": "tether.modelkit.pack",
    "unpack": "tether.modelkit.unpack",
    "rollback": "tether.modelkit.unpack",
    "diff": "tether.modelkit.diff",
    "list_kits": "tether.modelkit.catalog",
    "inspect": "tether.modelkit.catalog",
    "parse_reference": "tether.oci.reference",
    "open_client": "tether.modelkit.remote",
    "push": "tether.modelkit.remote",
    "pull": "tether.modelkit.remote",
    "start_run": "tether.runs.api",
    "active_run": "tether.runs.api",
    "Run": "tether.runs.api",
    "seed_everything": "tether.determinism",
    "autolog": "tether.integrations",
    "watch": "tether.integrations.pytorch",
    "SeedReport": "tether.determinism",
}

__all__ = [
    "Digest",
    "Kitfile",
    "Run",
    "SeedReport",
    "TetherError",
    "Workspace",
    "__version__",
    "active_run",
    "autolog",
    "diff",
    "init_workspace",
    "inspect",
    "list_kits",
    "models",
    "open_client",
    "pack",
    "parse_reference",
    "pull",
    "push",
    "rollback",
    "seed_everything",
    "start_run",
    "unpack",
    "watch",
]

if TYPE_CHECKING:
    from tether.determinism import SeedReport, seed_everything
    from tether.errors import TetherError
    from tether.hashing import Digest
    from tether.integrations import autolog
    from tether.integrations.pytorch import watch
    from tether.manifest.kitfile import Kitfile
    from tether.modelkit.catalog import inspect, list_kits
    from tether.modelkit.diff import diff
    from tether.modelkit.pack import pack
    from tether.modelkit.remote import open_client, pull, push
    from tether.modelkit.unpack import rollback, unpack
    from tether.oci.reference import parse_reference
    from tether.registry import models
    from tether.runs.api import Run, active_run, start_run
    from tether.workspace import Workspace, init_workspace


# Modules offered as namespaces: tether.models.register(ws, "recs", "v2").
_MODULES = {"models": "tether.registry.models"}


def __dir__() -> list[str]:
    # Tab completion in a notebook lists the lazy names too, not only what is loaded.
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tether' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
