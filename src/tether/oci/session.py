"""A session with one OCI registry: the HTTP client, authentication and redirects.

Auth follows the distribution spec's challenge: an anonymous request, a
``WWW-Authenticate: Bearer realm=…,service=…,scope=…`` answer, a token fetched from the
realm (with the stored credential only when the realm is the registry's own origin or
a trusted token service), and the request again with ``Authorization: Bearer``; Basic
when the registry asks for it. Tokens are cached per scope until shortly before they
expire. Redirects are followed by hand, so that ``Authorization`` is dropped whenever
scheme, host or port change and HTTPS never downgrades to HTTP. Endpoints build on this
(``uploads.py``, ``client.py``).
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
from typing import TYPE_CHECKING, Self
from urllib.parse import urlencode, urljoin, urlsplit

from tether.errors import AuthError, RegistryError
from tether.oci.auth import Challenge, parse_challenge, realm_policy
from tether.oci.credentials import Credential

if TYPE_CHECKING:
    import ssl

    import httpx


MAX_SMALL_BODY = 1 << 20  # error bodies, token responses
MAX_REDIRECTS = 5
# Blobs above this go up in chunks that can be resumed; below it, in one PUT.
CHUNK_THRESHOLD = 64 << 20
CHUNK_SIZE = 256 << 20
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Connection:
    """How to reach registries: transport security and parallelism."""

    plain_http: bool = False
    insecure: bool = False  # TLS without certificate verification
    ca_file: str | None = None
    concurrency: int = 4
    token_realms: frozenset[str] = frozenset()  # host:port realms trusted with credentials


def api_host(registry: str) -> str:
    """Docker Hub's API lives on another host than its name."""
    return "registry-1.docker.io" if registry in ("docker.io", "index.docker.io") else registry


class RegistrySession:
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
        self._origin = origin_of(self.base)
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
                verify=tls_context(self.connection),
                timeout=httpx.Timeout(120.0, connect=15.0),
                follow_redirects=False,
                limits=httpx.Limits(max_connections=max(8, 2 * self.connection.concurrency)),
                headers={"User-Agent": "tether"},
            )
        self.http = http

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
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
                drain(resp)
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
            same_origin = origin_of(url) == self._origin
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
            drain(resp)
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
                body = read_bounded(resp, MAX_SMALL_BODY, f"{self.registry} token response")
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
                f"{self.registry} requires a login for {scope_text(scope)}",
                hint=f"run 'tether login {self.registry}'",
                code="login-required",
            )
        where = "token service" if token_service else "registry"
        return AuthError(
            f"the {where} of {self.registry} refused the credential of user "
            f"{cred.username!r} for {scope_text(scope)}",
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
            body = read_bounded(resp, MAX_SMALL_BODY, "error body")
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


def tls_context(connection: Connection) -> ssl.SSLContext:
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


def pull_scope(repo: str) -> str:
    return f"repository:{repo}:pull"


def push_scope(repo: str) -> str:
    return f"repository:{repo}:pull,push"


def delete_scope(repo: str) -> str:
    return f"repository:{repo}:delete"


def scope_text(scope: str) -> str:
    if not scope:
        return "the registry"
    parts = scope.split()[0].split(":")
    return f"{parts[2]} on {parts[1]}" if len(parts) == 3 else scope


def origin_of(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


def drain(resp: httpx.Response) -> None:
    with suppress(RegistryError):
        read_bounded(resp, MAX_SMALL_BODY, "a response")
    resp.close()


def read_bounded(resp: httpx.Response, limit: int, what: str) -> bytes:
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


def corrupt(registry: str, what: str, why: str) -> RegistryError:
    return RegistryError(
        f"{what} from {registry} {why}; it was not kept",
        hint="the registry or the network corrupted it; try again, and tell the "
        "registry's operator if it persists",
        code="corrupt",
    )


def stream_errors() -> tuple[type[Exception], ...]:
    import httpx

    return (httpx.TransportError,)
