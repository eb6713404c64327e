"""What changed between two ModelKits: Kitfile fields, and files added, removed and
modified — not only layer digests, as ``kit diff`` reports.

A layer's file listing (path, size, sha256, mode) is computed by streaming the layer
once (verified like an unpack) and cached in the ``layer_files`` table by layer digest;
layers both ModelKits share are not read at all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tether.hashing import hash_stream
from tether.manifest.kitfile import Kitfile
from tether.modelkit.load import Layer, load
from tether.modelkit.tarread import Limits, iter_members
from tether.repositories import kits
from tether.workspace import Workspace


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    digest: str
    mode: int


@dataclass(frozen=True)
class FileChange:
    path: str
    change: str  # added | removed | modified
    old_size: int | None
    new_size: int | None


@dataclass(frozen=True)
class FieldChange:
    key: str
    old: Any
    new: Any


@dataclass(frozen=True)
class KitDiff:
    a: str
    b: str
    a_digest: str
    b_digest: str
    fields: list[FieldChange]
    files: list[FileChange]
    unchanged_files: int  # in layers that differ; files of shared layers are not listed
    shared_layers: int

    @property
    def identical(self) -> bool:
        return self.a_digest == self.b_digest

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def diff(ws: Workspace, ref_a: str, ref_b: str) -> KitDiff:
    a, b = load(ws, ref_a), load(ws, ref_b)
    fields = diff_kitfiles(a.kitfile, b.kitfile)
    a_digests = {str(layer.descriptor.digest) for layer in a.layers}
    b_digests = {str(layer.descriptor.digest) for layer in b.layers}
    shared = a_digests & b_digests
    files_a: dict[str, FileInfo] = {}
    files_b: dict[str, FileInfo] = {}
    unchanged = 0
    for layer in a.layers:
        if str(layer.descriptor.digest) in shared:
            continue
        files_a.update({f.path: f for f in layer_files(ws, layer)})
    for layer in b.layers:
        if str(layer.descriptor.digest) in shared:
            continue
        files_b.update({f.path: f for f in layer_files(ws, layer)})
    changes: list[FileChange] = []
    for path in sorted(files_a.keys() | files_b.keys()):
        old, new = files_a.get(path), files_b.get(path)
        if old is None and new is not None:
            changes.append(FileChange(path, "added", None, new.size))
        elif new is None and old is not None:
            changes.append(FileChange(path, "removed", old.size, None))
        elif old is not None and new is not None:
            if (old.digest, old.mode) != (new.digest, new.mode):
                changes.append(FileChange(path, "modified", old.size, new.size))
            else:
                unchanged += 1
    return KitDiff(
        ref_a, ref_b, str(a.digest), str(b.digest), fields, changes, unchanged, len(shared)
    )


def layer_files(ws: Workspace, layer: Layer) -> list[FileInfo]:
    """The regular files of a layer, cached by layer digest."""
    key = str(layer.descriptor.digest)
    cached = kits.layer_listing(ws.db, key)
    if cached is not None:
        return [FileInfo(**f) for f in cached]
    limits = Limits.from_settings(ws.settings)
    files: list[FileInfo] = []
    with ws.store.open(layer.descriptor.digest) as raw:
        for member in iter_members(raw, layer.descriptor, layer.type, limits, raw_path=layer.path):
            if member.is_dir:
                continue
            assert member.stream is not None
            digest, size = hash_stream(member.stream)
            files.append(FileInfo(member.rel, size, str(digest), member.mode))
    kits.save_layer_listing(ws.db, key, [asdict(f) for f in files])
    return files


def diff_kitfiles(a: Kitfile, b: Kitfile) -> list[FieldChange]:
    flat_a, flat_b = _flatten(_plain(a)), _flatten(_plain(b))
    return [
        FieldChange(k, flat_a.get(k), flat_b.get(k))
        for k in sorted(flat_a.keys() | flat_b.keys(), key=_key_order)
        if flat_a.get(k) != flat_b.get(k)
    ]


def _plain(kitfile: Kitfile) -> dict[str, Any]:
    import yaml

    doc: dict[str, Any] = yaml.safe_load(kitfile.to_yaml()) or {}
    return doc


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            ident = v.get("name") or v.get("path") or str(i)
            out.update(_flatten(v, f"{prefix}[{ident}]"))
    else:
        out[prefix] = value
    return out


_SECTION_ORDER = [
    "manifestVersion",
    "package",
    "model",
    "code",
    "datasets",
    "docs",
    "prompts",
    "mcpServers",
]


def _key_order(key: str) -> tuple[int, str]:
    head = key.split(".")[0].split("[")[0]
    rank = _SECTION_ORDER.index(head) if head in _SECTION_ORDER else len(_SECTION_ORDER)
    return rank, key
