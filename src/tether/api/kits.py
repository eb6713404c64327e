"""Use cases on ModelKits that the CLI, the web UI and the server share: describing a
ModelKit wherever it is (the local store first, else its registry)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tether.errors import ModelKitNotFound, UsageError
from tether.oci.reference import parse_reference

if TYPE_CHECKING:
    from tether.modelkit.provenance import Provenance
    from tether.oci.client import RegistryClient
    from tether.workspace import Workspace


@dataclass(frozen=True)
class NetworkOptions:
    """How to reach registries, as the command line gives it; unset values come from
    the settings (``registry.plain_http``, ``registry.concurrency``)."""

    plain_http: bool = False
    insecure: bool = False
    ca_file: str | None = None
    concurrency: int | None = None

    def client(self, registry: str, ws: Workspace | None = None) -> RegistryClient:
        from tether import config
        from tether.modelkit.remote import connection_for, open_client

        settings = ws.settings if ws is not None else config.load(None)
        connection = connection_for(
            settings,
            registry,
            plain_http=self.plain_http,
            insecure=self.insecure,
            ca_file=self.ca_file,
            concurrency=self.concurrency,
        )
        return open_client(registry, connection, ws=ws)


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
    network: NetworkOptions = NetworkOptions(),
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
