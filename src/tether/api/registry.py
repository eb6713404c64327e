"""Use cases that talk to an OCI registry as a whole: logging in, pushing and pulling a
ModelKit; and ``NetworkOptions``, how every face says how to reach a registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tether.reporting import SILENT, Reporter

if TYPE_CHECKING:
    from tether.modelkit.remote import RegistryTransferReport
    from tether.oci.client import RegistryClient
    from tether.oci.credentials import Credential
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
        """A client for ``registry`` (host[:port]); use it as a context manager."""
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


DEFAULT_NETWORK = NetworkOptions()  # every option from the settings


def login(registry: str, credential: Credential, network: NetworkOptions = DEFAULT_NETWORK) -> str:
    """Check ``credential`` against ``registry``, then store it as Docker does; returns
    where it was stored."""
    from tether import config
    from tether.modelkit.remote import connection_for
    from tether.modelkit.remote import login as do_login

    connection = connection_for(
        config.load(None),
        registry,
        plain_http=network.plain_http,
        insecure=network.insecure,
        ca_file=network.ca_file,
    )
    return do_login(registry, connection, credential)


def push(
    ws: Workspace,
    source: str,
    destination: str | None = None,
    *,
    network: NetworkOptions = DEFAULT_NETWORK,
    report: Reporter = SILENT,
) -> RegistryTransferReport:
    """Push the local ModelKit ``source`` to ``destination`` (default: ``source``, which
    must then name a registry)."""
    from tether.modelkit.remote import push as do_push
    from tether.modelkit.remote import remote_ref

    dest = remote_ref(destination or source)
    with network.client(dest.registry or "", ws) as client:
        return do_push(ws, source, destination, client, report=report)


@dataclass(frozen=True)
class PullRequest:
    ref: str  # REGISTRY/REPO[:TAG|@DIGEST]
    filters: tuple[str, ...] = ()  # only the layers these select
    force: bool = False  # accept a version tag that now means another ModelKit


def pull(
    ws: Workspace,
    request: PullRequest,
    *,
    network: NetworkOptions = DEFAULT_NETWORK,
    report: Reporter = SILENT,
) -> RegistryTransferReport:
    """Fetch a ModelKit into the store, verified, tagged REGISTRY/REPO:TAG."""
    from tether.modelkit.remote import pull as do_pull
    from tether.modelkit.remote import remote_ref

    target = remote_ref(request.ref)
    with network.client(target.registry or "", ws) as client:
        found, _ = do_pull(
            ws,
            request.ref,
            client,
            filters=list(request.filters),
            force=request.force,
            report=report,
        )
    return found
