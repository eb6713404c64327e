"""Facts only the interpreter that runs a command knows: its version and its installed
distributions. This file runs as ``python -c`` inside *that* interpreter (any CPython or
PyPy >= 3.8), so it imports nothing from tether and prints one JSON document. tether
imports ``collect`` to describe its own interpreter without a subprocess."""

from __future__ import annotations

import json
import os
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
        "conda": _conda(),
    }


def _conda_channel(value: str) -> str:
    # "https://conda.anaconda.org/conda-forge/linux-64" -> "conda-forge"; names stay.
    parts = [p for p in value.rstrip("/").split("/") if p]
    if "://" not in value:
        return value
    platform_dir = parts[-1].startswith(("linux-", "osx-", "win-")) or parts[-1] == "noarch"
    if len(parts) >= 2 and platform_dir:
        parts = parts[:-1]
    return parts[-1] if len(parts) > 2 else value


def _conda() -> Any:
    """The conda packages of the interpreter's environment (its ``conda-meta``), when
    it lives in one: name, version, build and channel, and the explicit URLs."""
    meta = os.path.join(sys.prefix, "conda-meta")
    if not os.path.isdir(meta):
        return None
    packages: dict[str, dict[str, str]] = {}
    channels: list[str] = []
    explicit: list[str] = []
    for entry in sorted(os.listdir(meta)):
        if not entry.endswith(".json"):
            continue
        try:
            with open(os.path.join(meta, entry), encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            continue
        name, version = doc.get("name"), doc.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            continue
        channel = _conda_channel(str(doc.get("channel") or ""))
        packages[name] = {
            "version": version,
            "build": str(doc.get("build") or ""),
            "channel": channel,
        }
        if channel and channel not in channels:
            channels.append(channel)
        url = doc.get("url")
        if isinstance(url, str) and url:
            md5 = doc.get("md5")
            explicit.append(url + ("#" + md5 if isinstance(md5, str) and md5 else ""))
    return {"channels": channels, "packages": packages, "explicit": explicit}


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
