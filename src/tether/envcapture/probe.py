"""Facts only the interpreter that runs a command knows: its version and its installed
distributions. This file runs as ``python -c`` inside *that* interpreter (any CPython or
PyPy >= 3.8), so it imports nothing from tether and prints one JSON document. tether
imports ``collect`` to describe its own interpreter without a subprocess."""

from __future__ import annotations

import json
import platform
import re
import sys
from importlib import metadata
from typing import Any


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def collect() -> dict[str, Any]:
    packages: dict[str, str] = {}
    sources: dict[str, dict[str, Any]] = {}
    if True:
        for dist in metadata.distributions():
            name = dist.metadata["Name"] if dist.metadata else None
            if not name:
                continue
            key = _canonical(name)
            if key in packages:  # first on sys.path wins, as for imports
                continue
            packages[key] = dist.version
            try:
                direct = dist.read_text("direct_url.json")
            except Exception:
                direct = None
            if direct:
                try:
                    info = json.loads(direct)
                except ValueError:
                    continue
                entry: dict[str, Any] = {}
                if info.get("dir_info", {}).get("editable"):
                    entry["editable"] = True
                vcs = info.get("vcs_info")
                if vcs:
                    entry["vcs"] = vcs.get("vcs")
                    entry["commit"] = vcs.get("commit_id")
                if entry:
                    sources[key] = entry
    return {
        "implementation": platform.python_implementation().lower(),
        "version": platform.python_version(),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "base_prefix": getattr(sys, "base_prefix", sys.prefix),
        "packages": dict(sorted(packages.items())),
        "package_sources": dict(sorted(sources.items())),
        # Where the distributions were found: a cached probe is valid while none of
        # these folders changed (an install or removal changes its folder's mtime).
        "path": [p for p in sys.path if p],
        # Which distributions provide each top-level module (sklearn -> scikit-learn):
        # what a run imported becomes what '--packages imported' installs.
        "modules": _modules(),
    }


def _modules() -> dict[str, list[str]]:
    mapping = getattr(metadata, "packages_distributions", None)  # Python 3.10+
    if mapping is None:
        return {}
    try:
        found = mapping()
    except Exception:
        return {}
    return {
        module: sorted({_canonical(d) for d in dists})
        for module, dists in sorted(found.items())
        if module and not module.startswith("_")
    }


if __name__ == "__main__":
    print(json.dumps(collect()))
