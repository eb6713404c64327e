"""Read views of the local store: the list of ModelKits and one ModelKit in detail."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tether.errors import TetherError
from tether.modelkit.load import LoadedKit, load, load_entry
from tether.oci.layout import IndexEntry
from tether.oci.reference import parse_reference
from tether.workspace import Workspace


@dataclass(frozen=True)
class KitSummary:
    repository: str
    tag: str | None
    digest: str
    model: str | None
    version: str | None
    size: int
    author: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "tag": self.tag,
            "digest": self.digest,
            "model": self.model,
            "version": self.version,
            "size": self.size,
            "author": self.author,
        }


def list_kits(ws: Workspace, repository: str | None = None) -> list[KitSummary]:
    """Every (repository, tag) in the store, one row per tag; untagged kits once."""
    if repository is not None:
        repository = parse_reference(repository, default_tag=False).name
    rows: list[KitSummary] = []
    cache: dict[str, tuple[str | None, str | None, int, str | None]] = {}
    for entry in ws.index.kits():
        if repository is not None and entry.repository != repository:
            continue
        key = str(entry.digest)
        if key not in cache:
            cache[key] = _summary(ws, entry)
        model, version, size, author = cache[key]
        rows.append(KitSummary(entry.repository, entry.tag, key, model, version, size, author))
    rows.sort(key=lambda r: (r.repository, r.tag is None, r.tag or ""))
    return rows


def _summary(ws: Workspace, entry: IndexEntry) -> tuple[str | None, str | None, int, str | None]:
    try:
        kit = load_entry(ws, entry)
    except TetherError:
        return None, None, 0, None
    kf = kit.kitfile
    model = kf.model.name if kf.model else None
    package = kf.package
    version = package.version if package else None
    author = ", ".join(package.authors) if package and package.authors else None
    return model or (package.name if package else None), version, kit.manifest.total_size, author


def inspect(ws: Workspace, ref: str) -> dict[str, Any]:
    """Digest, manifest and Kitfile of one ModelKit (as ``kit inspect`` prints them)."""
    kit = load(ws, ref)
    return describe(kit, [e.ref() for e in ws.index.kits() if e.digest == kit.digest])


def describe(kit: LoadedKit, references: list[str]) -> dict[str, Any]:
    """A ModelKit as ``inspect`` shows it, wherever it was read from."""
    return {
        "digest": str(kit.digest),
        "references": references,
        "manifest": json.loads(kit.raw_manifest),
        "kitfile": kit.kitfile.model_dump(exclude_none=True),
        "layers": [
            {
                "path": layer.path,
                "type": layer.filter_type,
                "name": layer.name,
                "mediaType": layer.descriptor.media_type,
                "digest": str(layer.descriptor.digest),
                "size": layer.descriptor.size,
            }
            for layer in kit.layers
        ],
    }
