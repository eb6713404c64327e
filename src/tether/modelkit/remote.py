"""ModelKits on OCI registries: push, pull, and the remote views (tags, inspect, tag,
remove). The protocol is ``oci/client.py``; this module knows what a ModelKit is.

Push sends blobs first (only those the repository lacks: HEAD, then a cross-repository
mount where another repository of the registry is known to hold the blob, else an
upload), then the manifest by digest, then the tag, and re-reads the tag to catch a
concurrent push that won. Pull resolves a tag once and fetches by digest from then on,
verifies every blob against its descriptor as it streams into the store, and tags the
local copy ``registry/repository:tag`` under the same immutable-version policy as
``tether tag``. Which registry repositories hold which blobs is remembered in the
``registry_blobs`` table, for mounts.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.errors import AuthError, ModelKitError, ModelKitNotFound, RegistryError, UsageError
from tether.hashing import Digest
from tether.modelkit.tags import TagChange, add_untagged, set_tags
from tether.oci import credentials
from tether.oci import mediatypes as mt
from tether.oci.client import RegistryClient
from tether.oci.layout import IndexEntry
from tether.oci.manifest import MAX_MANIFEST_BYTES, Descriptor, ImageManifest
from tether.oci.reference import Reference, parse_reference
from tether.oci.session import Connection
from tether.reporting import SILENT, Reporter
from tether.repositories import kits
from tether.workspace import Workspace

if TYPE_CHECKING:
    from tether.config import Settings
    from tether.modelkit.load import LoadedKit
    from tether.modelkit.provenance import Provenance
    from tether.modelkit.unpack import UnpackReport

MAX_CONFIG_BYTES = 4 << 20


@dataclass(frozen=True)
class RegistryTransferReport:
    ref: str  # registry/repository[:tag]@digest
    digest: Digest
    blobs: int  # blobs the ModelKit (or the filtered part of it) has
    moved: int  # blobs that travelled
    mounted: int  # blobs linked from another repository, nothing sent
    present: int  # blobs that were already there
    bytes_moved: int
    skipped: int = 0  # layers left out by --filter
    tag_changes: list[TagChange] = field(default_factory=list)
    tag_overtaken: Digest | None = None  # someone else's push moved the tag meanwhile
    provenance: int = 0  # provenance documents that travelled with it
    provenance_refused: int = 0  # referrers that claimed to be provenance and were not

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "digest": str(self.digest),
            "blobs": self.blobs,
            "moved": self.moved,
            "mounted": self.mounted,
            "present": self.present,
            "bytes_moved": self.bytes_moved,
            "skipped_layers": self.skipped,
            "tag_overtaken": str(self.tag_overtaken) if self.tag_overtaken else None,
            "provenance": self.provenance,
            "provenance_refused": self.provenance_refused,
        }


@dataclass(frozen=True)
class RemoteTag:
    tag: str
    digest: Digest
    size: int  # manifest size


def connection_for(
    settings: Settings,
    registry: str,
    *,
    plain_http: bool = False,
    insecure: bool = False,
    ca_file: str | None = None,
    concurrency: int | None = None,
) -> Connection:
    """Flags win; ``registry.plain_http`` in the settings names registries that are
    always plain HTTP."""
    return Connection(
        plain_http=plain_http or settings.is_plain_http(registry),
        insecure=insecure,
        ca_file=ca_file,
        concurrency=max(1, concurrency or settings.registry_concurrency),
        token_realms=settings.token_realms,
    )


def open_client(
    registry: str,
    connection: Connection | None = None,
    *,
    ws: Workspace | None = None,
    env: Mapping[str, str] | None = None,
) -> RegistryClient:
    """A client for ``registry`` that reads the stored credential only when the
    registry asks for one. Without ``connection``, the project's (or user's) settings
    decide::

        with open_client("registry.example.com", ws=ws) as client:
            push(ws, "movie:v1", "registry.example.com/team/movie:v1", client)
    """
    if connection is None:
        from tether import config

        settings = ws.settings if ws is not None else config.load(None, env)
        connection = connection_for(settings, registry)
    journal = ws.dot / "cache" / "uploads" if ws is not None else None
    return RegistryClient(
        registry,
        connection=connection,
        credential=lambda: credentials.lookup(registry, env),
        upload_journal=journal,
    )


def remote_ref(text: str) -> Reference:
    ref = parse_reference(text)
    if ref.registry is None or ref.repository is None:
        raise UsageError(
            f"{text!r} names no registry",
            hint="give REGISTRY/REPOSITORY[:TAG], e.g. registry.example.com/team/movie:v1",
        )
    return ref


# -- push -----------------------------------------------------------------------------


def push(
    ws: Workspace,
    source: str,
    destination: str | None,
    client: RegistryClient,
    *,
    report: Reporter = SILENT,
) -> RegistryTransferReport:
    """Push the local ModelKit ``source`` to ``destination`` (default: ``source``,
    which must then name a registry)."""
    src = parse_reference(source)
    entry = ws.index.resolve(src)
    dest = remote_ref(destination) if destination else remote_ref(source)
    if destination and "@" not in destination and ":" not in destination.rsplit("/", 1)[-1]:
        dest = dest.with_tag(src.tag) if src.tag else dest  # keep the source's tag
    if dest.registry != client.registry:
        raise UsageError(f"{dest} is not on {client.registry}", hint="internal: wrong client")
    if dest.digest is not None and dest.digest != entry.digest:
        raise UsageError(
            f"{dest} names another digest than the local {entry.ref()} ({entry.digest.short})",
            hint="push by tag, or give the ModelKit's own digest",
        )
    repo = dest.repository or ""
    raw = ws.store.read_bytes(entry.digest, max_size=MAX_MANIFEST_BYTES)
    manifest = ImageManifest.from_bytes(raw)
    blobs = _unique([manifest.config, *manifest.layers])
    missing = [d for d in blobs if not ws.store.has(d.digest)]
    if missing:
        raise ModelKitError(
            f"{len(missing)} blob(s) of {entry.ref()} are not in the local store, e.g. "
            f"{missing[0].digest.short}",
            hint="it was pulled with --filter; pull it whole before pushing it",
        )
    sources = _known_sources(ws, client.registry, repo, blobs)
    report.start(sum(d.size for d in blobs))
    counts = _Counts()

    def one(desc: Descriptor) -> None:
        size = client.blob_size(repo, desc.digest)
        if size is not None:
            counts.add("present")
            report.advance(desc.size)
            return
        for other in sources.get(desc.digest, []):
            if client.mount_blob(repo, desc.digest, other):
                counts.add("mounted")
                report.advance(desc.size)
                return
        sent = client.upload_blob(repo, desc, lambda: ws.store.open(desc.digest), report.advance)
        counts.add("moved", sent)

    _parallel(one, blobs, client.connection.concurrency)
    _remember(ws, client.registry, repo, blobs)
    # Manifest last, by digest first: the tag never points at something incomplete.
    client.put_manifest(repo, str(entry.digest), raw, mt.OCI_MANIFEST)
    attached = push_referrers(ws, client, repo, entry.digest)
    overtaken = None
    if dest.tag and dest.digest is None:
        client.put_manifest(repo, dest.tag, raw, mt.OCI_MANIFEST)
        now = client.head_manifest(repo, dest.tag)
        if now is not None and now.digest != entry.digest:
            overtaken = now.digest
    name = f"{dest.registry}/{repo}" + (f":{dest.tag}" if dest.tag and not dest.digest else "")
    return RegistryTransferReport(
        f"{name}@{entry.digest}",
        entry.digest,
        len(blobs),
        counts.n["moved"],
        counts.n["mounted"],
        counts.n["present"],
        counts.bytes,
        tag_overtaken=overtaken,
        provenance=attached,
    )


def push_referrers(ws: Workspace, client: RegistryClient, repo: str, subject: Digest) -> int:
    """Send the provenance documents attached to ``subject`` (already pushed)."""
    sent = 0
    for entry in ws.index.referrers(subject):
        raw = ws.store.read_bytes(entry.digest, max_size=MAX_MANIFEST_BYTES)
        manifest = ImageManifest.from_bytes(raw)
        for desc in _unique([manifest.config, *manifest.layers]):
            if client.blob_size(repo, desc.digest) is None:
                client.upload_blob(repo, desc, functools.partial(ws.store.open, desc.digest))
        client.attach(repo, raw, mt.OCI_MANIFEST, subject, manifest.artifact_type or mt.IN_TOTO)
        sent += 1
    return sent


def pull_referrers(
    ws: Workspace,
    client: RegistryClient,
    repo: str,
    subject: Descriptor,
    refused: list[Digest] | None = None,
) -> int:
    """Keep the provenance documents a registry holds for ``subject``."""
    from tether.modelkit import provenance

    found = fetch_provenance(client, repo, subject.digest, refused)
    for manifest, statement, _ in found:
        with ws.lock("gc", shared=True):
            ws.store.put_bytes(statement)
            provenance.store_referrer(ws, subject.digest, manifest)
    return len(found)


def fetch_provenance(
    client: RegistryClient, repo: str, subject: Digest, refused: list[Digest] | None = None
) -> list[tuple[bytes, bytes, Provenance]]:
    """The provenance documents a registry lists for ``subject``, as (referrer manifest,
    Statement, parsed): each checked against its digest and left out unless it is a
    Statement about this very ModelKit. Anyone who may push can attach referrers, so a
    bad one is skipped (and counted in ``refused``), never a reason to fail a pull."""
    from tether.modelkit import provenance

    out = []
    for desc in client.referrers(repo, subject, mt.IN_TOTO):
        try:
            served = client.get_manifest(repo, str(desc.digest))
            manifest = ImageManifest.from_bytes(served.data)
            layer = next((d for d in manifest.layers if d.media_type == mt.IN_TOTO), None)
            if layer is None or layer.size > provenance.MAX_STATEMENT_BYTES:
                raise ModelKitError("not a provenance document")
            blob = client.read_blob(repo, layer.digest, provenance.MAX_STATEMENT_BYTES)
            parsed = provenance.parse_referrer(served.data, None, subject, blob)
        except (ModelKitError, RegistryError):
            if refused is not None:
                refused.append(desc.digest)
            continue
        out.append((served.data, blob, parsed))
    return out


# -- pull -------------------------------------------------------------------------------


def pull(
    ws: Workspace,
    ref_text: str,
    client: RegistryClient,
    *,
    filters: list[str] | None = None,
    force: bool = False,
    tag: bool = True,
    report: Reporter = SILENT,
) -> tuple[RegistryTransferReport, IndexEntry]:
    """Fetch a ModelKit (or, with ``filters``, the layers they select) into the store.

    With ``tag`` the local copy is tagged ``registry/repository:tag``; without, nothing
    but blobs is written (``tether unpack REMOTE_REF``), and gc may reclaim them."""
    # The Kitfile model (pydantic) is imported only by what reads Kitfiles: push does not.
    from tether.modelkit.load import parse_filters, parse_kit, selected

    ref = remote_ref(ref_text)
    repo = ref.repository or ""
    reference = str(ref.digest) if ref.digest else (ref.tag or "latest")
    served = client.get_manifest(repo, reference)
    if served.media_type in (mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST):
        raise ModelKitError(
            f"{ref} is an index of several manifests, not one ModelKit",
            hint="pull one of its manifests by digest (see 'tether inspect')",
        )
    entry = IndexEntry(ref.name, ref.tag if tag else None, served.descriptor)
    # Parsed before any layer is fetched: a foreign artifact is refused with at most its
    # (verified) config kept.
    config_fetched: list[Digest] = []
    kit = parse_kit(entry, served.data, lambda d: _config(ws, client, repo, d, config_fetched))
    wanted = parse_filters(filters or [])
    layers = [layer.descriptor for layer in kit.layers if selected(layer, wanted)]
    if wanted and not layers and not any("kitfile" in f.types for f in wanted):
        raise UsageError(
            "the filter matches no layer of this ModelKit",
            hint="see 'tether inspect " + str(ref) + "' for its layers",
        )
    blobs = _unique([kit.manifest.config, *layers])
    todo = [d for d in blobs if not ws.store.has(d.digest)]
    fetched = [kit.manifest.config] if config_fetched else []
    report.start(sum(d.size for d in todo))

    def one(desc: Descriptor) -> None:
        client.download_blob(repo, desc, ws.store, report.advance)

    _parallel(one, sorted(todo, key=lambda d: -d.size), client.connection.concurrency)
    ws.store.put_bytes(served.data)
    _remember(ws, client.registry, repo, blobs)
    changes: list[TagChange] = []
    if tag and ref.tag:
        local = Reference(ref.repository, ref.tag, None, ref.registry)
        changes = set_tags(ws, [local], served.descriptor, force=force)
    elif tag:
        add_untagged(ws, ref.name, served.descriptor)
    refused: list[Digest] = []
    attached = pull_referrers(ws, client, repo, served.descriptor, refused) if tag else 0
    skipped = len(_unique(list(kit.manifest.layers))) - len(_unique(layers))
    moved = RegistryTransferReport(
        f"{ref.name}" + (f":{ref.tag}" if ref.tag else "") + f"@{served.digest}",
        served.digest,
        len(blobs),
        len(todo) + len(fetched),
        0,
        len(blobs) - len(todo) - len(fetched),
        sum(d.size for d in [*todo, *fetched]),
        skipped=skipped,
        tag_changes=changes,
        provenance=attached,
        provenance_refused=len(refused),
    )
    return moved, entry


def _config(
    ws: Workspace, client: RegistryClient, repo: str, digest: Digest, fetched: list[Digest]
) -> bytes:
    if not ws.store.has(digest):
        ws.store.put_bytes(client.read_blob(repo, digest, MAX_CONFIG_BYTES))
        fetched.append(digest)
    return ws.store.read_bytes(digest, max_size=MAX_CONFIG_BYTES)


# -- remote views -----------------------------------------------------------------------


def remote_tags(client: RegistryClient, repo_text: str) -> list[RemoteTag]:
    """Every tag of a registry repository with the digest it points at."""
    ref = parse_reference(repo_text, default_tag=False)
    repo = ref.repository or ""
    tags = sorted(client.list_tags(repo))
    out: dict[str, RemoteTag] = {}

    def one(tag: str) -> None:
        desc = client.head_manifest(repo, tag)
        if desc is not None:  # deleted between listing and HEAD
            out[tag] = RemoteTag(tag, desc.digest, desc.size)

    _parallel(one, tags, client.connection.concurrency)
    return [out[t] for t in tags if t in out]


def remote_kit(client: RegistryClient, ref_text: str) -> LoadedKit:
    """A registry's ModelKit read from its manifest and config alone (no layers)."""
    from tether.modelkit.load import parse_kit

    ref = remote_ref(ref_text)
    repo = ref.repository or ""
    served = client.get_manifest(repo, str(ref.digest) if ref.digest else ref.tag or "latest")
    entry = IndexEntry(ref.name, ref.tag, served.descriptor)

    return parse_kit(entry, served.data, lambda d: client.read_blob(repo, d, MAX_CONFIG_BYTES))


def tag_remote(
    client: RegistryClient,
    source: str,
    target: str,
    *,
    force: bool,
    is_version_tag: Callable[[str], bool],
) -> tuple[Digest, Digest | None]:
    """Point ``target`` (same registry) at the manifest ``source`` names; returns the
    digest and what the tag pointed at before."""
    src, dst = remote_ref(source), remote_ref(target)
    if src.registry != dst.registry:
        raise UsageError(
            "remote tagging stays on one registry",
            hint="to copy between registries, pull from one and push to the other",
        )
    if dst.tag is None or dst.digest is not None:
        raise UsageError(f"{target} is not REGISTRY/REPOSITORY:TAG", hint="e.g. reg/team/m:prod")
    src_repo, dst_repo = src.repository or "", dst.repository or ""
    served = client.get_manifest(src_repo, str(src.digest) if src.digest else src.tag or "latest")
    before = client.head_manifest(dst_repo, dst.tag)
    old = before.digest if before else None
    if old == served.digest:
        return served.digest, old
    if old is not None and is_version_tag(dst.tag) and not force:
        from tether.errors import TagConflict

        raise TagConflict(
            f"{dst} is a version tag and already means {old.short}",
            hint="version tags are immutable: pick a new version, or use --force to move it",
        )
    if dst_repo != src_repo:
        manifest = ImageManifest.from_bytes(served.data)
        for desc in _unique([manifest.config, *manifest.layers]):
            if client.blob_size(dst_repo, desc.digest) is None and not client.mount_blob(
                dst_repo, desc.digest, src_repo
            ):
                raise RegistryError(
                    f"{client.registry} cannot link blob {desc.digest.short} into {dst_repo}",
                    hint="pull the ModelKit and push it under the new name instead",
                )
    client.put_manifest(dst_repo, dst.tag, served.data, served.media_type)
    return served.digest, old


def remove_remote(client: RegistryClient, ref_text: str, *, force: bool) -> list[str]:
    """Delete a tag, or a manifest by digest (with every tag on it). Registries that
    cannot delete a single tag delete the manifest; other tags on it are named and the
    removal refused unless ``force``. Returns what went."""
    ref = remote_ref(ref_text)
    repo = ref.repository or ""
    if ref.digest is not None:
        client.delete_manifest(repo, str(ref.digest))
        return [f"{ref.name}@{ref.digest}"]
    tag = ref.tag or "latest"
    desc = client.head_manifest(repo, tag)
    if desc is None:
        raise ModelKitNotFound(
            f"{client.registry} has no {ref.name}:{tag}", hint="nothing to remove"
        )
    try:
        client.delete_manifest(repo, tag)
        return [f"{ref.name}:{tag}"]
    except RegistryError as exc:
        if exc.code != "unsupported":
            raise
    others = [
        t.tag for t in remote_tags(client, ref.name) if t.digest == desc.digest and t.tag != tag
    ]
    if others and not force:
        raise RegistryError(
            f"{client.registry} cannot delete a single tag; deleting {ref.name}:{tag} removes "
            f"{desc.digest.short} and its other tags too: {', '.join(others[:8])}",
            hint="use --force to delete them all, or leave the tag",
            code="would-remove-tags",
        )
    client.delete_manifest(repo, str(desc.digest))
    return [f"{ref.name}:{t}" for t in [tag, *others]]


def unpack_remote(
    ws: Workspace,
    ref_text: str,
    client: RegistryClient,
    target: Path,
    *,
    filters: list[str] | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
) -> UnpackReport:
    """Unpack a registry's ModelKit without pulling it: only the selected layers are
    fetched (into the store, verified, untagged), then unpacked."""
    from tether.modelkit.load import load_entry, parse_filters
    from tether.modelkit.unpack import unpack_kit

    _, entry = pull(ws, ref_text, client, filters=filters, tag=False)
    kit = load_entry(ws, entry)
    return unpack_kit(
        ws, kit, target, parse_filters(filters or []), overwrite=overwrite, dry_run=dry_run
    )


def login(
    registry: str,
    connection: Connection,
    credential: credentials.Credential,
    env: Mapping[str, str] | None = None,
) -> str:
    """Check ``credential`` against the registry, then store it; returns where."""
    with RegistryClient(registry, connection=connection, credential=lambda: credential) as c:
        c.ping()
        if c.withheld_from is not None:
            raise AuthError(
                f"{registry} sends logins to a token service at {c.withheld_from}, another "
                "origin, so the credential was not sent there and not checked",
                hint=f"if you trust {c.withheld_from} with it, add it to registry.token_realms "
                "(TETHER_REGISTRY_TOKEN_REALMS), then log in again",
                code="unsafe-realm",
            )
    return credentials.store(registry, credential, env)


# -- helpers ------------------------------------------------------------------------------


class _Counts:
    """Transfer counters that worker threads update."""

    def __init__(self) -> None:
        self.n = {"moved": 0, "mounted": 0, "present": 0}
        self.bytes = 0
        self._lock = threading.Lock()

    def add(self, what: str, nbytes: int = 0) -> None:
        with self._lock:
            self.n[what] += 1
            self.bytes += nbytes


def _unique(descs: Iterable[Descriptor]) -> list[Descriptor]:
    seen: dict[Digest, Descriptor] = {}
    for d in descs:
        seen.setdefault(d.digest, d)
    return list(seen.values())


def _parallel(fn: Callable[[Any], None], items: list[Any], workers: int) -> None:
    """Run ``fn`` over ``items`` on a few threads; the first error wins and the rest
    are cancelled (transfers already running finish or fail on their own)."""
    if len(items) <= 1 or workers <= 1:
        for item in items:
            fn(item)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(fn, item) for item in items]
        _, pending = concurrent.futures.wait(
            futures, return_when=concurrent.futures.FIRST_EXCEPTION
        )
        for f in pending:
            f.cancel()
        for f in futures:
            if f.done() and not f.cancelled() and f.exception() is not None:
                raise f.exception()  # type: ignore[misc]


def _known_sources(
    ws: Workspace, registry: str, repo: str, blobs: list[Descriptor]
) -> dict[Digest, list[str]]:
    out: dict[Digest, list[str]] = {}
    wanted = {str(d.digest) for d in blobs}
    for digest, repository in kits.blob_sightings(ws.db, registry, repo):
        if digest in wanted:
            out.setdefault(Digest.parse(digest), []).append(repository)
    return out


def _remember(ws: Workspace, registry: str, repo: str, blobs: list[Descriptor]) -> None:
    kits.saw_blobs(ws.db, registry, repo, [str(d.digest) for d in blobs])
