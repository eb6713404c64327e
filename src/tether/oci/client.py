"""An OCI Distribution client: the protocol only, nothing about ModelKits.

Endpoints (distribution-spec v1.1), relative to ``https://<registry>/v2/``::

    GET  /                                   ping (and the auth challenge)
    HEAD|GET|DELETE <name>/blobs/<digest>
    POST <name>/blobs/uploads/[?mount=<digest>&from=<other>]   start an upload / mount
    PATCH <upload-location>  Content-Range: <start>-<end>       one chunk
    GET  <upload-location>   -> Range: 0-<end>                  where a broken upload stands
    PUT  <upload-location>?digest=<digest>                      finish
    HEAD|GET|PUT|DELETE <name>/manifests/<tag|digest>
    GET  <name>/tags/list?n=<n>              paginated by the Link header
    GET  <name>/referrers/<digest>           falls back to the tag 'sha256-<hex>'

Everything read from the registry is bounded or verified: manifests and referrer
indexes at 4 MiB, error bodies and tokens at 1 MiB, blobs counted against their
descriptor size and hashed while streaming (the store's writer refuses a mismatch and
leaves nothing behind). Redirects are followed by hand, so that ``Authorization`` is
dropped whenever scheme, host or port change and HTTPS never downgrades to HTTP.

One client serves many threads: httpx's connection pool is thread-safe, and the token
cache is guarded by a lock.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlencode, urljoin, urlsplit

from tether.errors import AuthError, ModelKitNotFound, ObjectCorrupted, RegistryError
from tether.hashing import Digest
from tether.oci import mediatypes as mt
from tether.oci.auth import Challenge, parse_challenge, realm_policy
from tether.oci.credentials import Credential
from tether.oci.manifest import MAX_MANIFEST_BYTES, Descriptor

if TYPE_CHECKING:
    import ssl

    import httpx

    from tether.store.objects import ContentStore

MAX_SMALL_BODY = 1 << 20  # error bodies, token responses
MAX_REDIRECTS = 5
# Blobs above this go up in chunks that can be resumed; below it, in one PUT.
CHUNK_THRESHOLD = 64 << 20
CHUNK_SIZE = 256 << 20
_READ = 1 << 20

MANIFEST_ACCEPT = ", ".join(
    (
        mt.OCI_MANIFEST,
        mt.OCI_INDEX,
        mt.DOCKER_MANIFEST,
        mt.DOCKER_MANIFEST_LIST,
    )
)
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Connection:
    """How to reach registries: transport security and parallelism."""

    plain_http: bool = False
    insecure: bool = False  # TLS without certificate verification
    ca_file: str | None = None
    concurrency: int = 4
    token_realms: frozenset[str] = frozenset()  # host:port realms trusted with credentials


@dataclass(frozen=True)
class Manifest:
    """A manifest as served: exact bytes, their digest and media type."""

    data: bytes
    digest: Digest
    media_type: str

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.data))


def api_host(registry: str) -> str:
    """Docker Hub's API lives on another host than its name."""
    return "registry-1.docker.io" if registry in ("docker.io", "index.docker.io") else registry


class RegistryClient:
    """One registry (``host[:port]``); ``http`` may be injected (tests, proxies)."""

    def __init__(
        self,
        registry: str,
        *,
        connection: Connection | None = None,
        credential: Callable[[], Credential | None] | None = None,
        http: httpx.Client | None = None,
        upload_journal: Path | None = None,
    ) -> None:
        import httpx

        self.registry = registry
        self.connection = connection or Connection()
        host = api_host(registry)
        self.base = f"{'http' if self.connection.plain_http else 'https'}://{host}"
        self._origin = _origin(self.base)
        self._credential_source = credential
        self._credential: Credential | None = None
        self._credential_loaded = False
        # A token service that was asked anonymously because it is not the registry's
        # origin (host:port), so 'login' can say its credential was never checked.
        self.withheld_from: str | None = None
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}  # scope key -> (header, expiry)
        self._basic = False  # the registry asked for Basic auth
        self.upload_journal = upload_journal
        self.chunk_threshold = CHUNK_THRESHOLD
        self.chunk_size = CHUNK_SIZE
        if http is None:
            http = httpx.Client(
                verify=_tls_context(self.connection),
                timeout=httpx.Timeout(120.0, connect=15.0),
                follow_redirects=False,
                limits=httpx.Limits(max_connections=max(8, 2 * self.connection.concurrency)),
                headers={"User-Agent": "tether"},
            )
        self.http = http

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests, auth and redirects ------------------------------------------------

    @contextmanager
    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        headers: dict[str, str] | None = None,
        body: bytes | Callable[[], Iterable[bytes]] | None = None,
        params: dict[str, str] | None = None,
    ) -> Iterator[httpx.Response]:
        """Send one request with auth, streaming the response; retried once after a
        challenge (no token yet, or a token the registry no longer takes)."""
        url = path if "://" in path else self.base + path
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        for attempt in range(3):
            auth = self._auth_header(scope)
            resp = self._send(method, url, headers or {}, body, auth)
            if resp.status_code == 401 and attempt < 2:
                header = resp.headers.get("www-authenticate", "")
                _drain(resp)
                self._on_challenge(header, scope, sent=auth)
                continue
            try:
                if resp.status_code == 401:
                    raise self._auth_refused(scope)
                yield resp
            finally:
                resp.close()
            return

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | Callable[[], Iterable[bytes]] | None,
        auth: str | None,
    ) -> httpx.Response:
        import httpx

        for _ in range(MAX_REDIRECTS + 1):
            h = dict(headers)
            same_origin = _origin(url) == self._origin
            if auth and same_origin:
                h["Authorization"] = auth
            content = body() if callable(body) else body
            try:
                req = self.http.build_request(method, url, headers=h, content=content)
                resp = self.http.send(req, stream=True)
            except httpx.TransportError as exc:
                raise self._unreachable(url, exc) from None
            if resp.status_code not in (301, 302, 303, 307, 308):
                return resp
            location = resp.headers.get("location", "")
            _drain(resp)
            if not location:
                raise RegistryError(
                    f"{self.registry} redirected without a Location",
                    hint="the registry is misbehaving",
                )
            target = urljoin(url, location)
            if urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https":
                raise RegistryError(
                    f"{self.registry} redirected from HTTPS to {urlsplit(target).scheme}:",
                    hint="tether does not follow redirects that drop TLS",
                    code="unsafe-redirect",
                )
            if resp.status_code == 303:
                method, body = "GET", None
            url = target
        raise RegistryError(
            f"{self.registry} redirected more than {MAX_REDIRECTS} times",
            hint="the registry is misbehaving",
        )

    def _auth_header(self, scope: str) -> str | None:
        with self._lock:
            if self._basic:
                cred = self._load_credential()
                return cred.basic() if cred else None
            token = self._tokens.get(scope)
            if token and token[1] > time.monotonic():
                return token[0]
            return None

    def _on_challenge(self, header: str, scope: str, *, sent: str | None) -> None:
        if not header:
            raise AuthError(
                f"{self.registry} refused the request (401) without saying how to log in",
                hint=f"check the registry's auth setup, or 'tether login {self.registry}'",
            )
        challenge = parse_challenge(header, self.registry)
        with self._lock:
            if challenge.scheme == "basic":
                cred = self._load_credential()
                if cred is None:
                    raise AuthError(
                        f"{self.registry} requires a login",
                        hint=f"run 'tether login {self.registry}'",
                        code="login-required",
                    )
                if self._basic and sent is not None:
                    raise self._auth_refused(scope)
                self._basic = True
                return
            self._tokens.pop(scope, None)
            self._tokens[scope] = self._fetch_token(challenge, scope)

    def _fetch_token(self, challenge: Challenge, scope: str) -> tuple[str, float]:
        import httpx

        realm = challenge.realm or ""
        may_send = realm_policy(
            realm,
            self.registry,
            plain_http=self.connection.plain_http,
            trusted=self.connection.token_realms,
        )
        cred = self._load_credential() if may_send else None
        if not may_send:
            self.withheld_from = urlsplit(realm).netloc  # login reports it
        query: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.params.get("service"):
            query.append(("service", challenge.params["service"]))
        scopes = set(scope.split())
        scopes.update(challenge.params.get("scope", "").split())
        query.extend(("scope", s) for s in sorted(scopes))
        headers = {"Authorization": cred.basic()} if cred else {}
        started = time.monotonic()
        try:
            with self.http.stream("GET", realm, params=query, headers=headers) as resp:
                body = _read_bounded(resp, MAX_SMALL_BODY, f"{self.registry} token response")
                status = resp.status_code
        except httpx.TransportError as exc:
            raise self._unreachable(realm, exc) from None
        if status in (401, 403):
            if cred is None and not may_send:
                raise AuthError(
                    f"{self.registry}'s token service at {urlsplit(realm).hostname} refused "
                    "an anonymous request, and tether does not send your credential to "
                    "another domain",
                    hint="use a registry whose token service is on its own domain",
                    code="unsafe-realm",
                )
            raise self._auth_refused(scope, token_service=True)
        if status != 200:
            raise RegistryError(
                f"{self.registry}'s token service answered {status}",
                hint="try again later; check the registry's status",
            )
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
            expires_in = int(doc.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            token, expires_in = None, 0
        if not isinstance(token, str) or not token or "\n" in token:
            raise AuthError(
                f"{self.registry}'s token service returned no usable token",
                hint="the registry is misbehaving",
            )
        # Refresh a little early so a token never expires between check and use.
        expiry = started + max(expires_in - 10, 1)
        return f"Bearer {token}", expiry

    def _load_credential(self) -> Credential | None:
        if not self._credential_loaded:
            self._credential_loaded = True
            self._credential = self._credential_source() if self._credential_source else None
        return self._credential

    def _auth_refused(self, scope: str, *, token_service: bool = False) -> AuthError:
        cred = self._load_credential()
        if cred is None:
            return AuthError(
                f"{self.registry} requires a login for {_scope_text(scope)}",
                hint=f"run 'tether login {self.registry}'",
                code="login-required",
            )
        where = "token service" if token_service else "registry"
        return AuthError(
            f"the {where} of {self.registry} refused the credential of user "
            f"{cred.username!r} for {_scope_text(scope)}",
            hint=f"check the user's access, or log in again: 'tether login {self.registry}'",
            code="auth-refused",
        )

    def _unreachable(self, url: str, exc: Exception) -> RegistryError:
        import httpx

        text = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError) and "SSL" in text.upper():
            return RegistryError(
                f"TLS with {self.registry} failed: {text}",
                hint="give its CA with --ca-file, or (trusted networks only) --insecure; a "
                "registry without TLS needs --plain-http",
                code="tls",
            )
        if isinstance(exc, httpx.RemoteProtocolError) and not self.connection.plain_http:
            text += " (is it a plain-HTTP registry? then use --plain-http)"
        host = urlsplit(url).netloc
        return RegistryError(
            f"cannot reach {host}: {text}",
            hint="check the address and that the registry is running; run the command "
            "again to resume",
            code="unreachable",
        )

    def ping(self) -> None:
        """Check the registry speaks /v2/ and the credential (if any) is accepted."""
        with self.request("GET", "/v2/", scope="") as resp:
            if resp.status_code != 200:
                self._fail(resp, "the API check (/v2/)")

    def _fail(self, resp: httpx.Response, what: str) -> None:
        raise self.error(resp, what)

    def error(self, resp: httpx.Response, what: str) -> RegistryError:
        """A one-line error from a registry's JSON error body (bounded)."""
        try:
            body = _read_bounded(resp, MAX_SMALL_BODY, "error body")
            doc = json.loads(body)
            first = doc["errors"][0]
            detail = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
        except (ValueError, KeyError, IndexError, TypeError, RegistryError):
            detail = resp.reason_phrase
        detail = "".join(c for c in str(detail)[:200] if c.isprintable())
        status = resp.status_code
        if status == 403:
            return AuthError(
                f"{self.registry} denied {what} ({status} {detail})",
                hint="your login lacks permission for this repository",
                code="forbidden",
            )
        hint, code = "check the reference and your access", "registry"
        if status == 405 or "UNSUPPORTED" in detail:
            hint, code = "this registry does not allow that operation", "unsupported"
        elif status >= 500:
            hint = "the registry failed; try again later"
        return RegistryError(
            f"{self.registry} refused {what}: {status} {detail}", hint=hint, code=code
        )

    # -- blobs ----------------------------------------------------------------------

    def blob_size(self, repo: str, digest: Digest) -> int | None:
        """Size of a blob the repository has, or None."""
        with self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=_pull(repo)) as resp:
            if resp.status_code == 404:
                return None
            if resp.status_code != 200:
                self._fail(resp, f"HEAD of blob {digest.short}")
            length = resp.headers.get("content-length")
            return int(length) if length and length.isdigit() else -1

    def download_blob(
        self, repo: str, desc: Descriptor, store: ContentStore, progress: Progress | None = None
    ) -> None:
        """Stream a blob into the store, verifying its size and digest as it arrives."""
        what = f"blob {desc.digest.short} of {repo}"
        with self._get_blob(repo, desc.digest, what) as resp:
            length = resp.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) != desc.size:
                raise _corrupt(self.registry, what, f"is {length} bytes, expected {desc.size}")
            try:
                with store.writer(expected=desc.digest, size_hint=desc.size) as w:
                    for chunk in resp.iter_bytes():
                        if w.size + len(chunk) > desc.size:
                            raise _corrupt(self.registry, what, f"is more than {desc.size} bytes")
                        w.write(chunk)
                        if progress:
                            progress(len(chunk))
                    if w.size != desc.size:
                        raise _corrupt(self.registry, what, f"is {w.size} bytes, not {desc.size}")
            except ObjectCorrupted:
                raise _corrupt(self.registry, what, "does not match its digest") from None
            except _stream_errors() as exc:
                raise self._unreachable(self.base, exc) from None

    def read_blob(self, repo: str, digest: Digest, limit: int) -> bytes:
        """A small blob (a config) in memory, bounded and verified."""
        what = f"blob {digest.short} of {repo}"
        with self._get_blob(repo, digest, what) as resp:
            data = _read_bounded(resp, limit, what)
        if Digest.of_bytes(data) != digest:
            raise _corrupt(self.registry, what, "does not match its digest")
        return data

    @contextmanager
    def _get_blob(self, repo: str, digest: Digest, what: str) -> Iterator[httpx.Response]:
        # identity: the bytes on the wire are the blob, nothing decodes them first.
        with self.request(
            "GET",
            f"/v2/{repo}/blobs/{digest}",
            scope=_pull(repo),
            headers={"Accept-Encoding": "identity"},
        ) as resp:
            if resp.status_code == 404:
                raise ModelKitNotFound(
                    f"{self.registry} has no {what}",
                    hint="the ModelKit on the registry is incomplete; push it again",
                )
            if resp.status_code != 200:
                self._fail(resp, f"download of {what}")
            yield resp

    def mount_blob(self, repo: str, digest: Digest, source_repo: str) -> bool:
        """Ask the registry to link a blob from another repository; True when it did.

        A registry that cannot mount starts an ordinary upload instead; that session
        is cancelled here and the caller uploads."""
        scope = f"{_push(repo)} {_pull(source_repo)}"
        params = {"mount": str(digest), "from": source_repo}
        with self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope, params=params) as resp:
            if resp.status_code == 201:
                return True
            location = resp.headers.get("location") if resp.status_code == 202 else None
        if location:
            self._cancel_upload(repo, location)
        return False

    def upload_blob(
        self,
        repo: str,
        desc: Descriptor,
        open_source: Callable[[], BinaryIO],
        progress: Progress | None = None,
    ) -> int:
        """Upload a blob the repository lacks; returns the bytes sent.

        Small blobs go up in one PUT. Big ones go in chunks whose upload location is
        kept in the journal, so that after a dropped connection or a killed process
        the next push asks the registry where the upload stands and sends the rest."""
        if desc.size < self.chunk_threshold:
            location = self._start_upload(repo)
            self._send_range(
                repo, location, open_source, 0, desc.size, progress, finish=desc.digest
            )
            return desc.size
        journal = self._journal_file(repo, desc.digest)
        resumed, offset = self._resume_point(repo, journal)
        location = resumed or self._start_upload(repo)
        if progress and offset:
            progress(offset)
        sent = 0
        while desc.size - offset > self.chunk_size:
            end = offset + self.chunk_size
            location = self._send_range(repo, location, open_source, offset, end, progress)
            sent += end - offset
            offset = end
            self._save_journal(journal, location, offset)
        self._send_range(
            repo, location, open_source, offset, desc.size, progress, finish=desc.digest
        )
        sent += desc.size - offset
        if journal is not None:
            journal.unlink(missing_ok=True)
        return sent

    def _start_upload(self, repo: str) -> str:
        with self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=_push(repo)) as resp:
            if resp.status_code != 202:
                self._fail(resp, f"an upload to {repo}")
            return self._location(resp)

    def _send_range(
        self,
        repo: str,
        location: str,
        open_source: Callable[[], BinaryIO],
        start: int,
        end: int,
        progress: Progress | None,
        *,
        finish: Digest | None = None,
    ) -> str:
        """Send bytes ``start:end`` of the blob: a PATCH chunk (returns the session's
        next location) or, with ``finish``, the closing PUT that names the digest."""
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(end - start)}
        if finish is None:
            method, expect, params = "PATCH", 202, None
            headers["Content-Range"] = f"{start}-{end - 1}"
            what = f"a chunk of an upload to {repo}"
        else:
            method, expect, params = "PUT", 201, {"digest": str(finish)}
            what = f"the upload of blob {finish.short} to {repo}"
        body = _file_body(open_source, start, end, progress)
        with self.request(
            method, location, scope=_push(repo), headers=headers, body=body, params=params
        ) as resp:
            if resp.status_code != expect:
                self._fail(resp, what)
            return self._location(resp) if finish is None else location

    def _cancel_upload(self, repo: str, location: str) -> None:
        # Best effort: an abandoned session expires on the registry by itself.
        with suppress(RegistryError), self.request("DELETE", location, scope=_push(repo)):
            pass

    def _location(self, resp: httpx.Response) -> str:
        location = resp.headers.get("location")
        if not location:
            raise RegistryError(
                f"{self.registry} started an upload without a Location",
                hint="the registry is misbehaving",
            )
        # An upload session on another host gets no Authorization: _send strips it.
        return str(urljoin(str(resp.url), location))

    # An upload journal entry: where a chunked upload stands, to resume after a crash.
    def _journal_file(self, repo: str, digest: Digest) -> Path | None:
        if self.upload_journal is None:
            return None
        key = Digest.of_bytes(f"{self.registry}/{repo}@{digest}".encode()).hex[:32]
        return self.upload_journal / f"{key}.json"

    def _resume_point(self, repo: str, journal: Path | None) -> tuple[str | None, int]:
        if journal is None or not journal.is_file():
            return None, 0
        try:
            saved = json.loads(journal.read_text())
            location = str(saved["location"])
        except (ValueError, KeyError, OSError):
            return None, 0
        with self.request("GET", location, scope=_push(repo)) as resp:
            if resp.status_code != 204:
                return None, 0  # expired or unknown: start again
            rng = resp.headers.get("range", "")
            new_location = self._location(resp)
        start, _, end = rng.partition("-")
        if start != "0" or not end.isdigit():
            return None, 0
        return new_location, int(end) + 1

    def _save_journal(self, journal: Path | None, location: str, offset: int) -> None:
        if journal is None:
            return
        from tether.store.atomic import write_atomic

        journal.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"location": location, "offset": offset}).encode()
        write_atomic(journal, data, mode=0o600)

    # -- manifests ------------------------------------------------------------------

    def get_manifest(self, repo: str, reference: str) -> Manifest:
        """Fetch a manifest (by tag or digest), verified and bounded."""
        what = f"{repo}:{reference}" if ":" not in reference else f"{repo}@{reference}"
        headers = {"Accept": MANIFEST_ACCEPT}
        with self.request(
            "GET", f"/v2/{repo}/manifests/{reference}", scope=_pull(repo), headers=headers
        ) as resp:
            if resp.status_code == 404:
                raise ModelKitNotFound(
                    f"{self.registry} has no {what}",
                    hint=f"see 'tether list {self.registry}/{repo}'",
                )
            if resp.status_code != 200:
                self._fail(resp, f"the manifest {what}")
            data = _read_bounded(resp, MAX_MANIFEST_BYTES, f"the manifest of {what}")
            content_type = resp.headers.get("content-type", "").split(";")[0].strip()
            claimed = resp.headers.get("docker-content-digest")
        digest = Digest.of_bytes(data)
        if reference.startswith("sha256:") and str(digest) != reference:
            raise _corrupt(self.registry, f"the manifest {what}", f"hashes to {digest}")
        if claimed is not None:
            if not Digest.is_valid(claimed):
                raise _corrupt(self.registry, f"the manifest {what}", "has a malformed digest")
            if claimed != str(digest):
                raise _corrupt(self.registry, f"the manifest {what}", "does not match its digest")
        media_type = _manifest_media_type(data, content_type, self.registry, what)
        return Manifest(data, digest, media_type)

    def head_manifest(self, repo: str, reference: str) -> Descriptor | None:
        headers = {"Accept": MANIFEST_ACCEPT}
        with self.request(
            "HEAD", f"/v2/{repo}/manifests/{reference}", scope=_pull(repo), headers=headers
        ) as resp:
            if resp.status_code == 404:
                return None
            if resp.status_code != 200:
                self._fail(resp, f"HEAD of {repo}:{reference}")
            claimed = resp.headers.get("docker-content-digest", "")
            length = resp.headers.get("content-length", "")
            media_type = resp.headers.get("content-type", mt.OCI_MANIFEST).split(";")[0]
        if not Digest.is_valid(claimed) or not length.isdigit():
            # Some registries do not answer HEAD fully: fetch and hash instead.
            return self.get_manifest(repo, reference).descriptor
        return Descriptor(media_type, Digest.parse(claimed), int(length))

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> bool:
        """Store a manifest under a tag or its digest. True when the registry handled
        its ``subject`` itself (``OCI-Subject``), so no fallback referrers tag is needed."""
        headers = {"Content-Type": media_type}
        with self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            scope=_push(repo),
            headers=headers,
            body=data,
        ) as resp:
            if resp.status_code not in (200, 201):
                self._fail(resp, f"the manifest {repo}:{reference}")
            claimed = resp.headers.get("docker-content-digest")
            if claimed and claimed != str(Digest.of_bytes(data)):
                raise _corrupt(
                    self.registry,
                    f"the stored manifest {repo}:{reference}",
                    f"has the digest {claimed[:80]}",
                )
            return "oci-subject" in resp.headers

    def delete_manifest(self, repo: str, reference: str) -> None:
        with self.request(
            "DELETE", f"/v2/{repo}/manifests/{reference}", scope=_delete(repo)
        ) as resp:
            if resp.status_code == 404:
                raise ModelKitNotFound(
                    f"{self.registry} has no {repo}:{reference}", hint="nothing to remove"
                )
            if resp.status_code in (400, 405) and not Digest.is_valid(reference):
                # Deleting a tag alone is new in distribution-spec 1.1; older registries
                # answer 400 (distribution: DIGEST_INVALID) or 405.
                raise RegistryError(
                    f"{self.registry} cannot delete the tag {repo}:{reference} alone",
                    hint="delete the manifest by digest instead",
                    code="unsupported",
                )
            if resp.status_code not in (200, 202):
                self._fail(resp, f"deleting {repo}:{reference}")

    # -- tags and referrers ------------------------------------------------------------

    def list_tags(self, repo: str, *, page_size: int = 1000) -> list[str]:
        """Every tag of a repository, following the Link header across pages."""
        tags: list[str] = []
        url: str | None = f"/v2/{repo}/tags/list?n={page_size}"
        pages = 0
        while url is not None:
            pages += 1
            if pages > 10_000:
                raise RegistryError(
                    f"{self.registry} paginates {repo}'s tags without end",
                    hint="the registry is misbehaving",
                )
            with self.request("GET", url, scope=_pull(repo)) as resp:
                if resp.status_code == 404:
                    raise ModelKitNotFound(
                        f"{self.registry} has no repository {repo}",
                        hint="check the name; repositories appear with their first push",
                    )
                if resp.status_code != 200:
                    self._fail(resp, f"the tag list of {repo}")
                body = _read_bounded(resp, MAX_MANIFEST_BYTES, "a tag list")
                url = _next_link(resp.headers.get("link"), str(resp.url), self._origin)
            try:
                page = json.loads(body).get("tags") or []
            except (ValueError, AttributeError):
                page = None
            if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                raise RegistryError(
                    f"{self.registry} sent a tag list that does not parse",
                    hint="the registry is misbehaving",
                )
            tags.extend(page)
        return tags

    def referrers(
        self, repo: str, digest: Digest, artifact_type: str | None = None
    ) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``digest``: the referrers API, or the
        ``sha256-<hex>`` tag where the registry has no such API."""
        params = {"artifactType": artifact_type} if artifact_type else None
        with self.request(
            "GET",
            f"/v2/{repo}/referrers/{digest}",
            scope=_pull(repo),
            params=params,
            headers={"Accept": mt.OCI_INDEX},
        ) as resp:
            if resp.status_code == 200:
                data = _read_bounded(resp, MAX_MANIFEST_BYTES, "a referrers index")
                found = _index_descriptors(data, self.registry)
            elif resp.status_code in (404, 400, 405):
                found = None
            else:
                self._fail(resp, f"the referrers of {digest.short}")
        if found is None:
            try:
                found = _index_descriptors(
                    self.get_manifest(repo, _fallback_tag(digest)).data, self.registry
                )
            except ModelKitNotFound:
                found = []
        if artifact_type:
            found = [d for d in found if d.artifact_type == artifact_type]
        return found

    def attach(
        self, repo: str, data: bytes, media_type: str, subject: Digest, artifact_type: str
    ) -> Digest:
        """Push a manifest whose ``subject`` is ``subject`` (its blobs already pushed),
        and list it in the fallback tag when the registry lacks the referrers API."""
        digest = Digest.of_bytes(data)
        if self.put_manifest(repo, str(digest), data, media_type):
            return digest
        tag = _fallback_tag(subject)
        try:
            current = _index_descriptors(self.get_manifest(repo, tag).data, self.registry)
        except ModelKitNotFound:
            current = []
        if any(d.digest == digest for d in current):
            return digest
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [d.to_json() for d in current]
            + [Descriptor(media_type, digest, len(data), {}, artifact_type).to_json()],
        }
        index = json.dumps(doc, separators=(",", ":")).encode()
        self.put_manifest(repo, tag, index, mt.OCI_INDEX)
        return digest


# -- helpers ----------------------------------------------------------------------------


def _tls_context(connection: Connection) -> ssl.SSLContext:
    """The system's trust store (where corporate CAs are installed, and what docker and
    skopeo use), plus ``--ca-file``; certifi's bundle only where the system has none."""
    import ssl

    ctx = ssl.create_default_context()
    paths = ssl.get_default_verify_paths()
    if not any(p and os.path.exists(p) for p in (paths.cafile, paths.capath)):
        import certifi

        ctx.load_verify_locations(cafile=certifi.where())
    if connection.ca_file:
        ctx.load_verify_locations(cafile=connection.ca_file)
    if connection.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _pull(repo: str) -> str:
    return f"repository:{repo}:pull"


def _push(repo: str) -> str:
    return f"repository:{repo}:pull,push"


def _delete(repo: str) -> str:
    return f"repository:{repo}:delete"


def _scope_text(scope: str) -> str:
    if not scope:
        return "the registry"
    parts = scope.split()[0].split(":")
    return f"{parts[2]} on {parts[1]}" if len(parts) == 3 else scope


def _fallback_tag(digest: Digest) -> str:
    return f"sha256-{digest.hex}"


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


def _drain(resp: httpx.Response) -> None:
    with suppress(RegistryError):
        _read_bounded(resp, MAX_SMALL_BODY, "a response")
    resp.close()


def _read_bounded(resp: httpx.Response, limit: int, what: str) -> bytes:
    """Read a response body, refusing more than ``limit`` bytes (also after decoding)."""
    length = resp.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise RegistryError(
            f"{what} is {int(length)} bytes, more than the {limit >> 10} KiB limit",
            hint="tether refuses oversized documents from registries",
            code="too-large",
        )
    parts: list[bytes] = []
    total = 0
    for chunk in resp.iter_bytes():
        total += len(chunk)
        if total > limit:
            raise RegistryError(
                f"{what} is more than the {limit >> 10} KiB limit",
                hint="tether refuses oversized documents from registries",
                code="too-large",
            )
        parts.append(chunk)
    return b"".join(parts)


def _file_body(
    open_source: Callable[[], BinaryIO], start: int, end: int, progress: Progress | None
) -> Callable[[], Iterator[bytes]]:
    """A body that can be produced again (a retry after a token expired)."""

    def gen() -> Iterator[bytes]:
        with open_source() as f:
            f.seek(start)
            left = end - start
            while left > 0:
                chunk = f.read(min(_READ, left))
                if not chunk:
                    raise RegistryError(
                        "a blob being uploaded got shorter", hint="the store changed; run gc"
                    )
                left -= len(chunk)
                if progress:
                    progress(len(chunk))
                yield chunk

    return gen


def _corrupt(registry: str, what: str, why: str) -> RegistryError:
    return RegistryError(
        f"{what} from {registry} {why}; it was not kept",
        hint="the registry or the network corrupted it; try again, and tell the "
        "registry's operator if it persists",
        code="corrupt",
    )


def _stream_errors() -> tuple[type[Exception], ...]:
    import httpx

    return (httpx.TransportError,)


def _manifest_media_type(data: bytes, content_type: str, registry: str, what: str) -> str:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise _corrupt(registry, f"the manifest {what}", "is not JSON") from None
    if not isinstance(doc, dict):
        raise _corrupt(registry, f"the manifest {what}", "is not a JSON object")
    embedded = doc.get("mediaType")
    if "manifests" in doc and "layers" in doc:
        raise _corrupt(registry, f"the manifest {what}", "is both an index and a manifest")
    # CVE-2021-41190: a document that means one thing by its header, another by its body.
    generic = ("application/json", "application/octet-stream")
    if isinstance(embedded, str) and content_type and content_type not in (embedded, *generic):
        raise _corrupt(
            registry, f"the manifest {what}", f"is served as {content_type} but says {embedded}"
        )
    if isinstance(embedded, str) and embedded:
        return embedded
    if "manifests" in doc:
        return mt.OCI_INDEX
    return content_type if content_type.startswith("application/vnd.") else mt.OCI_MANIFEST


def _index_descriptors(data: bytes, registry: str) -> list[Descriptor]:
    try:
        doc = json.loads(data)
        raw = doc["manifests"]
        if not isinstance(raw, list):
            raise TypeError
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise _corrupt(registry, "a referrers index", "does not parse") from None
    return [Descriptor.from_json(d) for d in raw]


def _next_link(link: str | None, current: str, origin: tuple[str, str, int]) -> str | None:
    if not link:
        return None
    for part in link.split(","):
        url, _, rest = part.partition(";")
        if 'rel="next"' in rest.replace(" ", "") or "rel=next" in rest.replace(" ", ""):
            target = urljoin(current, url.strip().strip("<>"))
            if _origin(target) != origin:
                return None  # never follow pagination to another host
            return target
    return None
