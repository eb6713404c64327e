"""A project's link to a team server, and pushing its runs there.

Layout::

    .tether/server.toml                      url and project this checkout syncs with
    $XDG_CONFIG_HOME/tether/credentials.toml the token per server URL, mode 0600: never
                                             in the project, never in its config.toml
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether import config
from tether.errors import ProjectNotFound, TeamError, Unauthenticated, UsageError
from tether.reporting import SILENT, Reporter
from tether.store.atomic import write_atomic
from tether.workspace import Workspace

TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ServerLink:
    url: str  # http(s)://host[:port], no trailing slash
    project: str

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "project": self.project}


def _link_path(ws: Workspace) -> Path:
    return ws.dot / "server.toml"


def credentials_path(env: Any) -> Path:
    return config.user_config_path(env).parent / "credentials.toml"


def _read_credentials(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    return tomllib.loads(path.read_text())


def _write_credentials(path: Path, data: dict[str, Any]) -> None:
    import tomlkit

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, tomlkit.dumps(data).encode(), mode=0o600)
    os.chmod(path, 0o600)


def _normalize(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError(
            f"{url[:80]!r} is not a server URL", hint="e.g. https://tether.example.com"
        )
    return url


def _client(url: str, token: str) -> Any:
    import httpx

    return httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT_S
    )


def _check(response: Any, project: str) -> Any:
    """The JSON of a successful answer; the server's own message otherwise."""
    if response.status_code < 400:
        return response.json()
    try:
        body = response.json()
        message, hint = body.get("message", ""), body.get("hint")
    except ValueError:
        message, hint = response.text[:200], None
    if response.status_code == 401:
        raise Unauthenticated(message or "the server refused the token", hint=hint)
    if response.status_code == 404:
        raise ProjectNotFound(
            f"the server has no project {project} for this token",
            hint="ask an admin for a grant: tether server grant USER PROJECT write",
        )
    raise TeamError(f"the server answered {response.status_code}: {message}", hint=hint)


def _request(client: Any, method: str, path: str, project: str, **kwargs: Any) -> Any:
    import httpx

    try:
        return _check(client.request(method, path, **kwargs), project)
    except httpx.HTTPError as e:
        raise TeamError(
            f"cannot reach {client.base_url}: {type(e).__name__}",
            hint="check the URL and the network; nothing local changed",
        ) from None


def connect(ws: Workspace, url: str, project: str, token: str) -> ServerLink:
    """Check the token and the grant with the server, then remember both (the token in
    the user's credentials file)."""
    link = ServerLink(_normalize(url), project)
    with _client(link.url, token) as client:
        found = _request(client, "GET", "/api/projects", project)
    roles = {p["name"]: p["role"] for p in found.get("projects", [])}
    if project not in roles:
        raise ProjectNotFound(
            f"{link.url} has no project {project} for this token",
            hint=f"projects you may use: {', '.join(sorted(roles)) or 'none'}",
        )
    path = credentials_path(ws.env)
    creds = _read_credentials(path)
    creds.setdefault("servers", {})[link.url] = {"token": token}
    _write_credentials(path, creds)
    import tomlkit

    write_atomic(_link_path(ws), tomlkit.dumps(link.to_json()).encode(), tmp_dir=ws.dot / "tmp")
    return link


def disconnect(ws: Workspace) -> ServerLink | None:
    """Forget the project's server (its token stays for other checkouts)."""
    path = _link_path(ws)
    if not path.exists():
        return None
    data = tomllib.loads(path.read_text())
    path.unlink()
    return ServerLink(data["url"], data["project"])


def linked(ws: Workspace) -> tuple[ServerLink, str]:
    path = _link_path(ws)
    if not path.exists():
        raise UsageError(
            "this project is not connected to a server",
            hint="tether connect URL --project NAME --token-stdin",
        )
    data = tomllib.loads(path.read_text())
    link = ServerLink(data["url"], data["project"])
    token = _read_credentials(credentials_path(ws.env)).get("servers", {}).get(link.url, {})
    if not token.get("token"):
        raise Unauthenticated(
            f"no token for {link.url} in {credentials_path(ws.env)}",
            hint="connect again: tether connect URL --project NAME --token-stdin",
        )
    return link, str(token["token"])


@dataclass(frozen=True)
class SyncReport:
    server: ServerLink
    sent: tuple[str, ...]  # run ids
    up_to_date: int
    blobs_sent: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            **self.server.to_json(),
            "sent": list(self.sent),
            "up_to_date": self.up_to_date,
            "blobs_sent": self.blobs_sent,
        }


def sync(ws: Workspace, *, report: Reporter = SILENT) -> SyncReport:
    """Send the server every run it lacks or holds in an older state."""
    from tether.repositories import runs as runs_repo
    from tether.repositories.run_filter import list_runs
    from tether.team.sync import fingerprint, upload_of

    link, token = linked(ws)
    ids = [r.id for r in list_runs(ws.db, limit=None).runs]
    records = {r.id: r for r in runs_repo.load_runs(ws.db, ids)}
    offers = {i: fingerprint(r) for i, r in records.items()}
    base = f"/p/{link.project}/sync"
    sent: list[str] = []
    blobs_sent = 0
    with _client(link.url, token) as client:
        stale = _request(
            client, "POST", f"{base}/runs/stale", link.project, json={"offers": offers}
        )
        todo = [i for i in stale.get("stale", []) if i in records]
        report.start(len(todo))
        for run_id in todo:
            upload = upload_of(ws, records[run_id])
            digests = [d for d, _ in upload.blobs]
            if digests:
                missing = _request(
                    client, "POST", f"{base}/blobs/missing", link.project, json={"digests": digests}
                )
                for digest in missing.get("missing", []):
                    _send_blob(client, ws, f"{base}/blobs/{digest}", link.project, digest)
                    blobs_sent += 1
            _request(client, "POST", f"{base}/runs", link.project, json=upload.to_json())
            sent.append(run_id)
            report.advance(1)
    return SyncReport(link, tuple(sent), len(records) - len(sent), blobs_sent)


def _send_blob(client: Any, ws: Workspace, path: str, project: str, digest: str) -> None:
    from tether.errors import ObjectCorrupted
    from tether.hashing import Digest

    # Verified on the way out too: a blob that rotted locally is not sent as good.
    found = Digest.parse(digest)
    if not ws.store.verify(found):
        raise ObjectCorrupted(
            f"blob {found.short} is damaged in the local store", hint="run 'tether fsck'"
        )

    def chunks() -> Any:
        with ws.store.open(found) as f:
            while chunk := f.read(1 << 20):
                yield chunk

    _request(client, "PUT", path, project, content=chunks())
