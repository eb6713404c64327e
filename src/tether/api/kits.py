"""Use cases on ModelKits that the CLI, the web UI and the server share: describing a
ModelKit wherever it is (the local store first, else its registry), listing a registry
repository's tags, tagging and removing in the store or on a registry, and unpacking
from either."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tether.api.registry import DEFAULT_NETWORK, NetworkOptions
from tether.errors import ModelKitNotFound, UsageError
from tether.oci.reference import parse_reference

if TYPE_CHECKING:
    from tether.modelkit.diff import FileInfo, KitDiff
    from tether.modelkit.provenance import Provenance
    from tether.modelkit.remote import RemoteTag
    from tether.modelkit.tags import TagChange
    from tether.modelkit.unpack import UnpackReport
    from tether.workspace import Workspace

__all__ = ["NetworkOptions"]  # re-exported: kits.NetworkOptions is what most callers want


@dataclass(frozen=True)
class KitDescription:
    """A ModelKit's digest, references, manifest, Kitfile and layers; with the
    provenance documents attached to it when they were asked for."""

    document: dict[str, Any]
    source: Literal["store", "registry"]
    provenance: tuple[Provenance, ...] | None = None

    @property
    def digest(self) -> str:
        return str(self.document["digest"])

    def to_json(self) -> dict[str, Any]:
        return self.document


def describe(
    ws: Workspace | None,
    ref: str,
    *,
    remote: bool = False,
    provenance: bool = False,
    network: NetworkOptions = DEFAULT_NETWORK,
) -> KitDescription:
    """The ModelKit ``ref`` names: from the local store, else (a REF with a registry)
    from the registry, manifest and Kitfile only. ``remote`` skips the store."""
    from tether.modelkit.catalog import describe as describe_kit
    from tether.modelkit.catalog import inspect

    on_registry = parse_reference(ref).registry is not None
    if ws is None and not on_registry:
        raise UsageError(
            f"{ref} names no registry and there is no project here",
            hint="run it in a project, or give REGISTRY/REPO:TAG",
        )
    if ws is not None and not (remote and on_registry):
        try:
            document = inspect(ws, ref)
        except ModelKitNotFound:
            if not on_registry:
                raise
        else:
            statements = None
            if provenance:
                from tether.hashing import Digest
                from tether.modelkit.provenance import read_local

                statements = tuple(read_local(ws, Digest.parse(document["digest"])))
            return KitDescription(document, "store", statements)
    from tether.modelkit.remote import fetch_provenance, remote_kit, remote_ref

    where = remote_ref(ref)
    with network.client(where.registry or "", ws) as client:
        kit = remote_kit(client, ref)
        found = None
        if provenance:
            found = tuple(
                parsed
                for _, _, parsed in fetch_provenance(client, where.repository or "", kit.digest)
            )
    return KitDescription(describe_kit(kit, [ref]), "registry", found)


@dataclass(frozen=True)
class RegistryTags:
    repository: str
    tags: tuple[RemoteTag, ...]

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {"repository": self.repository, "tag": t.tag, "digest": str(t.digest)}
            for t in self.tags
        ]


def registry_tags(
    ws: Workspace | None, repository: str, network: NetworkOptions = DEFAULT_NETWORK
) -> RegistryTags:
    """Every tag of REGISTRY/REPO with the digest it points at."""
    from tether.modelkit.remote import remote_ref, remote_tags

    ref = remote_ref(repository)
    with network.client(ref.registry or "", ws) as client:
        return RegistryTags(ref.name, tuple(remote_tags(client, repository)))


@dataclass(frozen=True)
class TagRequest:
    source: str  # a ModelKit: REPO:TAG, sha256:… (with remote: REGISTRY/REPO:TAG)
    target: str  # REPO:TAG (with remote: REGISTRY/REPO:TAG on the same registry)
    force: bool = False  # move a version tag that points elsewhere
    remote: bool = False  # tag on the registry, downloading nothing


def tag(
    ws: Workspace | None, request: TagRequest, network: NetworkOptions = DEFAULT_NETWORK
) -> TagChange:
    """Give a ModelKit another tag, in the store or (``remote``) on its registry."""
    from tether.modelkit.tags import TagChange, set_tags

    if request.remote:
        from tether import config
        from tether.modelkit.remote import remote_ref, tag_remote

        settings = ws.settings if ws is not None else config.load(None)
        with network.client(remote_ref(request.target).registry or "", ws) as client:
            digest, old = tag_remote(
                client,
                request.source,
                request.target,
                force=request.force,
                is_version_tag=settings.is_version_tag,
            )
        action: Literal["set", "move", "unchanged"] = (
            "unchanged" if old == digest else "set" if old is None else "move"
        )
        return TagChange(request.target, action, old, digest)
    if ws is None:
        raise UsageError("tagging in the store needs a project", hint="run it in a project")
    entry = ws.index.resolve(parse_reference(request.source))
    (change,) = set_tags(
        ws, [parse_reference(request.target)], entry.descriptor, force=request.force
    )
    return change


def remove(
    ws: Workspace | None,
    ref: str,
    *,
    remote: bool = False,
    force: bool = False,
    network: NetworkOptions = DEFAULT_NETWORK,
) -> tuple[str, ...]:
    """Remove a tag or, by digest, a ModelKit with all its tags: in the store (blobs
    stay until gc) or on the registry. Returns what was removed."""
    if remote:
        from tether.modelkit.remote import remote_ref, remove_remote

        with network.client(remote_ref(ref).registry or "", ws) as client:
            return tuple(remove_remote(client, ref, force=force))
    from tether.modelkit.tags import remove as remove_tags

    if ws is None:
        raise UsageError("removing from the store needs a project", hint="run it in a project")
    return tuple(change.ref for change in remove_tags(ws, parse_reference(ref)))


@dataclass(frozen=True)
class UnpackRequest:
    ref: str
    directory: Path
    filters: tuple[str, ...] = ()  # kitfile, model, code, datasets[:NAME], …
    overwrite: bool = False  # replace files that differ
    dry_run: bool = False


def unpack(
    ws: Workspace, request: UnpackRequest, network: NetworkOptions = DEFAULT_NETWORK
) -> UnpackReport:
    """Unpack a ModelKit from the store; one on a registry that the store lacks is
    fetched first (only the layers the filters select)."""
    from tether.modelkit.unpack import unpack as unpack_local

    r = request
    try:
        return unpack_local(
            ws,
            r.ref,
            r.directory,
            filters=list(r.filters),
            overwrite=r.overwrite,
            dry_run=r.dry_run,
        )
    except ModelKitNotFound:
        registry = parse_reference(request.ref).registry
        if registry is None:
            raise
    from tether.modelkit.remote import unpack_remote

    with network.client(registry, ws) as client:
        return unpack_remote(
            ws,
            r.ref,
            client,
            r.directory,
            filters=list(r.filters),
            overwrite=r.overwrite,
            dry_run=r.dry_run,
        )


@dataclass(frozen=True)
class KitContents:
    """A ModelKit in the store with the files of each layer."""

    description: KitDescription
    files: tuple[FileInfo, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            **self.description.to_json(),
            "files": [
                {"path": f.path, "size": f.size, "digest": f.digest, "mode": f.mode}
                for f in self.files
            ],
        }


def contents(ws: Workspace, ref: str) -> KitContents:
    """A ModelKit of the store with its files. The store only: a page naming a
    registry must not make the server fetch from it."""
    from tether.modelkit.catalog import describe as describe_kit
    from tether.modelkit.diff import layer_files
    from tether.modelkit.load import load

    kit = load(ws, ref)
    references = [e.ref() for e in ws.index.kits() if e.digest == kit.digest]
    files = tuple(f for layer in kit.layers for f in layer_files(ws, layer))
    return KitContents(KitDescription(describe_kit(kit, references), "store"), files)


def diff(ws: Workspace, ref_a: str, ref_b: str) -> KitDiff:
    """What changed between two ModelKits in the store: Kitfile fields and files."""
    from tether.modelkit.diff import diff as diff_kits

    return diff_kits(ws, ref_a, ref_b)
