"""A project's link to a team server, and pushing its runs there.

Layout::

    .tether/server.toml                      url and project this checkout syncs with
    $XDG_CONFIG_HOME/tether/credentials.toml the token per server URL, mode 0600: never
                                             in the project, never in its config.toml
"""

from __future__ import annotations

import os
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether import config
from tether.errors import ProjectNotFound, TeamError, Unauthenticated, UsageError
from tether.reporting import SILENT, Reporter
from tether.store.atomic import write_atomic
from tether.workspace import Workspace

if TYPE_CHECKING:
    from tether.team.model_sync import Conflict, ModelMerge
    from tether.team.stream import RunStream

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
    body: Any = None
    try:
        body = response.json()
        message, hint = body.get("message", ""), body.get("hint")
    except (ValueError, AttributeError):
        message, hint = response.text[:200], None
    if response.status_code == 401:
        raise Unauthenticated(message or "the server refused the token", hint=hint)
    if response.status_code == 404:
        raise ProjectNotFound(
            f"the server has no project {project} for this token",
            hint="ask an admin for a grant: tether server grant USER PROJECT write",
        )
    code = body.get("error") if isinstance(body, dict) else None
    raise TeamError(
        f"the server answered {response.status_code}: {message}",
        hint=hint,
        code=code if isinstance(code, str) else None,
    )


# Pauses between attempts when the server cannot be reached or is briefly unable (503
# while its database restarts, a rolling update): about half a minute in all. Every
# request of sync is safe to repeat (run ids are global, blobs named by digest).
RETRY_PAUSES = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
SEND_ATTEMPTS = 3  # a blob refused as damaged on the way


def _request(
    client: Any,
    method: str,
    path: str,
    project: str,
    *,
    body: Callable[[], Any] | None = None,
    **kwargs: Any,
) -> Any:
    """One request, tried again after a pause while the server is unreachable or answers
    502/503/504/429; ``body`` makes the content afresh for each attempt."""
    import httpx

    for pause in (*RETRY_PAUSES, None):
        if body is not None:
            kwargs["content"] = body()
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            if pause is None:
                raise TeamError(
                    f"cannot reach {client.base_url}: {type(e).__name__}",
                    hint="check the URL and the network; nothing local changed",
                ) from None
        else:
            if pause is None or response.status_code not in (429, 502, 503, 504):
                return _check(response, project)
        time.sleep(pause)
    raise AssertionError("unreachable")


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


def stream_for(ws: Workspace, run_id: str) -> RunStream | None:
    """A live stream of the run to the project's server when this checkout is connected
    (and ``TETHER_STREAM`` is not 0); None otherwise. Never raises: a broken link must
    not stop a training, and the run is recorded here whatever happens."""
    if ws.env.get("TETHER_STREAM", "1") == "0" or not _link_path(ws).exists():
        return None
    from tether.errors import TetherError
    from tether.repositories import metrics as metrics_repo
    from tether.repositories import runs as runs_repo
    from tether.team.stream import RunStream

    try:
        link, token = linked(ws)
        run = runs_repo.load_runs(ws.db, [run_id], full=False)[0]
        seq = metrics_repo.point_count(ws.db, run_id)
    except (TetherError, OSError, ValueError, KeyError, IndexError):
        return None
    return RunStream(link.url, link.project, token, run.start(), seq)


def connected(ws: Workspace) -> bool:
    return _link_path(ws).exists()


def held_by_server(ws: Workspace, digests: list[str]) -> dict[str, int]:
    """Which of ``digests`` the project's server holds, with their sizes."""
    link, token = linked(ws)
    with _client(link.url, token) as client:
        return _held(client, f"/p/{link.project}/sync", link.project, digests)


def fetch_from_server(ws: Workspace, digests: list[str]) -> int:
    """Fetch ``digests`` from the project's server into the store, each verified;
    returns how many arrived."""
    link, token = linked(ws)
    with _client(link.url, token) as client:
        return _fetch_many(client, ws, f"/p/{link.project}/sync", link.project, digests)


@dataclass(frozen=True)
class SyncReport:
    server: ServerLink
    sent: tuple[str, ...]  # run ids
    up_to_date: int
    blobs_sent: int = 0
    pulled: tuple[str, ...] = ()  # teammates' runs taken in
    held_back: int = 0  # runs made here that a read grant may not send
    models_sent: tuple[ModelMerge, ...] = ()  # the server's merge of each model sent
    models_pulled: tuple[ModelMerge, ...] = ()  # this checkout's merge of the server's
    data_sent: int = 0  # blobs of tracked data and run inputs the server lacked
    data_fetched: int = 0  # blobs the working tree's pointers needed
    # Tracked paths whose content is not all here (not sent), and what the pointers
    # still need that the server does not hold either.
    data_incomplete: tuple[str, ...] = ()
    data_wanted: int = 0

    @property
    def conflicts(self) -> list[Conflict]:
        """Each conflict once: the server's merge and this checkout's both find one."""
        found: dict[tuple[str, str], Conflict] = {}
        for m in (*self.models_sent, *self.models_pulled):
            for c in m.conflicts:
                found.setdefault((c.model, c.alias or c.message), c)
        return list(found.values())

    def to_json(self) -> dict[str, Any]:
        return {
            **self.server.to_json(),
            "sent": list(self.sent),
            "up_to_date": self.up_to_date,
            "blobs_sent": self.blobs_sent,
            "pulled": list(self.pulled),
            "held_back": self.held_back,
            "models_sent": [m.to_json() for m in self.models_sent],
            "models_pulled": [m.to_json() for m in self.models_pulled],
            "conflicts": [c.to_json() for c in self.conflicts],
            "data_sent": self.data_sent,
            "data_fetched": self.data_fetched,
            "data_incomplete": list(self.data_incomplete),
            "data_wanted": self.data_wanted,
        }


def sync(ws: Workspace, *, report: Reporter = SILENT) -> SyncReport:
    """Send the server every run made here that it lacks or holds in an older state
    (with a write grant), then take in the teammates' runs, with their blobs, that this
    checkout lacks. One request lists the server's runs and their fingerprints."""
    from tether.repositories import runs as runs_repo
    from tether.repositories.lineage import edge_counts
    from tether.repositories.run_filter import list_runs
    from tether.team.data_sync import DataOffer, offer
    from tether.team.sync import SYNCED_BY, fingerprint

    link, token = linked(ws)
    ids = [r.id for r in list_runs(ws.db, limit=None).runs]
    records = {r.id: r for r in runs_repo.load_runs(ws.db, ids)}
    edges = edge_counts(ws.db)
    base = f"/p/{link.project}/sync"
    with _client(link.url, token) as client:
        projects = _request(client, "GET", "/api/projects", link.project).get("projects", [])
        role = next((p["role"] for p in projects if p["name"] == link.project), None)
        if role is None:
            raise ProjectNotFound(
                f"{link.url} has no project {link.project} for this token",
                hint="ask an admin for a grant: tether server grant USER PROJECT write",
            )
        theirs: dict[str, str] = _request(client, "GET", f"{base}/runs", link.project).get(
            "runs", {}
        )
        # Made here (not received from the server) and not there as it is here.
        ours = [
            i
            for i, r in records.items()
            if SYNCED_BY not in r.tags and theirs.get(i) != fingerprint(r, edges.get(i, 0))
        ]
        sent: list[str] = []
        blobs_sent = 0
        data = offer(ws, [records[i] for i in ours]) if role != "read" else DataOffer({}, ())
        data_sent = 0
        if role != "read":
            # Data first: a run on the server can then always be reproduced from it.
            data_sent = _send_missing(client, ws, base, link.project, list(data.sizes))
            report.start(len(ours))
            for run_id in ours:
                blobs_sent += _push(client, ws, base, link.project, records[run_id])
                sent.append(run_id)
                report.advance(1)
        pulled = _pull(client, ws, base, link.project, records, theirs, edges)
        models_sent: list[ModelMerge] = []
        if role != "read":
            models_sent, kit_blobs = _push_models(client, ws, base, link.project)
            blobs_sent += kit_blobs
        models_pulled = _pull_models(client, ws, base, link.project)
        fetched, still = _pull_data(client, ws, base, link.project)
    held_back = len(ours) - len(sent)
    up_to_date = len(records) - len(ours)
    return SyncReport(
        link,
        tuple(sent),
        up_to_date,
        blobs_sent,
        pulled,
        held_back,
        tuple(models_sent),
        tuple(models_pulled),
        data_sent,
        fetched,
        data.incomplete,
        still,
    )


def _pull_data(client: Any, ws: Workspace, base: str, project: str) -> tuple[int, int]:
    """Fetch what the working tree's pointers need, a level of folders at a time;
    returns how many blobs arrived and how many are still wanted (the server lacks
    them too)."""
    from tether.team.data_sync import wanted as data_wanted

    got = 0
    while True:
        wanted = data_wanted(ws)
        arrived = _fetch_many(client, ws, base, project, wanted) if wanted else 0
        got += arrived
        if not arrived:
            return got, len(wanted)


def watch(
    ws: Workspace,
    *,
    every: float,
    on_round: Callable[[SyncReport | TeamError], None],
    rounds: int | None = None,
) -> None:
    """Sync now, then again every ``every`` seconds, until interrupted (or ``rounds``
    done). A round that cannot reach the server is reported and the next one tries
    again; a refused token or a project gone stop it."""
    done = 0
    while True:
        try:
            on_round(sync(ws))
        except (Unauthenticated, ProjectNotFound):
            raise
        except TeamError as e:
            on_round(e)
        done += 1
        if rounds is not None and done >= rounds:
            return
        time.sleep(every)


def _push_models(
    client: Any, ws: Workspace, base: str, project: str
) -> tuple[list[ModelMerge], int]:
    """Each model of this checkout, its ModelKits' missing blobs first; the server
    merges it (team.model_sync: compare-and-swap on aliases, conflicts reported)."""
    from tether.team.model_sync import ModelMerge, copies, kit_blobs

    merged: list[ModelMerge] = []
    sent = 0
    for copy in copies(ws):
        digests = [d for v in copy.versions if ws.store.has(v.digest)
                   for d in kit_blobs(ws, v.digest)]  # fmt: skip
        sent += _send_missing(client, ws, base, project, digests)
        answer = _request(client, "POST", f"{base}/models", project, json=copy.to_json())
        merged.append(ModelMerge.from_json(answer))
    return merged, sent


def _pull_models(client: Any, ws: Workspace, base: str, project: str) -> list[ModelMerge]:
    """The server's models into this checkout: ModelKits fetched by digest, then merged
    by the same rules as on the server."""
    from tether.team.model_sync import ModelCopy, kit_blobs, merge

    merged: list[ModelMerge] = []
    for data in _request(client, "GET", f"{base}/models", project).get("models", []):
        copy = ModelCopy.from_json(data)
        lacking = [v.digest for v in copy.versions if not ws.store.has(v.digest)]
        _fetch_many(client, ws, base, project, [str(d) for d in lacking])
        layers = [b for d in lacking if ws.store.has(d) for b in kit_blobs(ws, d)[1:]]
        _fetch_many(client, ws, base, project, layers)
        result = merge(ws, copy)
        if result.versions or result.events or result.aliases or result.conflicts:
            merged.append(result)
    return merged


def _push(client: Any, ws: Workspace, base: str, project: str, run: Any) -> int:
    """One run, its missing blobs first; returns how many blobs went."""
    from tether.team.sync import upload_of

    upload = upload_of(ws, run)
    sent = _send_missing(client, ws, base, project, [d for d, _ in upload.blobs])
    _request(client, "POST", f"{base}/runs", project, json=upload.to_json())
    return sent


ASK_AT_ONCE = 100_000  # digests per existence question


def _slices(items: list[str]) -> Any:
    for i in range(0, len(items), ASK_AT_ONCE):
        yield items[i : i + ASK_AT_ONCE]


def _send_missing(client: Any, ws: Workspace, base: str, project: str, digests: list[str]) -> int:
    """Send those of ``digests`` the server lacks (asked in bulk): small blobs in packs,
    big ones alone. Returns how many went."""
    from tether.hashing import Digest
    from tether.team.blob_pack import PACKED_BELOW, groups

    missing: list[str] = []
    for part in _slices(list(dict.fromkeys(digests))):
        answer = _request(client, "POST", f"{base}/blobs/missing", project, json={"digests": part})
        missing += answer.get("missing", [])
    in_chunks = _send_chunked(client, ws, base, project, missing)
    sizes = [(d, ws.store.size(Digest.parse(d))) for d in missing if d not in in_chunks]
    for group in groups((d, s) for d, s in sizes if s < PACKED_BELOW):
        _send_pack(client, ws, f"{base}/blobs/pack", project, group)
    for digest, size in sizes:
        if size >= PACKED_BELOW:
            _send_blob(client, ws, f"{base}/blobs/{digest}", project, digest)
    return len(missing)


def _send_chunked(
    client: Any, ws: Workspace, base: str, project: str, missing: list[str]
) -> set[str]:
    """Send those of ``missing`` kept here in chunks as the chunks the server lacks and
    then their list, which the server keeps once they add up to the file. Returns the
    digests sent so; a server that keeps whole blobs (a bucket) gets them whole."""
    from tether.hashing import Digest

    sent: set[str] = set()
    for d in missing:
        digest = Digest.parse(d)
        if ws.store.has_blob(digest) or not ws.store.chunks.has(digest):
            continue
        listed = ws.store.chunks.load(digest)
        offer = {"digest": d, "list": listed.to_json()}
        # The server reads the file back to check it: give it time for a big one.
        wait = max(TIMEOUT_S, listed.size / (50 << 20))
        for attempt in range(2):
            try:
                answer = _request(client, "POST", f"{base}/chunklists", project,
                                  json=offer, timeout=wait)  # fmt: skip
            except TeamError as e:
                if e.code == "usage":
                    return sent  # kept whole there: the caller sends these whole
                raise
            lacking = [str(c) for c in answer.get("missing", [])]
            if not lacking:
                sent.add(d)
                break
            if attempt == 1:
                raise TeamError(
                    f"the server did not keep {digest.short} after its chunks were sent",
                    hint="sync again; if it persists, check the server's disk",
                )
            _send_missing(client, ws, base, project, lacking)
    return sent


def _fetch_chunked(
    client: Any, ws: Workspace, base: str, project: str, sizes: dict[str, int]
) -> set[str]:
    """Fetch those of ``sizes`` the server keeps in chunks as the chunks this store
    lacks, then keep each list once its chunks add up to the file. Returns those
    fetched so (the others come whole)."""
    from tether.hashing import Digest
    from tether.store.chunks import THRESHOLD, ChunkList

    big = [d for d, size in sizes.items() if size >= THRESHOLD]
    if not big:
        return set()
    try:
        answer = _request(client, "POST", f"{base}/chunklists/have", project,
                          json={"digests": big})  # fmt: skip
    except ProjectNotFound:
        return set()  # a server from before chunking: every blob comes whole
    done: set[str] = set()
    for d, doc in answer.get("lists", {}).items():
        if d not in sizes:
            continue
        listed = ChunkList.from_json(Digest.parse(d), doc)
        _fetch_many(client, ws, base, project, [str(c) for c, _ in listed.chunks])
        with ws.lock("gc", shared=True):
            lacking = ws.store.chunks.adopt(listed)  # a lying list: ObjectCorrupted
        if lacking:
            raise TeamError(
                f"the server lacks {len(lacking)} chunk(s) of {listed.digest.short}",
                hint="push it again from a clone that has it",
            )
        done.add(d)
    return done


def _held(client: Any, base: str, project: str, digests: list[str]) -> dict[str, int]:
    """The size of each of ``digests`` the server holds, asked in bulk."""
    found: dict[str, int] = {}
    for part in _slices(list(dict.fromkeys(digests))):
        answer = _request(client, "POST", f"{base}/blobs/have", project, json={"digests": part})
        found.update(answer.get("sizes", {}))
    return found


def _fetch_many(client: Any, ws: Workspace, base: str, project: str, digests: list[str]) -> int:
    """Fetch those of ``digests`` this store lacks and the server holds: small blobs in
    packs, big ones alone. Returns how many arrived."""
    from tether.hashing import Digest
    from tether.team.blob_pack import PACKED_BELOW, groups

    lacking = [d for d in dict.fromkeys(digests) if not ws.store.has(Digest.parse(d))]
    sizes = _held(client, base, project, lacking)
    in_chunks = _fetch_chunked(client, ws, base, project, sizes)
    sizes = {d: s for d, s in sizes.items() if d not in in_chunks}
    got = len(in_chunks)
    for group in groups((d, s) for d, s in sizes.items() if s < PACKED_BELOW):
        got += _fetch_pack(client, ws, f"{base}/blobs/fetch", group)
    for digest, size in sizes.items():
        if size >= PACKED_BELOW:
            _fetch_blob(client, ws, f"{base}/blobs/{digest}", digest)
            got += 1
    return got


def _send_pack(client: Any, ws: Workspace, path: str, project: str, group: list[str]) -> None:
    from tether.team.blob_pack import frames

    for attempt in range(1, SEND_ATTEMPTS + 1):
        try:
            _request(client, "POST", path, project,
                     body=lambda: frames(ws.store, group, skip_damaged=False))  # fmt: skip
            return
        except TeamError as e:
            if e.code != "object-corrupted" or attempt == SEND_ATTEMPTS:
                raise


def _fetch_pack(client: Any, ws: Workspace, path: str, group: list[str]) -> int:
    """One pack from the server; blobs that arrived whole are kept even if the answer
    is cut off (the next round asks for the rest)."""
    import httpx

    from tether.team.sync import PackIntake

    with ws.lock("gc", shared=True):
        intake = PackIntake(ws)
        try:
            with client.stream("POST", path, json={"digests": group}) as response:
                if response.status_code >= 400:
                    response.read()
                    _check(response, "")
                for chunk in response.iter_bytes(1 << 20):
                    intake.write(chunk)
            return intake.commit()
        except httpx.HTTPError as e:
            intake.keep_received()
            raise TeamError(
                f"a blob pack was cut off: {type(e).__name__}", hint="sync again"
            ) from None
        except BaseException:
            intake.abort()
            raise


def _pull(
    client: Any,
    ws: Workspace,
    base: str,
    project: str,
    records: dict[str, Any],
    theirs: dict[str, str],
    edges: dict[str, int],
) -> tuple[str, ...]:
    """Take in the teammates' runs this checkout lacks or holds in an older state. A run
    made here is never overwritten: only runs that came from the server are refreshed."""
    from tether.team.sync import SYNCED_BY, RunUpload, fingerprint, receive

    pulled: list[str] = []
    for run_id, fp in theirs.items():
        mine = records.get(run_id)
        same = mine is not None and fingerprint(mine, edges.get(run_id, 0)) == fp
        if mine is not None and (SYNCED_BY not in mine.tags or same):
            continue
        upload = RunUpload.from_json(_request(client, "GET", f"{base}/runs/{run_id}", project))
        _fetch_many(client, ws, base, project, [d for d, _ in upload.blobs])
        receive(ws, upload, None)
        pulled.append(run_id)
    return tuple(pulled)


def _fetch_blob(client: Any, ws: Workspace, path: str, digest: str) -> None:
    import httpx

    from tether.hashing import Digest
    from tether.team.sync import BlobIntake

    if ws.store.has(Digest.parse(digest)):
        return
    try:
        with (
            ws.lock("gc", shared=True),
            client.stream("GET", path, follow_redirects=True) as response,
        ):
            if response.status_code >= 400:
                response.read()
                _check(response, "")
            intake = BlobIntake(ws, digest)
            try:
                for chunk in response.iter_bytes(1 << 20):
                    intake.write(chunk)
                intake.commit()
            except BaseException:
                intake.abort()
                raise
    except httpx.HTTPError as e:
        raise TeamError(
            f"cannot fetch blob {digest[:19]}: {type(e).__name__}", hint="sync again"
        ) from None


def _send_blob(client: Any, ws: Workspace, path: str, project: str, digest: str) -> None:
    import functools

    from tether.errors import ObjectCorrupted
    from tether.hashing import Digest

    # Verified on the way out too: a blob that rotted locally is not sent as good.
    found = Digest.parse(digest)
    if not ws.store.verify(found):
        raise ObjectCorrupted(
            f"blob {found.short} is damaged in the local store", hint="run 'tether fsck'"
        )

    def chunks(offset: int) -> Any:
        with ws.store.open(found) as f:
            f.seek(offset)
            while chunk := f.read(1 << 20):
                yield chunk

    # The server keeps a blob only if it hashes to its digest: one damaged on the way
    # is refused, and sent again.
    base = path.rsplit("/", 1)[0]
    size = ws.store.size(found)
    for attempt in range(1, SEND_ATTEMPTS + 1):
        try:
            plan = _request(client, "POST", f"{base}/uploads", project,
                            json={"digest": digest, "size": size})  # fmt: skip
            if plan.get("via") == "bucket":
                if not plan.get("stored"):
                    _to_bucket(client, ws, found, plan, f"{base}/uploads/complete", project)
            else:
                # From where an interrupted upload of it stopped, if one did.
                offset = int(plan.get("offset") or 0)
                span = {"Content-Range": f"bytes {offset}-{size - 1}/{size}"} if size else {}
                body = functools.partial(chunks, offset)
                _request(client, "PUT", path, project, body=body, headers=span)
            return
        except TeamError as e:
            # Damaged on the way: sent again. Cut off and retried from a stale offset:
            # asked again where to go on from.
            if e.code not in ("object-corrupted", "upload-offset"):
                raise
            if attempt == SEND_ATTEMPTS and e.code == "upload-offset":
                raise
            if attempt == SEND_ATTEMPTS:
                raise TeamError(
                    f"blob {found.short} arrived damaged {SEND_ATTEMPTS} times",
                    hint="something between here and the server alters data; check the network",
                ) from None


def _to_bucket(
    client: Any, ws: Workspace, digest: Any, plan: dict[str, Any], done: str, project: str
) -> None:
    """Upload a blob straight to the server's bucket, part by part, with the presigned
    URLs of ``plan`` (only the parts the bucket lacks: an interrupted upload resumes),
    then ask the server to check and record it."""
    import httpx

    part_size = int(plan["part_size"])
    etags = {int(p["number"]): str(p["etag"]) for p in plan.get("done", [])}
    # A client of its own: the bucket gets no bearer token, and parts take their time.
    with httpx.Client(timeout=TIMEOUT_S * 5) as bucket, ws.store.open(digest) as f:
        for part in plan["parts"]:
            number = int(part["number"])
            f.seek((number - 1) * part_size)
            data = f.read(part_size)
            for pause in (*RETRY_PAUSES, None):
                try:
                    answer = bucket.put(str(part["url"]), content=data)
                except httpx.HTTPError:
                    answer = None
                if answer is not None and answer.status_code < 300:
                    etags[number] = answer.headers.get("etag", "")
                    break
                if pause is None or (answer is not None and answer.status_code < 500):
                    raise TeamError(
                        f"the bucket refused part {number} of blob {digest.short}: "
                        + ("unreachable" if answer is None else str(answer.status_code)),
                        hint="sync again: the upload resumes with the parts that are missing",
                    )
                time.sleep(pause)
    parts = [{"number": n, "etag": e} for n, e in sorted(etags.items())]
    _request(client, "POST", done, project, timeout=max(TIMEOUT_S, plan["size"] / (20 << 20)),
             json={"digest": str(digest), "size": plan["size"],
                   "upload_id": plan.get("upload_id"), "parts": parts})  # fmt: skip
