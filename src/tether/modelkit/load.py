"""Loading a ModelKit from the local store and pairing its layers with Kitfile entries.

Layers are paired with the Kitfile in the config by ``digest`` (KitOps enforces that
the two agree); configs without digests (KitOps before #489) pair by position; ModelPack
artifacts without a Kitfile use each layer's ``org.cncf.model.filepath``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tether.errors import ModelKitError, UsageError
from tether.hashing import Digest
from tether.manifest.kitfile import Kitfile, LayerSpec, clean_path, local_path_problem
from tether.oci import mediatypes as mt
from tether.oci.layout import IndexEntry
from tether.oci.manifest import MAX_MANIFEST_BYTES, Descriptor, ImageManifest
from tether.oci.reference import parse_reference
from tether.workspace import Workspace

FILTER_TYPES = ("kitfile", "model", "code", "datasets", "docs", "prompts", "mcpservers")
_BASE_TO_FILTER = {
    "model": "model",
    "modelpart": "model",
    "code": "code",
    "dataset": "datasets",
    "docs": "docs",
    "mcpb": "mcpservers",
}


@dataclass(frozen=True)
class Layer:
    descriptor: Descriptor
    type: mt.LayerType
    path: str  # the Kitfile path it came from ("." for the context root)
    filter_type: str  # model | code | datasets | docs | prompts | mcpservers
    name: str | None


@dataclass(frozen=True)
class LoadedKit:
    entry: IndexEntry
    manifest: ImageManifest
    raw_manifest: bytes  # exactly as stored (foreign manifests are shown as they are)
    kitfile: Kitfile
    layers: tuple[Layer, ...]

    @property
    def digest(self) -> Digest:
        return self.entry.digest


def load(ws: Workspace, ref_text: str) -> LoadedKit:
    return load_entry(ws, ws.index.resolve(parse_reference(ref_text)))


def load_entry(ws: Workspace, entry: IndexEntry) -> LoadedKit:
    raw = ws.store.read_bytes(entry.digest, max_size=MAX_MANIFEST_BYTES)
    return parse_kit(entry, raw, ws.store.read_bytes)


def parse_kit(entry: IndexEntry, raw: bytes, read_config: Callable[[Digest], bytes]) -> LoadedKit:
    """A ModelKit from its manifest bytes; ``read_config`` fetches the (small) config
    blob, from the store or straight from a registry."""
    manifest = ImageManifest.from_bytes(raw)
    if not manifest.is_modelkit:
        raise ModelKitError(
            f"{entry.ref()} is an OCI artifact but not a ModelKit",
            hint=f"its artifactType is {manifest.artifact_type!r}",
        )
    if manifest.config.media_type == mt.KIT_CONFIG:
        kitfile = Kitfile.from_config(read_config(manifest.config.digest))
    elif mt.ANN_KITFILE in manifest.annotations:
        kitfile = Kitfile.from_config(manifest.annotations[mt.ANN_KITFILE].encode())
    else:
        kitfile = Kitfile(manifestVersion="1.0.0")
    return LoadedKit(entry, manifest, raw, kitfile, tuple(_pair(kitfile, manifest)))


def _pair(kitfile: Kitfile, manifest: ImageManifest) -> list[Layer]:
    specs = kitfile.layer_specs()
    by_digest: dict[str, LayerSpec] = {}
    for s in specs:
        digest = kitfile.entry(s).digest
        if digest:
            by_digest.setdefault(digest, s)
    positional = not by_digest and len(specs) == len(manifest.layers)
    layers = []
    for i, desc in enumerate(manifest.layers):
        ltype = mt.parse_layer_type(desc.media_type)
        if ltype is None:
            raise ModelKitError(
                f"layer {i} has unknown media type {desc.media_type!r}",
                hint="this ModelKit uses a format tether does not know yet",
            )
        spec: LayerSpec | None = by_digest.get(str(desc.digest))
        if spec is None and positional:
            spec = specs[i]
        if spec is not None:
            path, name, ftype = spec.path, spec.name, spec.filter_type
        else:
            if by_digest:
                raise ModelKitError(
                    f"layer {desc.digest.short} is not listed in the ModelKit's Kitfile",
                    hint="digest in config and manifest do not match; the ModelKit is damaged",
                )
            raw_path = desc.annotations.get(mt.ANN_FILEPATH)
            if raw_path is None:
                raise ModelKitError(
                    f"unknown file path for layer {i}",
                    hint="it has no org.cncf.model.filepath annotation",
                )
            problem = local_path_problem(raw_path)
            if problem:
                raise ModelKitError(
                    f"layer {i} path {raw_path!r}: {problem}",
                    hint="this ModelKit is unsafe to unpack; do not use it",
                    code="unsafe-archive",
                )
            path, name = clean_path(raw_path), None
            ftype = _BASE_TO_FILTER[ltype.base]
            if desc.annotations.get(mt.ANN_LAYER_SUBTYPE) == "prompt":
                ftype = "prompts"
        layers.append(Layer(desc, ltype, path, ftype, name))
    return layers


@dataclass(frozen=True)
class Filter:
    types: frozenset[str]
    ids: frozenset[str]  # names or paths; empty = all of those types


def parse_filters(texts: list[str]) -> list[Filter]:
    """Parse ``--filter`` values: ``TYPES[:IDS]`` with comma-separated lists."""
    out = []
    for text in texts:
        types_text, _, ids_text = text.partition(":")
        types = {t.strip().lower() for t in types_text.split(",") if t.strip()}
        unknown = types - set(FILTER_TYPES)
        if not types or unknown:
            raise UsageError(
                f"unknown filter type {', '.join(sorted(unknown)) or text!r}",
                hint="use " + "|".join(FILTER_TYPES) + ", optionally :NAME[,NAME]",
            )
        ids = {
            clean_path(i.strip()) if "/" in i else i.strip()
            for i in ids_text.split(",")
            if i.strip()
        }
        out.append(Filter(frozenset(types), frozenset(ids)))
    return out


def selected(layer: Layer, filters: list[Filter]) -> bool:
    if not filters:
        return True
    return any(
        layer.filter_type in f.types and (not f.ids or layer.name in f.ids or layer.path in f.ids)
        for f in filters
    )


def wants_kitfile(filters: list[Filter]) -> bool:
    return not filters or any("kitfile" in f.types for f in filters)
